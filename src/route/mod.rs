//! Route table (placeholder: being written).
