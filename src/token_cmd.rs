//! `wsgate token`.
