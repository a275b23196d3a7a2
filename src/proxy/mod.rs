//! The upstream side of a session and the relay between both sides.

pub mod client_io;
pub mod frame;
pub mod pump;
pub mod refresh;
pub mod relay;
pub mod upstream;
