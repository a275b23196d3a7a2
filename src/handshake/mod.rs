//! One WebSocket handshake, from request to `101 Switching Protocols`.
//!
//! [`handle`] reads top to bottom in the order the checks run:
//! path → route → upgrade → origin → token → verify → rules → limits →
//! upstream → 101. Every refusal is a [`Reject`]; the single exit in
//! [`handle`] turns it into a response (or a close, with `reject: close`),
//! counts it and logs it once.
//!
//! With the `first_message` source the order changes after the upgrade
//! checks: the client gets its 101 first, and [`first_message`] takes the
//! token from its first frame before anything else happens.

mod first_message;
pub mod reject;
mod session;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::app::Gateway;
use crate::auth::sources::{self, Found};
use crate::auth::VerifiedToken;
use crate::config::{AuthMode, RejectMode, TokenForward, TokenSource};
use crate::metrics::Outcome;
use crate::proxy::upstream::UpstreamRequest;
use crate::route::pattern::parse_request_path;
use crate::route::template::is_safe_header_value;
use crate::route::Params;
use crate::state::{Route, State};
pub use reject::{Body, Reject};

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
}

/// The accepted parts of a handshake that the session needs.
pub(crate) struct Accepted {
    pub route: Arc<Route>,
    pub params: Params,
    pub token: Option<Arc<VerifiedToken>>,
}

/// Serves one request on a gateway listener.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let state = gw.state.load_full();

    let mut ctx = Ctx::default();
    let result = accept(&gw, &state, &conn, parts, on_upgrade, &mut ctx).await;
    let route_id = ctx
        .route
        .as_ref()
        .map(|r| r.id.to_string())
        .unwrap_or_default();
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(resp) if ctx.deferred => resp,
        Ok(resp) => {
            gw.metrics.handshake(&route_id, Outcome::ok, elapsed);
            tracing::info!(
                route = %route_id, remote = %conn.remote, iss = ctx.iss(), sub = ctx.sub(),
                jti = ctx.jti(), outcome = "ok", duration_ms = elapsed * 1000.0,
                "handshake accepted"
            );
            resp
        }
        Err((reject, on_upgrade)) => {
            gw.metrics.handshake(&route_id, reject.outcome(), elapsed);
            tracing::info!(
                route = %route_id, remote = %conn.remote, iss = ctx.iss(), sub = ctx.sub(),
                jti = ctx.jti(), outcome = ?reject.outcome(), reason = %reject,
                status = reject.status().as_u16(), duration_ms = elapsed * 1000.0,
                "handshake refused"
            );
            refuse(&gw, &ctx, reject, on_upgrade)
        }
    }
}

/// What the handshake learned so far, for the log line and for `reject: close`.
#[derive(Default)]
struct Ctx {
    route: Option<Arc<Route>>,
    token: Option<Arc<VerifiedToken>>,
    /// Set once the request is known to be a valid upgrade.
    accept_key: Option<String>,
    /// The client's offered subprotocols (raw entries, in order).
    offered: Vec<String>,
    /// The first-message task counts and logs the handshake itself.
    deferred: bool,
}

impl Ctx {
    fn iss(&self) -> &str {
        self.token
            .as_ref()
            .and_then(|t| t.iss.as_deref())
            .unwrap_or("")
    }
    fn sub(&self) -> &str {
        self.token
            .as_ref()
            .and_then(|t| t.sub.as_deref())
            .unwrap_or("")
    }
    fn jti(&self) -> &str {
        self.token
            .as_ref()
            .and_then(|t| t.jti.as_deref())
            .unwrap_or("")
    }
}

type Refusal = (Reject, Option<OnUpgrade>);

