//! The `first_message` token source: the client gets its 101 before it has
//! authenticated, then has `auth_timeout` to send `{"token": ...}` (or
//! `{"jwt": ...}`) as its first text frame. That token goes through the same
//! [`admit`](super::admit::admit) as a handshake's, against the config in
//! force when the message arrives (a reload may have come since the 101);
//! only then is the upstream contacted. Refusals are close frames (the HTTP exchange is
//! over), with the codes of [`Reject::close_code`].

use std::sync::Arc;
use tokio::time::Instant;

use http::request::Parts;
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;

use super::admit::{self, Admission, Attempt, Credential, Registration};
use super::{forward, refresh, switching_protocols, Body, ConnInfo, Ctx, Detail, Reject};
use crate::auth::sources;
use crate::auth::VerifiedToken;
use crate::gateway::Gateway;
use crate::io::prefixed::Prefixed;
use crate::proxy::client_io::{close_client, read_text_message, ClientIoError};
use crate::proxy::frame::{self, OP_TEXT};
use crate::route::Params;
use crate::session::registry::Slot;
use crate::session::Admitted;
use crate::snapshot::{Route, Snapshot};

/// A handshake whose token is still to come.
pub(super) struct Pending {
    /// The route of the 101; the message is judged by the route the config
    /// in force then gives the same request.
    pub route: Arc<Route>,
    pub admitted: Admitted,
    pub parts: Parts,
    /// The client's offer without a `bearer, <jwt>` pair: what the upstream
    /// is offered.
    pub app_protocols: Vec<String>,
    /// The session slot taken before the 101, held while waiting.
    pub slot: Option<Slot>,
}

/// Answers 101 now and authenticates on the first frame in a session task.
pub(super) fn start(
    gw: &Arc<Gateway>,
    snapshot: &Arc<Snapshot>,
    conn: &ConnInfo,
    pending: Pending,
    ctx: &mut Ctx,
    on_upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    ctx.deferred = true;
    let accept_key = ctx.accept_key.clone().unwrap_or_default();
    // The upstream is not known yet: answer with the client's first offer
    // (a browser fails the connection otherwise); the upstream is offered
    // the same list later, less any token.
    let protocol = ctx.offered.first().cloned();
    let Some(on_upgrade) = on_upgrade else {
        return Reject::BadUpgrade("connection cannot be upgraded").response();
    };
    let gw2 = Arc::clone(gw);
    let auth_timeout = snapshot.config.limits.auth_timeout;
    let conn = conn.clone();
    gw.sessions.spawn(async move {
        let started = Instant::now();
        let mut conn = conn;
        // Still a pending connection (`max_pending`) until its first
        // message is judged.
        let waiting = conn.pending.take();
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let route = Arc::clone(&pending.route);
        let mut detail = Detail {
            path: pending.admitted.path.clone(),
            host: pending.admitted.host.clone(),
            ..Detail::default()
        };
        // The steps before the session (reading the message, admission, the
        // upstream connection, a refusal's close) run boxed: their futures
        // are several KiB, and inline they would stay in this task's state
        // for the whole session.
        let outcome = tokio::select! {
            r = tokio::time::timeout(auth_timeout, Box::pin(authenticate(&gw2, &pending, &mut client))) => match r {
                Ok(r) => r,
                Err(_) => Err(Reject::AuthTimeout),
            },
            _ = gw2.drain.closing() => Err(Reject::ShuttingDown),
        };
        drop(waiting);
        let (mut authenticated, mut leftover) = match outcome {
            Ok(a) => a,
            Err(reject) => {
                super::record(&gw2, &route.id, &conn, None, Err(&reject), started, &detail);
                Box::pin(close_client(&mut client, reject.close_code(), reject.description())).await;
                return;
            }
        };
        // Frames the client sent right behind its auth message go to the
        // relay; with `forward`, the message itself first (as a client frame:
        // masked, as the upstream expects).
        if let Some(text) = authenticated.forward.take() {
            let mut framed = frame::encode(OP_TEXT, text.as_bytes(), Some(rand::random())).to_vec();
            framed.extend_from_slice(&leftover);
            leftover = framed;
        }
        let mut client = Prefixed::new(leftover, client);
        match Box::pin(connect(&gw2, &conn, pending, authenticated)).await {
            Ok(Session {
                guard,
                mut connected,
                route,
                token,
            }) => {
                detail.session = Some(guard.handle().id);
                detail.upstream = Some(connected.url.to_string());
                super::record(&gw2, &route.id, &conn, token.as_deref(), Ok(()), started, &detail);
                let interceptor = refresh::interceptor(&gw2, &route, guard.handle());
                let metrics = gw2.metrics.for_session(&route.id);
                crate::proxy::task::run(&gw2, &route, &guard, &metrics, &mut client, &mut connected, interceptor).await;
                drop(connected);
                drop(metrics);
                drop(guard);
            }
            Err((reject, token)) => {
                super::record(&gw2, &route.id, &conn, token.as_deref(), Err(&reject), started, &detail);
                Box::pin(close_client(&mut client, reject.close_code(), reject.description())).await;
            }
        }
    });
    switching_protocols(&accept_key, protocol.as_deref(), None)
}

