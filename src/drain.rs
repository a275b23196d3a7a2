//! Graceful shutdown, in the order a load balancer needs it:
//!
//! 1. [`Drain::begin`]: `/readyz` answers 503 at once, while the listeners
//!    still accept (for `limits.drain_delay`), so that health checkers take
//!    the instance out before connections are refused.
//! 2. The listeners close.
//! 3. [`Drain::close_sessions`]: the live sessions are closed with 1001,
//!    spread evenly over the first half of `shutdown_grace`. Closing them
//!    all in the same millisecond sends every client back at once (a
//!    reconnect storm on the remaining instances); spread, they come back
//!    at the rate they would on any ordinary day. A session that is still
//!    being set up is closed as soon as it starts ([`Drain::is_closing`]).
//! 4. The process exits once every session is gone, or when
//!    `shutdown_grace` has passed.
//!
//! The admin listener is not part of this: it answers until the process
//! exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::{CloseReason, Registry};

/// Sessions are not closed in more rounds than one per this interval: finer
/// steps would only wake the control thread more often.
const MIN_STEP: Duration = Duration::from_millis(10);

/// The state of a shutdown, shared by the listeners, the handshakes and the
/// admin API.
#[derive(Default)]
pub struct Drain {
    /// Set when shutdown begins; `/readyz` reads it.
    draining: AtomicBool,
    /// Cancelled when sessions start being closed.
    closing: CancellationToken,
}

impl Drain {
    /// Shutdown begins: `/readyz` answers 503 from now on.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether sessions are being closed: a session that starts now is
    /// closed with 1001 at once.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Resolves once sessions start being closed (a handshake waiting for a
    /// first message gives up then).
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closing.cancelled()
    }

    /// Closes every live session with 1001, in rounds spread evenly over
    /// `window`, and returns once the last round is sent. Sessions that
    /// register while this runs are closed by themselves (they see
    /// [`Drain::is_closing`]), so none is missed: the flag is set before the
    /// registry is read.
    pub async fn close_sessions(&self, registry: &Registry, window: Duration) {
        self.begin();
        self.closing.cancel();
        let sessions = registry.all();
        let plan = Plan::new(sessions.len(), window);
        tracing::info!(
            sessions = sessions.len(),
            rounds = plan.rounds,
            window_ms = window.as_millis() as u64,
            "closing sessions"
        );
        let start = Instant::now();
        for (round, batch) in sessions.chunks(plan.batch).enumerate() {
            tokio::time::sleep_until(start + plan.step * round as u32).await;
            crate::session::close_many(batch, &CloseReason::Shutdown);
        }
    }
}

/// How `n` sessions are spread over a window: `rounds` rounds of at most
/// `batch` sessions, one every `step`, the first at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    rounds: usize,
    batch: usize,
    step: Duration,
}

impl Plan {
    fn new(n: usize, window: Duration) -> Self {
        let max_rounds = (window.as_nanos() / MIN_STEP.as_nanos()).max(1) as usize;
        let rounds = n.clamp(1, max_rounds);
        let batch = n.div_ceil(rounds).max(1);
        // Rounds actually used once sessions are grouped by `batch`.
        let rounds = n.div_ceil(batch).max(1);
        let step = window / rounds as u32;
        Plan {
            rounds,
            batch,
            step,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_sessions_get_a_round_each_spread_over_the_window() {
        let p = Plan::new(4, Duration::from_secs(2));
        assert_eq!(p.rounds, 4);
        assert_eq!(p.batch, 1);
        assert_eq!(p.step, Duration::from_millis(500));
    }

    #[test]
    fn many_sessions_share_rounds_no_closer_than_the_minimum_step() {
        let p = Plan::new(10_000, Duration::from_secs(1));
        assert_eq!(p.rounds, 100);
        assert_eq!(p.batch, 100);
        assert_eq!(p.step, Duration::from_millis(10));
        // Uneven counts: the last round is smaller, none is lost.
        let p = Plan::new(1_001, Duration::from_secs(1));
        assert!(p.batch * p.rounds >= 1_001);
        assert!(p.step >= MIN_STEP);
    }

    #[test]
    fn no_window_or_no_session_is_one_round_at_once() {
        let p = Plan::new(50, Duration::ZERO);
        assert_eq!((p.rounds, p.batch, p.step), (1, 50, Duration::ZERO));
        let p = Plan::new(0, Duration::from_secs(5));
        assert_eq!(p.rounds, 1);
    }
}
