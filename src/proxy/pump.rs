//! The session pump: relays a session until it ends and decides why it
//! ended: either side closing, a lost connection, an oversized message, the
//! token's expiry, a kill (revocation, admin, reload, shutdown) or idleness.
//!
//! # Lifecycle
//!
//! 1. [`super::relay::Relay`] passes frames both ways unchanged. The pump
//!    races it against [`control`], which waits for the session's deadlines
//!    and its cancellation token: one task per session, no polling loop, no
//!    cost while idle.
//! 2. A close frame from either side is passed on and the other side's answer
//!    is awaited (bounded); the close handshake completes end to end.
//! 3. Any other end goes through [`super::relay::Relay::finish`], which sends
//!    each side what the contract's session table ([`CloseReason`]) says,
//!    between frames, and lets both close handshakes complete (bounded).
//!
//! Refresh frames taken out by the relay are answered here, between relay
//! steps, so the relay itself never awaits anything but I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant};

use super::relay::{Accounting, Event, Interceptor, Relay, Tally};
use crate::metrics::SessionMetrics;
use crate::session::{unix_now_ms, CloseFrame, CloseReason, SessionHandle, Side};

/// How long the pump waits for each side to answer a close frame.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(3);

/// Per-session knobs taken from the route.
#[derive(Debug, Clone)]
pub struct PumpSettings {
    pub close_on_expiry: bool,
    pub idle_timeout: Option<Duration>,
    pub max_message_size: usize,
    /// `permessage-deflate` agreed: compressed frames pass unchanged.
    pub deflate: bool,
}

/// Relays a session until it ends; returns why.
pub async fn run<C, U>(
    client: C,
    upstream: U,
    session: &SessionHandle,
    settings: &PumpSettings,
    metrics: &SessionMetrics,
    tally: &Tally,
    interceptor: Option<&dyn Interceptor>,
) -> CloseReason
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let acct = Accounting {
        metrics,
        tally,
        last_activity: &last_activity,
        start,
    };
    let mut relay = Relay::new(
        client,
        upstream,
        settings.max_message_size as u64,
        interceptor,
        acct,
    )
    .with_deflate(settings.deflate);
    let reason = loop {
        // Once one side has closed, the other has a bounded time to answer.
        let half_closed = relay.first_close();
        let answer_by = half_closed
            .as_ref()
            .map(|_| Instant::now() + CLOSE_HANDSHAKE_WAIT);
        let event = tokio::select! {
            ev = relay.run() => ev,
            r = control(session, settings, &last_activity, start, answer_by) => match r {
                Control::End(r) => break r,
                Control::NoAnswer => {
                    let (by, frame) = half_closed.unwrap_or((Side::Client, CloseFrame::no_status()));
                    break CloseReason::Peer { by, frame };
                }
            },
        };
        match event {
            Event::Closed { by, frame } => {
                // Both close frames went through: nothing is owed to either side.
                let peer = CloseReason::Peer { by, frame };
                session.close(peer.clone());
                return session.reason().unwrap_or(peer);
            }
            Event::Intercepted(text) => {
                if let Some(icpt) = interceptor {
                    let answer = icpt.answer(text).await;
                    relay.send_to_client(&answer);
                }
            }
            // A side that vanishes after its peer asked to close has, in
            // effect, answered: the session ends as the peer asked, and the
            // peer gets its own close back.
            Event::UpstreamLost | Event::ClientLost if relay.first_close().is_some() => {
                let lost = match event {
                    Event::UpstreamLost => Side::Upstream,
                    _ => Side::Client,
                };
                match relay.first_close() {
                    Some((by, frame)) if by != lost => break CloseReason::Peer { by, frame },
                    _ if lost == Side::Client => break CloseReason::ClientLost,
                    _ => break CloseReason::UpstreamLost,
                }
            }
            Event::ClientLost => break CloseReason::ClientLost,
            Event::UpstreamLost => break CloseReason::UpstreamLost,
            Event::UpstreamProtocol => break CloseReason::UpstreamProtocol,
            Event::TooBig => break CloseReason::TooBig,
            Event::ClientProtocol => break CloseReason::ClientProtocol,
        }
    };
    // Record the reason first, so a concurrent revoke cannot claim a session
    // that already ended on its own.
    session.close(reason.clone());
    let reason = session.reason().unwrap_or(reason);
    let (to_client, to_upstream) = match &reason {
        // A side closed and its peer never answered: answer it with its own
        // close, as the peer would have.
        CloseReason::Peer {
            by: Side::Client,
            frame,
        } => (Some(frame.clone()), None),
        CloseReason::Peer {
            by: Side::Upstream,
            frame,
        } => (None, Some(frame.clone())),
        other => (other.to_client(), other.to_upstream()),
    };
    relay
        .finish(to_client, to_upstream, CLOSE_HANDSHAKE_WAIT)
        .await;
    reason
}