async fn accept(
    gw: &Arc<Gateway>,
    state: &Arc<State>,
    conn: &ConnInfo,
    mut parts: Parts,
    on_upgrade: OnUpgrade,
    ctx: &mut Ctx,
) -> Result<Response<Body>, Refusal> {
    // hyper bounds the head only approximately (its read buffer grows in
    // chunks); this makes the limit exact.
    let head_len: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if head_len > crate::listener::MAX_HEAD_BYTES {
        return Err((Reject::HeadTooLarge, None));
    }
    let path = parse_request_path(parts.uri.path())
        .map_err(|e| (Reject::BadPath(path_error_text(&e)), None))?;
    let host = request_host(&parts);
    let matched = state
        .routes
        .find(host.as_deref(), &path)
        .ok_or((Reject::NotFound, None))?;
    let route = Arc::clone(matched.route);
    let params = matched.params;
    ctx.route = Some(Arc::clone(&route));

    let ws = upgrade::check(&parts.method, parts.version, &parts.headers).map_err(|r| (r, None))?;
    ctx.accept_key = Some(ws.accept_key);
    let (_, app_protocols) = sources::split_subprotocols(&parts.headers);
    ctx.offered = offered_protocols(&parts.headers);
    // From here on a refusal may be answered with a close (`reject: close`),
    // which needs the upgrade future.
    let on_upgrade = Some(on_upgrade);

    if let Some(allowed) = &route.cfg.origins {
        // Every Origin present must be allowed: checking only the first would
        // let a second, foreign one through.
        let ok = parts.headers.get_all(header::ORIGIN).iter().all(|origin| {
            origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
        }) && parts.headers.get_all(header::ORIGIN).iter().count() <= 1;
        if !ok {
            return Err((Reject::OriginNotAllowed, on_upgrade));
        }
    }

    let mut found = None;
    if route.cfg.auth == AuthMode::Required {
        found = sources::extract(&route.token_sources, &parts);
        let Some(f) = &found else {
            if route.token_sources.contains(&TokenSource::FirstMessage) {
                return Ok(first_message::start(
                    gw, state, conn, parts, route, params, ctx, on_upgrade,
                ));
            }
            return Err((Reject::MissingToken, on_upgrade));
        };
        let token = match verify(gw, state, &route, &f.token).await {
            Ok(t) => t,
            Err(r) => return Err((r, on_upgrade)),
        };
        ctx.token = Some(Arc::clone(&token));
        if let Err(failure) = route.rules.check(&token.claims, &params) {
            tracing::debug!(route = %route.id, rule = failure.index, claim = %failure.claim, "rule failed");
            return Err((Reject::Forbidden("forbidden"), on_upgrade));
        }
    }

    let accepted = Accepted {
        route: Arc::clone(&route),
        params,
        token: ctx.token.clone(),
    };
    let guard = session::register(gw, &accepted, conn).map_err(|r| (r, None))?;
    let upstream_req = upstream_request(&accepted, conn, &mut parts, found.as_ref(), app_protocols)
        .map_err(|r| (r, None))?;
    let connected = route
        .upstreams
        .connect(&upstream_req)
        .await
        .map_err(|e| (Reject::Upstream(e), None))?;

    let protocol = match (&connected.protocol, &found) {
        (Some(p), _) => Some(p.clone()),
        (
            None,
            Some(Found {
                source: TokenSource::Subprotocol,
                ..
            }),
        ) => Some("bearer".to_owned()),
        (None, _) => None,
    };
    let accept_key = ctx.accept_key.clone().unwrap_or_default();
    let on_upgrade =
        on_upgrade.ok_or((Reject::BadUpgrade("connection cannot be upgraded"), None))?;
    session::spawn(gw, accepted, guard, connected, on_upgrade);
    Ok(switching_protocols(&accept_key, protocol.as_deref()))
}

/// Verifies a token and checks it against the revocation list.
pub(crate) async fn verify(
    gw: &Gateway,
    state: &State,
    route: &Route,
    token: &str,
) -> Result<Arc<VerifiedToken>, Reject> {
    let verified = state
        .auth
        .verify(token, route.cfg.issuers.as_deref())
        .await
        .map_err(|e| Reject::InvalidToken(e.description()))?;
    if gw.is_revoked(&verified) {
        return Err(Reject::InvalidToken("token revoked"));
    }
    Ok(verified)
}

