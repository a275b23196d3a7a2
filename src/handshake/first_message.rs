//! The `first_message` token source: the client gets its 101 before it has
//! authenticated, then has `auth_timeout` to send `{"token": ...}` (or
//! `{"jwt": ...}`) as its first text frame. Only then is the upstream
//! contacted. Failures are close codes, since the HTTP exchange is over:
//! 4401 invalid token, 4403 forbidden, 4408 timeout.

use std::sync::Arc;
use tokio::time::Instant;

use http::request::Parts;
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;

use super::session::{register, run};
use super::{switching_protocols, upstream_request, verify, Accepted, Body, ConnInfo, Ctx, Reject};
use crate::app::Gateway;
use crate::auth::sources;
use crate::io::prefixed::Prefixed;
use crate::metrics::Outcome;
use crate::proxy::client_io::{close_client, read_text_message};
use crate::route::Params;
use crate::state::{Route, State};

/// Answers 101 now and authenticates on the first frame in a session task.
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    gw: &Arc<Gateway>,
    state: &Arc<State>,
    conn: &ConnInfo,
    mut parts: Parts,
    route: Arc<Route>,
    params: Params,
    ctx: &mut Ctx,
    on_upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    ctx.deferred = true;
    let accept_key = ctx.accept_key.clone().unwrap_or_default();
    let offered = ctx.offered.clone();
    let protocol = offered.first().cloned();
    let Some(on_upgrade) = on_upgrade else {
        return Reject::BadUpgrade("connection cannot be upgraded").response();
    };
    let gw2 = Arc::clone(gw);
    let state = Arc::clone(state);
    let conn = conn.clone();
    gw.sessions.spawn(async move {
        let started = Instant::now();
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let auth_timeout = state.config.limits.auth_timeout;
        let outcome = tokio::select! {
            r = tokio::time::timeout(auth_timeout, authenticate(&gw2, &state, &route, &params, &mut client)) => match r {
                Ok(r) => r,
                Err(_) => Err((4408, "authentication timeout", Outcome::unauthorized)),
            },
            _ = gw2.shutdown.cancelled() => Err((1001, "gateway shutting down", Outcome::upstream_error)),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let (token, leftover) = match outcome {
            Ok(t) => t,
            Err((code, reason, outcome)) => {
                gw2.metrics.handshake(&route.id, outcome, elapsed);
                tracing::info!(route = %route.id, remote = %conn.remote, outcome = ?outcome, reason, "first-message authentication refused");
                close_client(&mut client, code, reason).await;
                return;
            }
        };
        // Frames the client sent right behind its auth message go to the relay.
        let mut client = Prefixed::new(leftover, client);
        let accepted = Accepted {
            route: Arc::clone(&route),
            params,
            token: Some(token),
        };
        // The upstream may pick any of the client's offers, or none.
        let guard = match register(&gw2, &accepted, &conn) {
            Ok(g) => g,
            Err(r) => {
                gw2.metrics.handshake(&route.id, r.outcome(), elapsed);
                close_client(&mut client, 1013, &r.to_string()).await;
                return;
            }
        };
        let req = match upstream_request(&accepted, &conn, &mut parts, None, offered) {
            Ok(r) => r,
            Err(r) => {
                gw2.metrics.handshake(&route.id, r.outcome(), elapsed);
                close_client(&mut client, 4403, &r.to_string()).await;
                return;
            }
        };
        let connected = match route.upstreams.connect(&req).await {
            Ok(c) => c,
            Err(e) => {
                gw2.metrics.handshake(&route.id, Outcome::upstream_error, started.elapsed().as_secs_f64());
                tracing::info!(route = %route.id, remote = %conn.remote, error = %e, "upstream unavailable after first-message authentication");
                close_client(&mut client, 1014, "upstream unavailable").await;
                return;
            }
        };
        gw2.metrics.handshake(&route.id, Outcome::ok, started.elapsed().as_secs_f64());
        let t = accepted.token.as_ref();
        tracing::info!(
            route = %route.id, remote = %conn.remote,
            iss = t.and_then(|t| t.iss.as_deref()).unwrap_or(""),
            sub = t.and_then(|t| t.sub.as_deref()).unwrap_or(""),
            jti = t.and_then(|t| t.jti.as_deref()).unwrap_or(""),
            outcome = "ok", "handshake accepted (first message)"
        );
        let mut connected = connected;
        run(&gw2, &accepted, &guard, &mut client, &mut connected).await;
        drop(connected);
        drop(guard);
    });
    switching_protocols(&accept_key, protocol.as_deref())
}

type Failure = (u16, &'static str, Outcome);

async fn authenticate<S>(
    gw: &Gateway,
    state: &State,
    route: &Route,
    params: &Params,
    client: &mut S,
) -> Result<(Arc<crate::auth::VerifiedToken>, Vec<u8>), Failure>
where
    S: AsyncRead + Unpin,
{
    let (text, leftover) = read_text_message(client)
        .await
        .map_err(|e| (4401, direct_error_text(&e), Outcome::unauthorized))?;
    let token = sources::parse_first_message(&text).ok_or((
        4401,
        "malformed authentication message",
        Outcome::unauthorized,
    ))?;
    let verified = verify(gw, state, route, &token)
        .await
        .map_err(|r| match r {
            Reject::InvalidToken(d) => (4401, d, Outcome::unauthorized),
            _ => (4401, "invalid token", Outcome::unauthorized),
        })?;
    route
        .rules
        .check(&verified.claims, params)
        .map_err(|_| (4403, "forbidden", Outcome::forbidden))?;
    Ok((verified, leftover))
}

fn direct_error_text(e: &crate::proxy::client_io::ClientIoError) -> &'static str {
    use crate::proxy::client_io::ClientIoError as D;
    match e {
        D::Ended => "connection ended before authentication",
        D::NotText => "expected an authentication message",
        D::TooLarge => "authentication message too large",
        D::Protocol => "protocol error",
    }
}
