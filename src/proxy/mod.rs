//! The upstream side of a session and the relay between both sides.

pub mod pump;
pub mod refresh;
pub mod upstream;
