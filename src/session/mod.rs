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
    /// The I/O worker whose thread runs this session (see [`close_many`]).
    home: Option<crate::workers::Worker>,
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
            // Created during the handshake, on the thread that will run the session.
            home: crate::workers::Worker::current(),
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
        let ended = self.mark(reason);
        if ended {
            self.cancel.cancel();
        }
        ended
    }

    /// Records `reason` unless the session is already ending; the pump is
    /// not woken yet.
    fn mark(&self, reason: CloseReason) -> bool {
        let mut slot = self.reason.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
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

/// Ends many sessions at once (a revocation, a reload, a drain round) and
/// returns how many this call ended. Each is marked here, so the count is
/// exact at once; the pumps are then woken from their own worker threads,
/// one task per worker. Why: a pump woken from another thread waits in its
/// worker's remote queue, which a busy worker serves only every few dozen
/// tasks, after its local work, and the local work at that moment is the
/// teardown of the sessions already closing. Thousands of sessions woken
/// from the control thread were closed one after the other, each fully torn
/// down before the next was told (10,000 took 1.3-2.2 s); woken
/// locally, every pump sends its close frames first and the teardowns
/// follow.
pub fn close_many(sessions: &[Arc<SessionHandle>], reason: &CloseReason) -> usize {
    let mut ended = 0;
    let mut per_worker: Vec<(crate::workers::Worker, Vec<Arc<SessionHandle>>)> = Vec::new();
    for s in sessions {
        if !s.mark(reason.clone()) {
            continue;
        }
        ended += 1;
        match &s.home {
            Some(w) => match per_worker.iter_mut().find(|(h, _)| h.index == w.index) {
                Some((_, group)) => group.push(Arc::clone(s)),
                None => per_worker.push((w.clone(), vec![Arc::clone(s)])),
            },
            None => s.cancel.cancel(),
        }
    }
    for (worker, group) in per_worker {
        // A worker that has stopped has dropped its sessions already; the
        // task is then dropped unrun, which is all that is left to do.
        drop(worker.handle.spawn(async move {
            for s in group {
                s.cancel.cancel();
            }
        }));
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::Workers;
    use tokio::sync::{mpsc, oneshot};

    /// A session made on a worker thread, as the handshake makes it, with
    /// a stand-in pump that reports on which thread it was woken.
    async fn session_on(
        workers: &Workers,
        id: SessionId,
        woken: mpsc::UnboundedSender<(SessionId, String)>,
    ) -> Arc<SessionHandle> {
        let (tx, rx) = oneshot::channel();
        workers.spawn(async move {
            let s = Arc::new(SessionHandle::new(
                id,
                "r".into(),
                "127.0.0.1:1".parse().expect("address"),
                Default::default(),
                Admitted::default(),
                None,
            ));
            let _ = tx.send(Arc::clone(&s));
            s.cancelled().await;
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = woken.send((id, name));
        });
        rx.await.expect("session made")
    }

    #[tokio::test]
    async fn close_many_counts_at_once_and_wakes_each_pump_on_its_own_worker() {
        let workers = Workers::start(2).expect("workers");
        let (tx, mut woken) = mpsc::unbounded_channel();
        let mut sessions = Vec::new();
        for id in 0..6 {
            sessions.push(session_on(&workers, id, tx.clone()).await);
        }
        // One already ending: not counted again, its reason kept.
        assert!(sessions[0].close(CloseReason::Terminated));

        assert_eq!(close_many(&sessions, &CloseReason::Revoked), 5);
        for s in &sessions[1..] {
            assert_eq!(s.reason(), Some(CloseReason::Revoked));
        }
        assert_eq!(sessions[0].reason(), Some(CloseReason::Terminated));
        let mut threads = std::collections::BTreeMap::new();
        for _ in 0..6 {
            let (id, thread) =
                tokio::time::timeout(std::time::Duration::from_secs(10), woken.recv())
                    .await
                    .expect("every pump woken")
                    .expect("channel open");
            threads.insert(id, thread);
        }
        // Each was woken on the worker it lives on (spread over both).
        for s in &sessions {
            let home = s.home.as_ref().expect("made on a worker");
            assert_eq!(threads[&s.id], format!("wsgate-io-{}", home.index));
        }
        assert_eq!(
            threads
                .values()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            2
        );
        assert_eq!(close_many(&sessions, &CloseReason::Revoked), 0);
        workers.stop(std::time::Duration::from_secs(1)).await;
    }
}
