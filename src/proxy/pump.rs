//! The session pump: relays a session until it ends and decides why it
//! ended: either side closing, a lost connection, an oversized message, the
//! token's expiry, a kill (revocation, admin, reload, shutdown), idleness or
//! a peer that stopped answering keepalive pings.
//!
//! # Lifecycle
//!
//! 1. [`super::relay::Relay`] passes frames both ways unchanged. The pump
//!    races it against [`control`], which waits for the session's deadlines
//!    and its cancellation token: one task per session, one timer (the
//!    earliest deadline), no polling loop, no cost while idle.
//! 2. A close frame from either side is passed on and the other side's answer
//!    is awaited (at most [`CLOSE_HANDSHAKE_WAIT`]).
//! 3. Any other end goes through [`super::relay::Relay::finish`], which sends
//!    each side what the contract's session table ([`CloseReason`]) says,
//!    between frames, and lets both close handshakes complete (bounded).
//!
//! Refresh frames taken out by the relay are answered here, between relay
//! steps, and keepalive pings are sent from here, so the relay itself never
//! awaits anything but I/O.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant};

use super::relay::{Accounting, Activity, Event, Interceptor, Relay, Tally};
use crate::config::model::SessionConfig;
use crate::metrics::SessionMetrics;
use crate::session::{unix_now_ms, CloseFrame, CloseReason, SessionHandle, Side};

/// How long the pump waits for a side to answer a close frame before it
/// drops the connection (contract, "Lifecycle": at most 1 s).
pub const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(1);

/// Wall-clock time for the session timers. A token's `exp` is wall-clock
/// time, so expiry is judged by it (the monotonic timer only decides when to
/// look); tests substitute a clock that follows paused tokio time.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Unix time in milliseconds.
    fn unix_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_ms(&self) -> i64 {
        unix_now_ms()
    }
}

/// Per-session knobs taken from the route.
#[derive(Debug, Clone)]
pub struct PumpSettings {
    pub close_on_expiry: bool,
    pub idle_timeout: Option<Duration>,
    pub max_message_size: usize,
    /// `permessage-deflate` agreed: compressed frames pass unchanged.
    pub deflate: bool,
    /// Keepalive: a leg silent this long is pinged (`None`: never).
    pub ping_interval: Option<Duration>,
    /// Keepalive: how long a pinged leg has to send any frame back.
    pub ping_timeout: Duration,
    pub clock: Arc<dyn WallClock>,
}

impl PumpSettings {
    pub fn from_route(s: &SessionConfig) -> Self {
        Self {
            close_on_expiry: s.close_on_expiry,
            idle_timeout: s.idle_timeout,
            max_message_size: s.max_message_size,
            ping_interval: s.ping_interval,
            ping_timeout: s.ping_timeout,
            clock: Arc::new(SystemClock),
            deflate: false,
        }
    }
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
    let activity = Activity::default();
    let acct = Accounting {
        metrics,
        tally,
        activity: &activity,
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
    let timers = Timers {
        session,
        settings,
        activity: &activity,
        start,
    };
    // When each leg was last pinged (milliseconds since `start`).
    let mut pinged: [Option<u64>; 2] = [None, None];
    let reason = loop {
        // Once one side has closed, the other has a bounded time to answer.
        let half_closed = relay.first_close();
        let answer_by = half_closed
            .as_ref()
            .map(|_| Instant::now() + CLOSE_HANDSHAKE_WAIT);
        let event = tokio::select! {
            ev = relay.run() => ev,
            r = control(&timers, answer_by, pinged) => match r {
                Control::End(r) => break r,
                Control::Ping(side) => {
                    relay.send_ping(side);
                    pinged[side as usize] = Some(timers.ms_now());
                    continue;
                }
                Control::NoAnswer => {
                    let (by, frame) = half_closed.unwrap_or((Side::Client, CloseFrame::no_status()));
                    relay.give_up_on(by.other());
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
#[derive(Debug, PartialEq, Eq)]
enum Control {
    End(CloseReason),
    /// The side asked to close did not answer in time.
    NoAnswer,
    /// A leg has been silent for `ping_interval`: ping it.
    Ping(Side),
}

/// What the session's timers look at.
struct Timers<'a> {
    session: &'a SessionHandle,
    settings: &'a PumpSettings,
    activity: &'a Activity,
    start: Instant,
}

impl Timers<'_> {
    fn ms_now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at_ms(&self, ms: u64) -> Instant {
        later(self.start, Duration::from_millis(ms))
    }

    /// The next keepalive deadline of `side` and what is due then.
    fn keepalive(&self, side: Side, pinged: Option<u64>) -> Option<(Instant, Control)> {
        let interval = self.settings.ping_interval?;
        let heard = self.activity.heard_from(side).load(Ordering::Relaxed);
        Some(match pinged {
            // Pinged and nothing heard since: it has `ping_timeout` to answer.
            Some(p) if heard < p => (
                later(self.at_ms(p), self.settings.ping_timeout),
                Control::End(CloseReason::Unresponsive),
            ),
            _ => (later(self.at_ms(heard), interval), Control::Ping(side)),
        })
    }
}

/// Waits for the first control event: kill (revocation, admin, reload,
/// shutdown), token expiry, idleness or keepalive; or, once a side has asked
/// to close, only for the other side's answer deadline (`answer_by`). Costs
/// nothing while nothing happens: one timer (the earliest deadline) and the
/// session's notifications, no polling loop. One timer rather than one per
/// deadline keeps every idle session smaller. Every deadline is judged
/// afresh after each wake-up, since traffic moves them without waking it.
async fn control(t: &Timers<'_>, answer_by: Option<Instant>, pinged: [Option<u64>; 2]) -> Control {
    if let Some(at) = answer_by {
        sleep_until(at).await;
        return Control::NoAnswer;
    }
    let settings = t.settings;
    loop {
        // Created before reading the deadline, so a refresh in between wakes us.
        let moved = t.session.deadline_moved();
        let now = Instant::now();
        let mut wake_at: Option<Instant> = None;
        let mut consider = |at: Instant| {
            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
        };
        if let Some(exp) = settings
            .close_on_expiry
            .then(|| t.session.expires_at())
            .flatten()
        {
            // Wall clock, not the monotonic timer, decides: "never before exp".
            let left_ms = exp
                .saturating_mul(1000)
                .saturating_sub(settings.clock.unix_ms());
            if left_ms <= 0 {
                return Control::End(CloseReason::Expired);
            }
            consider(later(now, Duration::from_millis(left_ms as u64)));
        }
        if let Some(timeout) = settings.idle_timeout.filter(|t| *t <= YEAR) {
            let idle_at = later(t.at_ms(t.activity.relayed_ms()), timeout);
            if idle_at <= now {
                return Control::End(CloseReason::Idle);
            }
            consider(idle_at);
        }
        for side in [Side::Client, Side::Upstream] {
            if let Some((at, due)) = t.keepalive(side, pinged[side as usize]) {
                if at <= now {
                    return due;
                }
                consider(at);
            }
        }
        tokio::select! {
            _ = t.session.cancelled() => {
                return Control::End(t.session.reason().unwrap_or(CloseReason::Shutdown));
            }
            _ = moved => {}
            _ = sleep_until(wake_at.unwrap_or_else(far_future)), if wake_at.is_some() => {}
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
mod tests;
