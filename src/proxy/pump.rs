//! The frame pump: one task per session relays messages both ways and ends
//! the session when either side closes, the token expires, the session is
//! killed (revocation, admin, reload, shutdown) or it goes idle.
//!
//! # Lifecycle
//!
//! 1. Both directions run as two futures inside one task, so a side that
//!    stops reading blocks only its own direction (backpressure: the pump never
//!    buffers more than the message in hand) and the other direction keeps
//!    draining. A single sequential loop would deadlock an upstream that writes
//!    while we are blocked writing to it.
//! 2. The first event ends the relay: a close frame (already passed on by the
//!    relay), a lost connection, an oversized message, or a control event.
//! 3. [`finish`] tells each side what the contract's session table says
//!    ([`CloseReason`]) and waits, bounded, for the close handshakes.
//!
//! The pump is generic over `Sink + Stream` so it can be driven by in-memory
//! channels in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::metrics::{Direction, SessionMetrics};
use crate::session::close::CloseFrameSpec;
use crate::session::{unix_now_ms, CloseReason, SessionHandle};

/// How long the pump waits for each side to answer its close frame.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(3);

/// Per-session knobs taken from the route.
#[derive(Debug, Clone)]
pub struct PumpSettings {
    pub close_on_expiry: bool,
    pub idle_timeout: Option<Duration>,
}

/// Client messages the gateway answers itself (refresh). `None` means the
/// message is relayed; otherwise the future yields the answer to send back.
pub trait Interceptor: Send + Sync {
    fn intercept<'a>(
        &'a self,
        text: &str,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>>>;
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
    fn add(&self, direction: Direction, bytes: usize) {
        let (m, b) = match direction {
            Direction::to_upstream => (&self.msgs_up, &self.bytes_up),
            Direction::to_client => (&self.msgs_down, &self.bytes_down),
        };
        m.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (messages, bytes) to the upstream and to the client.
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.msgs_up.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.msgs_down.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        ]
    }
}

/// How one direction ended.
enum End {
    /// The reading side sent a close frame; it has been passed on.
    Closed(Option<CloseFrame>),
    /// The reading side's connection ended without a close frame.
    ReadLost,
    /// The reading side sent a message above the limit.
    TooBig,
    /// The writing side's connection failed.
    WriteLost,
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
    C: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Unpin,
    U: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Unpin,
{
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    // Replies of the gateway's own to the client (refresh answers) travel on
    // this bounded channel to the client-writing direction.
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<String>(4);

    let reason = {
        let c2u = async {
            loop {
                let msg = match next(&mut c_rx).await {
                    Ok(m) => m,
                    Err(end) => return end,
                };
                touch(&last_activity, start);
                if let (Some(icpt), Message::Text(text)) = (interceptor, &msg) {
                    if let Some(answer) = icpt.intercept(text.as_str()) {
                        if reply_tx.send(answer.await).await.is_err() {
                            return End::WriteLost;
                        }
                        continue;
                    }
                }
                if let Err(end) =
                    forward(msg, &mut u_tx, Direction::to_upstream, metrics, tally).await
                {
                    return end;
                }
            }
        };
        let u2c = async {
            loop {
                let msg = tokio::select! {
                    m = next(&mut u_rx) => match m {
                        Ok(m) => m,
                        Err(end) => return end,
                    },
                    Some(answer) = reply_rx.recv() => Message::text(answer),
                };
                touch(&last_activity, start);
                if let Err(end) =
                    forward(msg, &mut c_tx, Direction::to_client, metrics, tally).await
                {
                    return end;
                }
            }
        };
        tokio::pin!(c2u, u2c);
        tokio::select! {
            end = &mut c2u => match end {
                End::Closed(f) => peer_close(f, true),
                End::ReadLost => CloseReason::ClientLost,
                End::TooBig => CloseReason::TooBig,
                End::WriteLost => CloseReason::UpstreamLost,
            },
            end = &mut u2c => match end {
                End::Closed(f) => peer_close(f, false),
                End::ReadLost => CloseReason::UpstreamLost,
                End::TooBig => CloseReason::TooBig,
                End::WriteLost => CloseReason::ClientLost,
            },
            r = control(session, settings, &last_activity, start) => r,
        }
    };
    // Record the reason first, so a concurrent revoke cannot claim a session
    // that already ended on its own.
    session.close(reason.clone());
    let reason = session.take_reason().unwrap_or(reason);
    finish(&reason, &mut c_tx, &mut c_rx, &mut u_tx, &mut u_rx).await;
    reason
}

async fn next<R>(rx: &mut R) -> Result<Message, End>
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        return match rx.next().await {
            None => Err(End::ReadLost),
            Some(Err(WsError::Capacity(_))) => Err(End::TooBig),
            Some(Err(_)) => Err(End::ReadLost),
            // Raw frames are never produced by reading.
            Some(Ok(Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => Err(End::Closed(frame)),
            Some(Ok(m)) => Ok(m),
        };
    }
}

/// Passes one message on. A close frame read from one side is passed on by
/// the caller of [`next`] through [`End::Closed`].
async fn forward<W>(
    msg: Message,
    tx: &mut W,
    direction: Direction,
    metrics: &SessionMetrics,
    tally: &Tally,
) -> Result<(), End>
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    metrics.relayed(direction, msg.len());
    tally.add(direction, msg.len());
    tx.send(msg).await.map_err(|_| End::WriteLost)
}

