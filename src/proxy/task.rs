//! A session's task: the pump with the bookkeeping around it (gauge,
//! metrics, the end-of-session log line), and the short-lived task that
//! answers a refused handshake with a close (`reject: close`).

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::gateway::Gateway;
use crate::metrics::SessionMetrics;
use crate::proxy::client_io::close_client;
use crate::proxy::pump::{self, PumpSettings};
use crate::proxy::relay::Interceptor;
use crate::session::SessionGuard;
use crate::snapshot::Route;
use crate::upstream::Connected;

/// Runs the session once hyper hands over the upgraded client connection.
pub fn spawn(
    gw: &Arc<Gateway>,
    route: Arc<Route>,
    guard: SessionGuard,
    connected: Connected,
    interceptor: Option<Box<dyn Interceptor>>,
    on_upgrade: OnUpgrade,
) {
    let gw2 = Arc::clone(gw);
    // Counted before hyper answers 101, not once the upgrade completes.
    let metrics = gw.metrics.for_session(&route.id);
    // Mutable here, not rebound inside the task: a rebinding would keep a
    // second copy in the task's state for the session's whole life.
    let mut connected = connected;
    gw.sessions.spawn(async move {
        let mut client = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "client upgrade failed");
                return;
            }
        };
        run(
            &gw2,
            &route,
            &guard,
            &metrics,
            &mut client,
            &mut connected,
            interceptor,
        )
        .await;
        // The upstream's lease first, then the session's slot.
        drop(connected);
        drop(metrics);
        drop(guard);
    });
}

/// The pump, with the bookkeeping around it. Everything is borrowed from
/// the session task, which drops it afterwards (upstream lease, then the
/// registration): arguments an async fn owns are stored twice in its state,
/// and this state lives as long as the session.
pub async fn run<C>(
    gw: &Arc<Gateway>,
    route: &Route,
    guard: &SessionGuard,
    metrics: &SessionMetrics,
    client: &mut C,
    connected: &mut Connected,
    interceptor: Option<Box<dyn Interceptor>>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let handle = Arc::clone(guard.handle());
    let settings = PumpSettings {
        deflate: connected.extensions.is_some(),
        ..PumpSettings::from_route(&route.cfg.session)
    };
    // Shutdown may have begun closing sessions while this one was being
    // set up (see `Drain::close_sessions`).
    if gw.drain.is_closing() {
        handle.close(crate::session::CloseReason::Shutdown);
    }
    let started = tokio::time::Instant::now();
    let started_wall = std::time::SystemTime::now();
    let reason = pump::run(
        client,
        &mut connected.io,
        &handle,
        &settings,
        metrics,
        &handle.tally,
        interceptor.as_deref(),
    )
    .await;
    gw.metrics.session_closed(&route.id, reason.metric_label());
    let to_client = reason.to_client();
    let to_upstream = reason.to_upstream();
    let [msgs_up, bytes_up, msgs_down, bytes_down] = handle.tally.snapshot();
    if let (Some(tracer), Some(parent)) = (gw.tracer.get(), handle.traceparent.get()) {
        let end = crate::telemetry::trace::SessionEnd {
            route: &route.id,
            session: handle.id,
            reason: reason.metric_label(),
            client_code: to_client.as_ref().map(|c| c.code),
            upstream_code: to_upstream.as_ref().map(|c| c.code),
            traffic: [msgs_up, bytes_up, msgs_down, bytes_down],
        };
        tracer.session_ended(parent, started_wall, &end);
    }
    tracing::info!(
        route = %route.id, session = handle.id, remote = %handle.remote_addr,
        path = %handle.admitted.path, host = handle.admitted.host.as_deref().unwrap_or(""),
        upstream = %connected.url,
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
pub fn spawn_refusal(gw: &Arc<Gateway>, on_upgrade: OnUpgrade, code: u16, reason: &'static str) {
    gw.sessions.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        close_client(&mut TokioIo::new(upgraded), code, reason).await;
    });
}
