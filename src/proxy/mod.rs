//! The relay side of a session: the frame pump between client and
//! upstream, and the session task that runs it.

pub mod client_io;
pub mod frame;
pub mod pump;
pub mod relay;
pub mod task;