/// What ended [`control`]'s wait.
enum Control {
    End(CloseReason),
    /// The side asked to close did not answer in time.
    NoAnswer,
}

/// Waits for the first control event: kill (revocation, admin, reload,
/// shutdown), token expiry, or idleness; or, once a side has asked to close,
/// only for the other side's answer deadline (`answer_by`). Costs nothing
/// while nothing happens: one timer (the earliest deadline) and the
/// session's notifications, no polling loop. One timer rather than one per
/// deadline keeps every idle session smaller.
async fn control(
    session: &SessionHandle,
    settings: &PumpSettings,
    last_activity: &AtomicU64,
    start: Instant,
    answer_by: Option<Instant>,
) -> Control {
    if let Some(at) = answer_by {
        sleep_until(at).await;
        return Control::NoAnswer;
    }
    loop {
        // Created before reading the deadline, so a refresh in between wakes us.
        let moved = session.deadline_moved();
        let expiry = settings
            .close_on_expiry
            .then(|| session.expires_at())
            .flatten()
            .map(|exp| {
                let left_ms = exp
                    .saturating_mul(1000)
                    .saturating_sub(unix_now_ms())
                    .max(0) as u64;
                later(Instant::now(), Duration::from_millis(left_ms))
            });
        let idle_at = settings.idle_timeout.map(|t| {
            let last = later(
                start,
                Duration::from_millis(last_activity.load(Ordering::Relaxed)),
            );
            later(last, t)
        });
        let wake_at = match (expiry, idle_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            _ = session.cancelled() => {
                return Control::End(session.reason().unwrap_or(CloseReason::Shutdown));
            }
            _ = moved => {}
            _ = sleep_until(wake_at.unwrap_or_else(far_future)), if wake_at.is_some() => {
                // Wall clock, not the monotonic timer, decides: "never before exp".
                if expiry.is_some() {
                    if let Some(exp) = session.expires_at() {
                        if unix_now_ms() >= exp.saturating_mul(1000) {
                            return Control::End(CloseReason::Expired);
                        }
                    }
                }
                if let Some(t) = settings.idle_timeout {
                    let last = later(start, Duration::from_millis(last_activity.load(Ordering::Relaxed)));
                    if Instant::now() >= later(last, t) && t <= YEAR {
                        return Control::End(CloseReason::Idle);
                    }
                }
            }
        }
    }
}

const YEAR: Duration = Duration::from_secs(86400 * 365);

fn far_future() -> Instant {
    later(Instant::now(), YEAR)
}

/// `from + after`, capped a year out: a token's `exp` or a configured
/// timeout can be absurdly far, and a timer only needs to wake up to look
/// again (the checks after each wake-up use the real deadline).
fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after.min(YEAR)).unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_deadlines_are_capped_not_overflowed() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::from_secs(u64::MAX)), now + YEAR);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        // An `exp` near i64::MAX seconds must not overflow the millisecond maths.
        let exp = i64::MAX / 2;
        let left_ms = exp
            .saturating_mul(1000)
            .saturating_sub(unix_now_ms())
            .max(0) as u64;
        assert!(later(now, Duration::from_millis(left_ms)) <= now + YEAR);
    }
}
