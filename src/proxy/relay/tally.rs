//! Where the relay reports what it passed on: the route's metrics, the
//! session's own counts (for its end-of-session log line) and the time of
//! the last frame each way (for `idle_timeout`).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::metrics::{Direction, SessionMetrics};

/// Where the relay reports what it passed on.
pub struct Accounting<'a> {
    pub metrics: &'a SessionMetrics,
    pub tally: &'a Tally,
    /// Milliseconds since `start` of the last frame either way (idle timeout).
    pub last_activity: &'a AtomicU64,
    pub start: Instant,
}

/// Messages and payload bytes of one session, each way (for its end-of-session log line).
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
