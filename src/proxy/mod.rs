//! The relay side of a session: the frame pump between client and
//! upstream, and the session task that runs it.

pub mod direct;
pub mod frame;
pub mod prefixed;
pub mod pump;
pub mod relay;
pub mod task;
