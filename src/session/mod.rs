//! Live sessions: who is connected, on which route, with which token, and the
//! handle through which the admin API, revocations, reloads and shutdown end
//! them.
//!
//! A session is registered once its handshake is accepted and unregistered by
//! [`SessionGuard`]'s `Drop`, so every exit path of the pump (errors and panics
//! included) releases its slot, its per-subject count and its gauge.

pub mod close;
pub mod registry;
pub mod tally;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::VerifiedToken;
pub use close::{CloseFrame, CloseReason, Side};
pub use registry::{Registry, SessionGuard, SlotError};
pub use tally::Tally;

pub type SessionId = u64;

/// What a session was admitted for, kept so that a reload can judge it
/// again exactly as a new handshake with the same request would be judged.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// The authority the route was chosen by (`None`: the request named none).
    pub host: Option<Box<str>>,
    pub path: Box<str>,
    /// The `Origin` headers of the request (rarely more than one).
    pub origins: Box<[http::HeaderValue]>,
}

/// What the registry knows of one live session.
pub struct SessionHandle {
    pub id: SessionId,
    pub route: Arc<str>,
    pub remote_addr: SocketAddr,
    /// Path parameters of the handshake.
    pub params: crate::route::Params,
    pub admitted: Admitted,
    /// Unix seconds.
    pub connected_at: i64,
    /// The verified token, `None` on `auth: none` routes. Replaced by a refresh.
    token: Mutex<Option<Arc<VerifiedToken>>>,
    /// Unix seconds at which the session must end (`exp`), 0 for never.
    expires_at: AtomicI64,
    /// Wakes the pump when `expires_at` moves (refresh).
    deadline_moved: Notify,
    cancel: CancellationToken,
    /// Set once, by whoever ends the session first.
    reason: Mutex<Option<CloseReason>>,
    /// Messages and bytes relayed so far, each way (the admin API reads it live).
    pub tally: Tally,
    /// The `traceparent` of the handshake's span, when traces are on.
    pub traceparent: std::sync::OnceLock<String>,
}

impl SessionHandle {
    pub fn new(
        id: SessionId,
        route: Arc<str>,
        remote_addr: SocketAddr,
        params: crate::route::Params,
        admitted: Admitted,
        token: Option<Arc<VerifiedToken>>,
    ) -> Self {
        let expires_at = token.as_ref().and_then(|t| t.exp);
        Self {
            id,
            route,
            remote_addr,
            params,
            admitted,
            connected_at: unix_now(),
            token: Mutex::new(token),
            expires_at: AtomicI64::new(expires_at.unwrap_or(0)),
            deadline_moved: Notify::new(),
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            tally: Tally::default(),
            traceparent: std::sync::OnceLock::new(),
        }
    }

    pub fn token(&self) -> Option<Arc<VerifiedToken>> {
        self.token.lock().clone()
    }

    /// `exp` of the session, if it expires.
    pub fn expires_at(&self) -> Option<i64> {
        match self.expires_at.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Accepts a refreshed token: its `exp` becomes the session's deadline.
    pub fn refresh(&self, token: Arc<VerifiedToken>, expires_at: Option<i64>) {
        *self.token.lock() = Some(token);
        self.expires_at
            .store(expires_at.unwrap_or(0), Ordering::Release);
        self.deadline_moved.notify_waiters();
    }

    /// Ends the session with `reason`, unless it is already ending.
    /// Returns whether this call was the one that ended it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut slot = self.reason.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        drop(slot);
        self.cancel.cancel();
        true
    }

    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Why the session ended, once it has.
    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.lock().clone()
    }

    pub fn deadline_moved(&self) -> tokio::sync::futures::Notified<'_> {
        self.deadline_moved.notified()
    }
}

/// Wall-clock unix seconds; JWT times are wall-clock, so deadlines are too.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Wall-clock unix milliseconds.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
