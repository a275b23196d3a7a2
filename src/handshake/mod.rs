//! One WebSocket handshake, from request to `101 Switching Protocols`.
//!
//! [`handle`] reads top to bottom in the order the checks run:
//! path → route → upgrade → [`admit`] (origin → token → verify → revocation
//! → rules) → limits → upstream → 101. Every refusal is a [`Reject`]; the
//! single exit in [`handle`] turns it into a response (or a close, with
//! `reject: close`), counts it and logs it once.
//!
//! With the `first_message` source the order changes after the upgrade
//! checks: the client gets its 101 first, and [`first_message`] takes the
//! token from its first frame, then admits it with the same [`admit`].
//! [`refresh`] judges an in-band refresh with it too, and a reload re-checks
//! every live session with [`admit::recheck`].

pub mod admit;
pub mod authority;
mod first_message;
pub(crate) mod forward;
pub mod refresh;
pub mod reject;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::auth::sources::{self, Found};
use crate::auth::VerifiedToken;
use crate::config::{AuthMode, RejectMode, TokenSource};
use crate::gateway::Gateway;
use crate::metrics::Outcome;
use crate::route::pattern::parse_request_path;
use crate::session::Admitted;
use crate::snapshot::{Route, Snapshot};
use admit::{Attempt, Credential, Registration};
pub use reject::{Body, Reject};

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// The connection's place among the pending ones (`limits.max_pending`),
    /// freed when the last holder drops it: the connection task after the
    /// 101, or a `first_message` task once the first message is judged.
    pub pending: Option<Arc<crate::pending::Permit>>,
    /// The `X-Forwarded-For` for the upstream when the peer is a trusted
    /// proxy: its incoming chain with the peer appended. `None`: the
    /// client's address alone.
    pub forwarded_for: Option<Arc<str>>,
}

/// Serves one request on a gateway listener.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let trace = gw
        .tracer
        .get()
        .map(|t| t.handshake(req.headers(), std::time::SystemTime::now()));
    let (parts, _body) = req.into_parts();
    let snapshot = gw.snapshot.load_full();

    let mut ctx = Ctx {
        traceparent: trace.as_ref().and_then(|t| t.header()),
        ..Ctx::default()
    };
    let result = accept(&gw, &snapshot, &conn, parts, on_upgrade, &mut ctx).await;
    let route_id = ctx.route.as_ref().map_or("", |r| &*r.id);
    let token = ctx.token.as_deref();
    match result {
        // The first-message task records the handshake once it is decided.
        Ok(resp) if ctx.deferred => {
            end_trace(trace, &ctx, route_id, "first_message", 101, None);
            resp
        }
        Ok(resp) => {
            record(&gw, route_id, &conn, token, Ok(()), started, &ctx.detail);
            end_trace(trace, &ctx, route_id, "ok", 101, None);
            resp
        }
        Err((reject, on_upgrade)) => {
            record(
                &gw,
                route_id,
                &conn,
                token,
                Err(&reject),
                started,
                &ctx.detail,
            );
            let outcome = format!("{:?}", reject.outcome());
            let status = reject.status().as_u16();
            end_trace(
                trace,
                &ctx,
                route_id,
                &outcome,
                status,
                Some(reject.to_string()),
            );
            refuse(&gw, &ctx, reject, on_upgrade)
        }
    }
}

/// Ends the handshake's span, when traces are on.
fn end_trace(
    trace: Option<crate::telemetry::trace::HandshakeSpan>,
    ctx: &Ctx,
    route: &str,
    outcome: &str,
    status: u16,
    error: Option<String>,
) {
    let Some(span) = trace else {
        return;
    };
    span.end(&crate::telemetry::trace::HandshakeOutcome {
        route,
        outcome,
        status,
        issuer: ctx.token.as_deref().map(|t| t.issuer_id.as_str()),
        admission_seconds: ctx.admission_seconds,
        upstream_connect_seconds: ctx.connect_seconds,
        error,
    });
}

