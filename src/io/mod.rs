//! Byte-stream plumbing shared by the listener, the TLS stream and the
//! session legs: buffers that give their memory back once emptied, and a
//! stream that first replays bytes already read from it.

pub mod buf;
pub mod prefixed;
