//! Where the relay reports what it passed on: the route's metrics, the
//! session's own counts (for its end-of-session log line) and the time of
//! the last frame each way (for `idle_timeout`).

use std::sync::atomic::AtomicU64;

use tokio::time::Instant;

use crate::metrics::SessionMetrics;
/// The session's own counts live in its registry handle, where the admin API reads them.
pub use crate::session::Tally;

/// Where the relay reports what it passed on.
pub struct Accounting<'a> {
    pub metrics: &'a SessionMetrics,
    pub tally: &'a Tally,
    /// Milliseconds since `start` of the last frame either way (idle timeout).
    pub last_activity: &'a AtomicU64,
    pub start: Instant,
}
