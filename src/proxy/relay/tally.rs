//! Where the relay reports what it passed on: the route's metrics, the
//! session's own counts (for its end-of-session log line) and when frames
//! last came (for `idle_timeout` and keepalive).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::metrics::{Direction, SessionMetrics};
use crate::session::Side;

/// Where the relay reports what it passed on.
pub struct Accounting<'a> {
    pub metrics: &'a SessionMetrics,
    pub tally: &'a Tally,
    pub activity: &'a Activity,
    /// What the times in `activity` count from.
    pub start: Instant,
}

/// When frames last came, in milliseconds since the session's start.
/// Written by the relay (once per wake-up with traffic, not per frame) and
/// read by the pump's timers, in the same task.
#[derive(Debug, Default)]
pub struct Activity {
    /// The last frame passed on either way, pings and pongs included:
    /// what `idle_timeout` measures. The pongs answering the gateway's own
    /// pings are not passed on, so keepalive does not defeat it.
    pub relayed: AtomicU64,
    /// The last frame of any kind from each side: what keepalive measures.
    pub from_client: AtomicU64,
    pub from_upstream: AtomicU64,
}

impl Activity {
    pub fn heard_from(&self, side: Side) -> &AtomicU64 {
        match side {
            Side::Client => &self.from_client,
            Side::Upstream => &self.from_upstream,
        }
    }

    pub fn relayed_ms(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
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
