//! The upstream side of a session and the relay between both sides.

pub mod direct;
pub mod frame;
pub mod prefixed;
pub mod pump;
pub mod refresh;
pub mod relay;
pub mod upstream;
