//! A session's own message and byte counts, each way. The relay adds to
//! them as it passes frames on; they live in the [`super::SessionHandle`] so
//! that the admin API reads a live session's traffic with four atomic loads
//! and the end-of-session log line reports the totals.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Direction;

/// Messages and payload bytes of one session, each way.
#[derive(Debug, Default)]
pub struct Tally {
    pub msgs_up: AtomicU64,
    pub msgs_down: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

impl Tally {
    pub fn add_many(&self, direction: Direction, msgs: u64, bytes: u64) {
        let (m, b) = match direction {
            Direction::to_upstream => (&self.msgs_up, &self.bytes_up),
            Direction::to_client => (&self.msgs_down, &self.bytes_down),
        };
        m.fetch_add(msgs, Ordering::Relaxed);
        b.fetch_add(bytes, Ordering::Relaxed);
    }

    /// (messages, bytes) to the upstream, then (messages, bytes) to the client.
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.msgs_up.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.msgs_down.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        ]
    }
}