/// An admitted session with its upstream connected.
struct Session {
    guard: crate::session::SessionGuard,
    connected: crate::upstream::Connected,
    /// The route as the config in force when the message arrived has it.
    route: Arc<Route>,
    token: Option<Arc<VerifiedToken>>,
}

/// Registers the admitted session and connects its upstream.
async fn connect(
    gw: &Arc<Gateway>,
    conn: &ConnInfo,
    mut pending: Pending,
    authenticated: Authenticated,
) -> Result<Session, (Reject, Option<Arc<VerifiedToken>>)> {
    let Authenticated {
        admission,
        snapshot,
        route,
        params,
        ..
    } = authenticated;
    let token = admission.token.clone();
    let fail = |r| (r, token.clone());
    let authority = pending.admitted.host.clone();
    let guard = admit::register(
        gw,
        Registration {
            judged: &snapshot,
            route: &route,
            params: &params,
            admitted: pending.admitted,
            token: admission.token,
            remote: conn.remote,
            slot: pending.slot.take(),
        },
    )
    .await
    .map_err(fail)?;
    let req = forward::upstream_request(
        forward::Forward {
            route: &route,
            params: &params,
            conn,
            authority: authority.as_deref(),
            found: None,
            app_protocols: std::mem::take(&mut pending.app_protocols),
            identity: admission.headers,
            claims: &admission.claims,
        },
        &mut pending.parts,
    );
    let connect_started = tokio::time::Instant::now();
    let connected = route.upstreams.connect(&req).await;
    gw.metrics.upstream_connect(
        &route.id,
        connect_started.elapsed().as_secs_f64(),
        connected
            .as_ref()
            .err()
            .map(crate::upstream::UpstreamError::kind),
    );
    let connected = connected.map_err(|e| fail(Reject::Upstream(e)))?;
    Ok(Session {
        guard,
        connected,
        route,
        token,
    })
}

/// An admitted first message, judged against the config in force when it
/// arrived (a reload may have come since the 101).
struct Authenticated {
    admission: Admission,
    snapshot: Arc<Snapshot>,
    route: Arc<Route>,
    params: Params,
    /// The message itself, when the route forwards it.
    forward: Option<String>,
}

async fn authenticate<S>(
    gw: &Gateway,
    pending: &Pending,
    client: &mut S,
) -> Result<(Authenticated, Vec<u8>), Reject>
where
    S: AsyncRead + Unpin,
{
    let (text, leftover) = read_text_message(client)
        .await
        .map_err(|e| Reject::BadAuthMessage(message_error_text(&e)))?;
    let snapshot = gw.snapshot.load_full();
    // A reload since the 101 may have removed the route, given the request
    // to another one, or stopped it reading a first message: as for a live
    // session, access is revoked by the new policy.
    const REVOKED: Reject = Reject::Forbidden("access revoked by policy");
    let (route, params) =
        admit::same_route(&snapshot, &pending.admitted, &pending.route.id).map_err(|_| REVOKED)?;
    let route = Arc::clone(route);
    let spec = route.first_message().ok_or(REVOKED)?;
    let token = sources::parse_first_message(&text, spec)
        .ok_or(Reject::BadAuthMessage("malformed authentication message"))?;
    let forward = spec.forward.then_some(text);
    let attempt = Attempt {
        route: &route,
        params: &params,
        origins: &pending.admitted.origins,
        credential: Credential::Presented(&token),
    };
    let admission = admit::admit(gw, &snapshot, attempt).await?;
    Ok((
        Authenticated {
            admission,
            snapshot,
            route,
            params,
            forward,
        },
        leftover,
    ))
}

fn message_error_text(e: &ClientIoError) -> &'static str {
    match e {
        ClientIoError::Ended => "connection ended before authentication",
        ClientIoError::NotText => "expected an authentication message",
        ClientIoError::TooLarge => "authentication message too large",
        ClientIoError::Protocol => "protocol error",
    }
}