fn touch(last: &AtomicU64, start: Instant) {
    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
}

fn peer_close(frame: Option<CloseFrame>, from_client: bool) -> CloseReason {
    let (code, reason) = match frame {
        Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
        None => (NO_STATUS, String::new()),
    };
    if from_client {
        CloseReason::Client { code, reason }
    } else {
        CloseReason::Upstream { code, reason }
    }
}

/// 1005: the peer's close frame had no status; it is passed on without one.
const NO_STATUS: u16 = 1005;

/// Waits for the first control event: kill (revocation, admin, reload,
/// shutdown), token expiry, or idleness. Costs nothing while nothing happens:
/// two timers and a cancellation token, no polling loop.
async fn control(
    session: &SessionHandle,
    settings: &PumpSettings,
    last_activity: &AtomicU64,
    start: Instant,
) -> CloseReason {
    loop {
        // Created before reading the deadline, so a refresh in between wakes us.
        let moved = session.deadline_moved();
        let expiry = settings
            .close_on_expiry
            .then(|| session.expires_at())
            .flatten()
            .map(|exp| {
                let left_ms = (exp * 1000 - unix_now_ms()).max(0) as u64;
                Instant::now() + Duration::from_millis(left_ms)
            });
        let idle_at = settings
            .idle_timeout
            .map(|t| start + Duration::from_millis(last_activity.load(Ordering::Relaxed)) + t);
        tokio::select! {
            _ = session.cancelled() => {
                return session.take_reason().unwrap_or(CloseReason::Shutdown);
            }
            _ = sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                // Wall clock, not the monotonic timer, decides: "never before exp".
                if let Some(exp) = session.expires_at() {
                    if unix_now_ms() >= exp * 1000 {
                        return CloseReason::Expired;
                    }
                }
            }
            _ = moved => {}
            _ = sleep_until(idle_at.unwrap_or_else(far_future)), if idle_at.is_some() => {
                if let Some(t) = settings.idle_timeout {
                    let last = start + Duration::from_millis(last_activity.load(Ordering::Relaxed));
                    if Instant::now() >= last + t {
                        return CloseReason::Idle;
                    }
                }
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

fn close_message(spec: &CloseFrameSpec) -> Message {
    if spec.code == NO_STATUS {
        return Message::Close(None);
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(spec.code),
        reason: spec.reason.clone().into(),
    }))
}

/// Sends each side its close frame (unless it is gone or the relay already
/// passed the peer's close on), then lets both close handshakes complete.
async fn finish<CT, CR, UT, UR>(
    reason: &CloseReason,
    c_tx: &mut CT,
    c_rx: &mut CR,
    u_tx: &mut UT,
    u_rx: &mut UR,
) where
    CT: Sink<Message, Error = WsError> + Unpin,
    CR: Stream<Item = Result<Message, WsError>> + Unpin,
    UT: Sink<Message, Error = WsError> + Unpin,
    UR: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let to_client = reason.to_client();
    let to_upstream = reason.to_upstream();
    let client_side = async {
        if let Some(spec) = &to_client {
            if c_tx.send(close_message(spec)).await.is_err() {
                return;
            }
        }
        if to_client.is_some() || matches!(reason, CloseReason::Client { .. }) {
            drain(c_rx).await;
        }
        let _ = c_tx.close().await;
    };
    let upstream_side = async {
        if let Some(spec) = &to_upstream {
            if u_tx.send(close_message(spec)).await.is_err() {
                return;
            }
        }
        if to_upstream.is_some() || matches!(reason, CloseReason::Upstream { .. }) {
            drain(u_rx).await;
        }
        let _ = u_tx.close().await;
    };
    let both = async { tokio::join!(client_side, upstream_side) };
    tokio::select! {
        _ = both => {}
        _ = sleep(CLOSE_HANDSHAKE_WAIT) => {}
    }
}

/// Reads until the peer's close (or the end); reading also flushes the close
/// reply the WebSocket layer queues on its own.
async fn drain<R>(rx: &mut R)
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    while let Some(Ok(_)) = rx.next().await {}
}
