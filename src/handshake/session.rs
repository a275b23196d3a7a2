//! From an accepted handshake to a running session: registration (limits),
//! the spawned pump task, and the short-lived task that answers a refused
//! handshake with a close (`reject: close`).

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Accepted, ConnInfo, Reject};
use crate::app::Gateway;
use crate::proxy::client_io::close_client;
use crate::proxy::pump::{self, PumpSettings};
use crate::proxy::refresh::Refresher;
use crate::proxy::relay::{Interceptor, Tally};
use crate::proxy::upstream::Connected;
use crate::session::{SessionGuard, SessionHandle, SlotError};

/// Takes a global slot and registers the session (per-subject limit checked
/// atomically with the insert).
pub(crate) fn register(
    gw: &Arc<Gateway>,
    accepted: &Accepted,
    conn: &ConnInfo,
) -> Result<SessionGuard, Reject> {
    let state = gw.state.load();
    let slot = gw
        .registry
        .reserve(state.config.limits.max_sessions)
        .map_err(|_| Reject::GlobalLimit)?;
    let token = accepted.token.clone();
    let subject = token.as_ref().and_then(|t| {
        let iss = t.iss.clone().unwrap_or_else(|| t.issuer_id.clone());
        t.sub.clone().map(|sub| (iss, sub))
    });
    let handle = Arc::new(SessionHandle::new(
        gw.registry.next_id(),
        Arc::clone(&accepted.route.id),
        conn.remote,
        accepted.params.clone(),
        token.clone(),
        token.as_ref().and_then(|t| t.exp),
    ));
    let guard = gw
        .registry
        .register(
            handle,
            subject,
            accepted.route.cfg.limits.max_sessions_per_subject,
            slot,
        )
        .map_err(|e| match e {
            SlotError::Global => Reject::GlobalLimit,
            SlotError::Subject => Reject::SubjectLimit,
        })?;
    // A revocation made between verification and registration found no
    // session to close; checking again now that the session is visible
    // leaves no gap.
    if token.as_ref().is_some_and(|t| gw.is_revoked(t)) {
        return Err(Reject::InvalidToken("token revoked"));
    }
    Ok(guard)
}

/// Runs the session once hyper hands over the upgraded client connection.
pub(crate) fn spawn(
    gw: &Arc<Gateway>,
    accepted: Accepted,
    guard: SessionGuard,
    connected: Connected,
    on_upgrade: OnUpgrade,
) {
    let gw2 = Arc::clone(gw);
    gw.sessions.spawn(async move {
        let mut client = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "client upgrade failed");
                return;
            }
        };
        let mut connected = connected;
        run(&gw2, &accepted, &guard, &mut client, &mut connected).await;
        // The upstream's lease first, then the session's slot.
        drop(connected);
        drop(guard);
    });
}

/// The pump, with the bookkeeping around it. Everything is borrowed from
/// the session task, which drops it afterwards (upstream lease, then the
/// registration): arguments an async fn owns are stored twice in its state,
/// and this state lives as long as the session.
pub(crate) async fn run<C>(
    gw: &Arc<Gateway>,
    accepted: &Accepted,
    guard: &SessionGuard,
    client: &mut C,
    connected: &mut Connected,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let route = &accepted.route;
    let handle = Arc::clone(guard.handle());
    let metrics = gw.metrics.for_session(&route.id);
    metrics.active.inc();
    let settings = PumpSettings::from_route(&route.cfg.session);
    let refresher = route.cfg.session.refresh.then(|| {
        Refresher::new(
            Arc::clone(gw),
            Arc::clone(route),
            accepted.params.clone(),
            Arc::clone(&handle),
        )
    });
    // Shutdown may have begun while this session was being set up.
    if gw.shutdown.is_cancelled() {
        handle.close(crate::session::CloseReason::Shutdown);
    }
    let started = tokio::time::Instant::now();
    let tally = Tally::default();
    let reason = pump::run(
        client,
        &mut connected.io,
        &handle,
        &settings,
        &metrics,
        &tally,
        refresher.as_ref().map(|r| r as &dyn Interceptor),
    )
    .await;
    metrics.active.dec();
    gw.metrics.session_closed(&route.id, reason.metric_label());
    let to_client = reason.to_client();
    let to_upstream = reason.to_upstream();
    let [msgs_up, bytes_up, msgs_down, bytes_down] = tally.snapshot();
    tracing::info!(
        route = %route.id, session = handle.id, remote = %handle.remote_addr,
        duration_ms = started.elapsed().as_millis() as u64,
        reason = reason.metric_label(),
        client_code = to_client.as_ref().map(|c| c.code),
        client_reason = to_client.as_ref().map(|c| c.reason.as_str()),
        upstream_code = to_upstream.as_ref().map(|c| c.code),
        msgs_up, bytes_up, msgs_down, bytes_down,
        "session closed"
    );
}

/// `reject: close`: completes the client's handshake only to close it at
/// once with the refusal's code and reason, which a browser can read.
pub(crate) fn spawn_refusal(gw: &Arc<Gateway>, on_upgrade: OnUpgrade, code: u16, reason: String) {
    gw.sessions.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        close_client(&mut TokioIo::new(upgraded), code, &reason).await;
    });
}
