//! Where the relay reports what it passed on: the route's metrics, the
//! session's own counts (for its end-of-session log line) and when frames
//! last came (for `idle_timeout` and keepalive).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::metrics::SessionMetrics;
use crate::session::Side;
/// The session's own counts live in its registry handle, where the admin API reads them.
pub use crate::session::Tally;

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