/// The single place a handshake's outcome is counted and logged, whether it
/// was decided before the 101 or on a first message after it.
fn record(
    gw: &Gateway,
    route: &str,
    conn: &ConnInfo,
    token: Option<&VerifiedToken>,
    result: Result<(), &Reject>,
    started: Instant,
    detail: &Detail,
) {
    let path = &*detail.path;
    let host = detail.host.as_deref().unwrap_or("");
    let upstream = detail.upstream.as_deref().unwrap_or("");
    let session = detail.session;
    let elapsed = started.elapsed().as_secs_f64();
    let field = |f: fn(&VerifiedToken) -> Option<&str>| token.and_then(f).unwrap_or("");
    let iss = field(|t| t.iss.as_deref());
    let sub = field(|t| t.sub.as_deref());
    let jti = field(|t| t.jti.as_deref());
    match result {
        Ok(()) => {
            gw.metrics.handshake(route, Outcome::ok, elapsed);
            tracing::info!(
                route, remote = %conn.remote, path, host, upstream, session, iss, sub, jti, outcome = "ok",
                duration_ms = elapsed * 1000.0, "handshake accepted"
            );
        }
        Err(reject) => {
            gw.metrics.handshake(route, reject.outcome(), elapsed);
            tracing::info!(
                route, remote = %conn.remote, path, host, upstream, session, iss, sub, jti, outcome = ?reject.outcome(),
                reason = %reject, status = reject.status().as_u16(),
                close_code = reject.close_code(), duration_ms = elapsed * 1000.0,
                "handshake refused"
            );
        }
    }
}

/// Where a handshake was going, for its log line: the session id is the
/// one `/admin/sessions` lists.
#[derive(Default)]
struct Detail {
    path: Box<str>,
    host: Option<Box<str>>,
    upstream: Option<String>,
    session: Option<crate::session::SessionId>,
}

/// What the handshake learned so far, for the log line and for `reject: close`.
#[derive(Default)]
struct Ctx {
    detail: Detail,
    route: Option<Arc<Route>>,
    token: Option<Arc<VerifiedToken>>,
    /// Set once the request is known to be a valid upgrade.
    accept_key: Option<String>,
    /// The client's offered subprotocols (raw entries, in order).
    offered: Vec<String>,
    /// The first-message task counts and logs the handshake itself.
    deferred: bool,
    /// The handshake span's `traceparent`, sent upstream (traces on).
    traceparent: Option<HeaderValue>,
    /// Time spent in admission (verify, revocation, rules), for the trace.
    admission_seconds: Option<f64>,
    /// Time spent connecting to the upstream, for the trace.
    connect_seconds: Option<f64>,
}

type Refusal = (Reject, Option<OnUpgrade>);