fn refuse(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    reject: Reject,
    on_upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    let close_mode = ctx
        .route
        .as_ref()
        .is_some_and(|r| r.cfg.reject == RejectMode::Close);
    if let (true, Some((code, reason)), Some(on_upgrade), Some(key)) = (
        close_mode,
        reject.close_instead(),
        on_upgrade,
        ctx.accept_key.as_deref(),
    ) {
        // The client's offer must be answered, or a browser fails the
        // connection before it can read the close code.
        let protocol = answer_protocol(&ctx.offered);
        session::spawn_refusal(gw, on_upgrade, code, reason);
        return switching_protocols(key, protocol);
    }
    reject.response()
}

/// The subprotocol a 101 answers with when no upstream chose one: `bearer`
/// when the client authenticated that way, else its first offer.
fn answer_protocol(offered: &[String]) -> Option<&str> {
    if offered.iter().any(|p| p.eq_ignore_ascii_case("bearer")) {
        return Some("bearer");
    }
    offered.first().map(String::as_str)
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

pub(crate) fn switching_protocols(accept_key: &str, protocol: Option<&str>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

fn request_host(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
}

fn path_error_text(e: &crate::route::pattern::PathError) -> &'static str {
    use crate::route::pattern::PathError as P;
    match e {
        P::DotSegment => "dot segment",
        P::EmptySegment => "empty segment",
        P::EncodedSlash => "encoded slash",
        P::Parameter => "path parameter",
        _ => "malformed path",
    }
}

/// Headers never copied from the client: hop-by-hop and handshake headers
/// (the gateway makes its own), and forwarding headers (the gateway sets
/// them; a client must not be able to claim an address or identity).
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
];

/// The request the upstream receives: the client's path and query (token
/// stripped), its other headers, the identity headers built from claims and
/// the forwarding headers.
pub(crate) fn upstream_request(
    accepted: &Accepted,
    conn: &ConnInfo,
    parts: &mut Parts,
    found: Option<&Found>,
    app_protocols: Vec<String>,
) -> Result<UpstreamRequest, Reject> {
    let route = &accepted.route;
    let original_host = parts.headers.get(header::HOST).cloned();
    if let (Some(f), TokenForward::Strip) = (found, route.cfg.forward.token) {
        sources::strip(parts, f);
    }
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let path = match &route.upstream_path {
        Some(t) => t.render_path(&accepted.params),
        None => parts.uri.path().to_owned(),
    };
    let subprotocols = match (found, route.cfg.forward.token) {
        // `keep` forwards the whole offer, token included.
        (
            Some(Found {
                source: TokenSource::Subprotocol,
                ..
            }),
            TokenForward::Keep,
        ) => offered_protocols(&parts.headers),
        _ => app_protocols,
    };

    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(parts.headers.len() + 4);
    for (name, value) in parts.headers.iter() {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || route.forward_headers.iter().any(|(f, _)| f == name) {
            continue;
        }
        headers.push((name.clone(), value.clone()));
    }
    let empty = serde_json::Value::Null;
    let claims = accepted.token.as_ref().map(|t| &t.claims).unwrap_or(&empty);
    for (name, template) in &route.forward_headers {
        let value = template.render(claims, &accepted.params);
        // A claim can carry anything; CR/LF would inject headers upstream.
        if !is_safe_header_value(&value) {
            return Err(Reject::Forbidden("claim cannot be forwarded as a header"));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| Reject::Forbidden("claim cannot be forwarded as a header"))?;
        headers.push((name.clone(), value));
    }
    if let Ok(v) = HeaderValue::from_str(&conn.remote.ip().to_string()) {
        headers.push((HeaderName::from_static("x-forwarded-for"), v));
    }
    headers.push((
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    ));
    if let Some(h) = original_host {
        headers.push((HeaderName::from_static("x-forwarded-host"), h));
    }
    Ok(UpstreamRequest {
        path_and_query: format!("{path}{query}"),
        subprotocols,
        headers,
    })
}
