//! The `first_message` token source: the client gets its 101 before it has
//! authenticated, then has `auth_timeout` to send `{"token": ...}` (or
//! `{"jwt": ...}`) as its first text frame. Only then is the upstream
//! contacted. Failures are close codes, since the HTTP exchange is over:
//! 4401 invalid token, 4403 forbidden, 4408 timeout.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use http::request::Parts;
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::session::{close_now, register, run};
use super::{
    answer_protocol, switching_protocols, upstream_request, verify, Accepted, Body, ConnInfo, Ctx,
    Reject,
};
use crate::app::Gateway;
use crate::auth::sources;
use crate::metrics::Outcome;
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
        let mut client = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(route.ws_config),
        )
        .await;
        let auth_timeout = state.config.limits.auth_timeout;
        let outcome = tokio::select! {
            r = tokio::time::timeout(auth_timeout, authenticate(&gw2, &state, &route, &params, &mut client)) => match r {
                Ok(r) => r,
                Err(_) => Err((4408, "authentication timeout", Outcome::unauthorized)),
            },
            _ = gw2.shutdown.cancelled() => Err((1001, "gateway shutting down", Outcome::upstream_error)),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let token = match outcome {
            Ok(t) => t,
            Err((code, reason, outcome)) => {
                gw2.metrics.handshake(&route.id, outcome, elapsed);
                tracing::info!(route = %route.id, remote = %conn.remote, outcome = ?outcome, reason, "first-message authentication refused");
                close_now(client, code, reason.to_owned()).await;
                return;
            }
        };
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
                close_now(client, 1013, r.to_string()).await;
                return;
            }
        };
        let req = match upstream_request(&accepted, &conn, &mut parts, None, offered) {
            Ok(r) => r,
            Err(r) => {
                gw2.metrics.handshake(&route.id, r.outcome(), elapsed);
                close_now(client, 4403, r.to_string()).await;
                return;
            }
        };
        let connected = match route.upstreams.connect(&req, route.ws_config).await {
            Ok(c) => c,
            Err(e) => {
                gw2.metrics.handshake(&route.id, Outcome::upstream_error, started.elapsed().as_secs_f64());
                tracing::info!(route = %route.id, remote = %conn.remote, error = %e, "upstream unavailable after first-message authentication");
                close_now(client, 1014, "upstream unavailable".to_owned()).await;
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
        run(&gw2, accepted, guard, client, connected).await;
    });
    let _ = answer_protocol;
    switching_protocols(&accept_key, protocol.as_deref())
}

type Failure = (u16, &'static str, Outcome);

async fn authenticate<S>(
    gw: &Gateway,
    state: &State,
    route: &Route,
    params: &Params,
    client: &mut S,
) -> Result<Arc<crate::auth::VerifiedToken>, Failure>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let text = loop {
        match client.next().await {
            Some(Ok(Message::Text(t))) => break t,
            // Control frames may precede the auth message.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => {
                return Err((
                    4401,
                    "expected an authentication message",
                    Outcome::unauthorized,
                ))
            }
            Some(Err(_)) | None => {
                return Err((
                    4401,
                    "connection ended before authentication",
                    Outcome::unauthorized,
                ))
            }
        }
    };
    let token = sources::parse_first_message(text.as_str()).ok_or((
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
    Ok(verified)
}