async fn accept(
    gw: &Arc<Gateway>,
    snapshot: &Arc<Snapshot>,
    conn: &ConnInfo,
    mut parts: Parts,
    on_upgrade: OnUpgrade,
    ctx: &mut Ctx,
) -> Result<Response<Body>, Refusal> {
    let Located {
        host,
        route,
        params,
    } = locate(snapshot, &parts).map_err(|r| (r, None))?;
    ctx.detail.path = parts.uri.path().into();
    ctx.detail.host = host.as_deref().map(Into::into);
    ctx.route = Some(Arc::clone(&route));

    let ws = upgrade::check(&parts.method, parts.version, &parts.headers).map_err(|r| (r, None))?;
    ctx.accept_key = Some(ws.accept_key);
    let (_, app_protocols) = sources::split_subprotocols(&parts.headers);
    ctx.offered = offered_protocols(&parts.headers);
    // From here on a refusal may be answered with a close (`reject: close`),
    // which needs the upgrade future.
    let on_upgrade = Some(on_upgrade);
    let admitted = Admitted {
        host: host.map(String::into_boxed_str),
        path: parts.uri.path().into(),
        origins: admit::origins(&parts.headers).into_boxed_slice(),
    };

    let found = match route.cfg.auth {
        AuthMode::Required => sources::extract(&route.token_sources, &parts),
        AuthMode::None => None,
    };
    let reads_first_message = route.first_message().is_some();
    if found.is_none() && route.cfg.auth == AuthMode::Required && reads_first_message {
        // A foreign page is refused while it can still be told with a status.
        if let Err(r) = admit::check_origins(&route, &admitted.origins) {
            return Err((r, on_upgrade));
        }
        // A connection waiting for its first message holds a session slot:
        // anonymous connections cannot get past `max_sessions` by never
        // authenticating.
        let slot = match admit::reserve(gw, &route) {
            Ok(slot) => slot,
            Err(r) => return Err((r, on_upgrade)),
        };
        let pending = first_message::Pending {
            route,
            admitted,
            parts,
            app_protocols,
            slot: Some(slot),
        };
        return Ok(first_message::start(
            gw, snapshot, conn, pending, ctx, on_upgrade,
        ));
    }
    let credential = match &found {
        Some(f) => Credential::Presented(&f.token),
        None => Credential::Absent,
    };
    let attempt = Attempt {
        route: &route,
        params: &params,
        origins: &admitted.origins,
        credential,
    };
    let admit_started = Instant::now();
    let admitted_or_not = admit::admit(gw, snapshot, attempt).await;
    ctx.admission_seconds = Some(admit_started.elapsed().as_secs_f64());
    let admission = match admitted_or_not {
        Ok(a) => a,
        Err(r) => return Err((r, on_upgrade)),
    };
    ctx.token = admission.token.clone();

    let authority = admitted.host.clone();
    let guard = admit::register(
        gw,
        Registration {
            judged: snapshot,
            route: &route,
            params: &params,
            admitted,
            token: admission.token,
            remote: conn.remote,
            slot: None,
        },
    )
    .await
    .map_err(|r| (r, None))?;
    ctx.detail.session = Some(guard.handle().id);
    let mut upstream_req = forward::upstream_request(
        forward::Forward {
            route: &route,
            params: &params,
            conn,
            authority: authority.as_deref(),
            found: found.as_ref(),
            app_protocols,
            identity: admission.headers,
            claims: &admission.claims,
        },
        &mut parts,
    );
    if let Some(tp) = &ctx.traceparent {
        // The gateway's span is the upstream's parent: a client's own
        // trace headers (trusted or not) do not go on.
        upstream_req
            .headers
            .retain(|(n, _)| n.as_str() != "traceparent" && n.as_str() != "tracestate");
        upstream_req
            .headers
            .push((http::HeaderName::from_static("traceparent"), tp.clone()));
        if let Ok(tp) = tp.to_str() {
            let _ = guard.handle().traceparent.set(tp.to_owned());
        }
    }
    let connect_started = Instant::now();
    let connected = route.upstreams.connect(&upstream_req).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    ctx.connect_seconds = Some(connect_seconds);
    gw.metrics.upstream_connect(
        &route.id,
        connect_seconds,
        connected
            .as_ref()
            .err()
            .map(crate::upstream::UpstreamError::kind),
    );
    let connected = connected.map_err(|e| (Reject::Upstream(e), None))?;
    ctx.detail.upstream = Some(connected.url.to_string());

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
    let interceptor = refresh::interceptor(gw, &route, guard.handle());
    let extensions = connected.extensions.clone();
    crate::proxy::task::spawn(gw, route, guard, connected, interceptor, on_upgrade);
    Ok(switching_protocols(
        &accept_key,
        protocol.as_deref(),
        extensions.as_deref(),
    ))
}

/// Where a request goes: its authority and route, with the path's parameters.
pub(crate) struct Located {
    pub host: Option<String>,
    pub route: Arc<Route>,
    pub params: crate::route::Params,
}

/// The checks every request on a gateway listener passes first, upgrade or
/// plain: head size, authority, path, route.
pub(crate) fn locate(snapshot: &Snapshot, parts: &Parts) -> Result<Located, Reject> {
    // hyper bounds the head only approximately (its read buffer grows in
    // chunks); this makes the limit exact.
    let head_len: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if head_len > MAX_HEAD_BYTES {
        return Err(Reject::HeadTooLarge);
    }
    let host = authority::request_authority(parts.version, &parts.uri, &parts.headers)
        .map_err(|e| Reject::BadHost(e.text()))?;
    let path =
        parse_request_path(parts.uri.path()).map_err(|e| Reject::BadPath(path_error_text(&e)))?;
    let matched = snapshot
        .routes
        .find(host.as_deref(), &path)
        .ok_or(Reject::NotFound)?;
    Ok(Located {
        host,
        route: Arc::clone(matched.route),
        params: matched.params,
    })
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
    if let (true, true, Some(on_upgrade), Some(key)) = (
        close_mode,
        reject.closes_in_reject_mode(),
        on_upgrade,
        ctx.accept_key.as_deref(),
    ) {
        // The client's offer must be answered, or a browser fails the
        // connection before it can read the close code.
        let protocol = answer_protocol(&ctx.offered);
        crate::proxy::task::spawn_refusal(
            gw,
            on_upgrade,
            reject.close_code(),
            reject.description(),
        );
        return switching_protocols(key, protocol, None);
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

/// The 101. `extensions` is the upstream's `permessage-deflate` answer,
/// passed on (none: every offer declined).
pub(crate) fn switching_protocols(
    accept_key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Response<Body> {
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
    if let Some(e) = extensions.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, e);
    }
    resp
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
