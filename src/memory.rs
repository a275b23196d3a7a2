//! Giving memory back after a burst of connections.
//!
//! A flood of connections that never become sessions (3,000 pending heads
//! of 60 KiB, say) makes the allocator take memory for their buffers. Once
//! they are gone, glibc's malloc keeps most of it in its per-thread arenas:
//! measured, RSS went from 19 to 124 MiB during such a flood and stayed at
//! 114 MiB afterwards. `malloc_trim` returns the free pages of every arena
//! to the kernel.
//!
//! The library forbids `unsafe`, so the call itself lives in the binary and
//! is handed in with [`set_release`]; [`watch`] calls it from a blocking
//! thread when the number of connections has fallen well below a recent
//! peak. Without a release function (other platforms, other allocators,
//! tests of the library) nothing happens.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::gateway::Gateway;

/// How often the connection count is compared with its recent peak.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A fall by this many connections from the peak counts as the end of a
/// burst. Ordinary churn stays below it, so the trim (which walks every
/// arena) runs only after real bursts.
const BURST: usize = 256;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Sets the function that returns free memory to the kernel (the binary's
/// `malloc_trim(0)`). Only the first call counts.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Calls the release function once the connections of a burst are gone,
/// until `gw.shutdown`.
pub async fn watch(gw: Arc<Gateway>) {
    let Some(release) = RELEASE.get().copied() else {
        return;
    };
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0usize;
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sessions = gw.registry.len();
        let now = gw.pending.len() + sessions;
        // Pending connections can come and go between two ticks: their own
        // peak is kept by the counter.
        peak = peak.max(gw.pending.take_peak() + sessions).max(now);
        if peak >= now + BURST {
            tracing::debug!(
                peak,
                now,
                "connections fell after a burst; releasing free memory"
            );
            let _ = tokio::task::spawn_blocking(release).await;
            peak = now;
        } else {
            // Forget old peaks slowly, so that a burst long ago does not
            // make a later, smaller fall look like one.
            peak = peak.saturating_sub(BURST / 8).max(now);
        }
    }
}
