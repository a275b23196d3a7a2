//! Plain HTTP on a route with `http: proxy`: the request is located and
//! admitted exactly like a handshake ([`crate::handshake::locate`], then the
//! one [`admit`] step: origins, token, revocation, rules, identity headers),
//! its upstream request is built by the handshake's own
//! [`forward::upstream_request`] (token carriers stripped, spoofable
//! identity and forwarding headers dropped), and it is sent with the route's
//! pooled client ([`crate::pool`]) to the upstream's `http://` / `https://`
//! form, on the URL [`crate::affinity`] and the balancer pick. Bodies stream
//! both ways.
//!
//! [`serve`] is what the listener calls for every request: WebSocket
//! upgrades go on to [`crate::handshake::handle`]; plain requests stay here,
//! and on a route without `http: proxy` get the handshake's 426.
//!
//! Request smuggling: hyper parses the client side and writes the upstream
//! side itself, so the two never disagree on where a request ends; on top,
//! a request whose framing is ambiguous (`Content-Length` with
//! `Transfer-Encoding`, a transfer coding other than `chunked`) is refused
//! with 400 and `Connection: close` before anything is sent upstream, and a
//! body that breaks off or carries a malformed chunk ends the connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use crate::auth::sources;
use crate::config::AuthMode;
use crate::gateway::Gateway;
use crate::handshake::admit::{self, Attempt, Credential};
use crate::handshake::forward::{self, Forward};
use crate::handshake::{self, ConnInfo, Located, Reject};
use crate::pool::{upstream_uri, ClientBody, HttpProxy};
use crate::snapshot::{Route, Snapshot};
use crate::upstream::UpstreamError;

/// What the listener sends: a gateway-made answer or an upstream's body,
/// streamed as it arrives.
pub type ResponseBody = Either<Full<Bytes>, Incoming>;

/// Serves one request on a gateway listener.
pub async fn serve(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if is_upgrade(req.headers()) {
        return handshake::handle(gw, conn, req).await.map(Either::Left);
    }
    let started = Instant::now();
    let snapshot = gw.snapshot.load_full();
    let (parts, body) = req.into_parts();
    // Only a plain request that reaches an `http: proxy` route is served
    // here; any other (404, 400, the 426 of a WebSocket route) is the
    // handshake's to answer, count and log, as it always was.
    let located = match handshake::locate(&snapshot, &parts) {
        Ok(l) if l.route.http.is_some() => l,
        Ok(_) | Err(_) => {
            let req = Request::from_parts(parts, body);
            return handshake::handle(gw, conn, req).await.map(Either::Left);
        }
    };
    let method = parts.method.clone();
    let route = Arc::clone(&located.route.id);
    let result = proxy(&gw, &snapshot, &conn, located, parts, body).await;
    let route = &*route;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(resp) => {
            tracing::debug!(route, remote = %conn.remote, %method, status = resp.status().as_u16(), duration_ms = ms, "http request proxied");
            resp
        }
        Err(reject) => {
            tracing::info!(
                route, remote = %conn.remote, %method, outcome = ?reject.outcome(), reason = %reject,
                status = reject.status().as_u16(), duration_ms = ms, "http request refused"
            );
            reject.response().map(Either::Left)
        }
    }
}

/// Whether the request asks for a protocol switch; everything else is plain
/// HTTP. The same line the handshake draws for its 426.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) || headers.contains_key(header::SEC_WEBSOCKET_KEY)
}

async fn proxy(
    gw: &Arc<Gateway>,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    located: Located,
    mut parts: Parts,
    body: Incoming,
) -> Result<Response<ResponseBody>, Reject> {
    let Located {
        host,
        route,
        params,
    } = located;
    let Some(proxy) = &route.http else {
        return Err(Reject::NotWebSocket);
    };
    check_framing(&parts.headers)?;

    let found = match route.cfg.auth {
        AuthMode::Required => sources::extract(&proxy.sources, &parts),
        AuthMode::None => None,
    };
    let origins = admit::origins(&parts.headers);
    let attempt = Attempt {
        route: &route,
        params: &params,
        origins: &origins,
        credential: match &found {
            Some(f) => Credential::Presented(&f.token),
            None => Credential::Absent,
        },
    };
    let admission = admit::admit(gw, snapshot, attempt).await?;
    // Plain requests hold no session, so the per-subject limit does not
    // apply; a gateway full of sessions refuses them too.
    drop(admit::reserve(gw, &route)?);
    let upstream_req = forward::upstream_request(
        Forward {
            route: &route,
            params: &params,
            conn,
            authority: host.as_deref(),
            found: found.as_ref(),
            app_protocols: Vec::new(),
            identity: admission.headers,
            claims: &admission.claims,
        },
        &mut parts,
    );
    send(&route, proxy, &parts, upstream_req, body).await
}

/// Refuses a request whose end the gateway and an upstream could read
/// differently (RFC 9112 §6.1, §6.3).
fn check_framing(headers: &HeaderMap) -> Result<(), Reject> {
    let te: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if te.is_empty() {
        return Ok(());
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(Reject::BadRequest("Content-Length with Transfer-Encoding"));
    }
    let only_chunked = te.len() == 1 && te[0].as_bytes().eq_ignore_ascii_case(b"chunked");
    if !only_chunked {
        return Err(Reject::BadRequest("unsupported Transfer-Encoding"));
    }
    Ok(())
}

/// Sends the request to the first upstream that takes it. Without a body,
/// a URL that refuses or times out gives way to the next (as for a
/// session); a body can be sent only once, so a request with one goes to
/// the balancer's pick alone.
async fn send(
    route: &Route,
    proxy: &HttpProxy,
    parts: &Parts,
    upstream_req: crate::upstream::UpstreamRequest,
    body: Incoming,
) -> Result<Response<ResponseBody>, Reject> {
    let bodiless = body.is_end_stream();
    let mut body = Some(body);
    let urls = route.upstreams.urls();
    let mut last = None;
    for index in route.upstreams.order(upstream_req.affinity) {
        let url = &urls[index];
        let inner = if bodiless { None } else { body.take() };
        if !bodiless && inner.is_none() {
            break;
        }
        let (client_body, failed) = ClientBody::new(inner);
        let uri = upstream_uri(url, &upstream_req.path_and_query).map_err(|_| {
            Reject::Upstream(UpstreamError::Protocol {
                url: url.to_string(),
                what: "request target cannot be sent upstream",
            })
        })?;
        let mut req = Request::new(client_body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        for (name, value) in &upstream_req.headers {
            // hyper answers `Expect: 100-continue` to the client itself.
            if name != header::EXPECT {
                headers.append(name.clone(), value.clone());
            }
        }
        match proxy.client.request(req).await {
            Ok(resp) => return Ok(response(resp)),
            Err(_) if failed.load(Ordering::Acquire) => {
                return Err(Reject::BadRequest("malformed request body"))
            }
            Err(e) => {
                let e = upstream_error(e, &url.to_string());
                tracing::debug!(route = %route.id, error = %e, "upstream request failed");
                let retry = e.is_connect() && bodiless;
                last = Some(e.into_inner());
                if !retry {
                    break;
                }
            }
        }
    }
    Err(Reject::Upstream(last.unwrap_or(UpstreamError::Protocol {
        url: String::new(),
        what: "no upstream configured",
    })))
}

/// An upstream failure, and whether it happened before the request left
/// (so another URL may take it).
enum Failure {
    Connect(UpstreamError),
    Exchange(UpstreamError),
}

impl Failure {
    fn is_connect(&self) -> bool {
        matches!(self, Failure::Connect(_))
    }
    fn into_inner(self) -> UpstreamError {
        match self {
            Failure::Connect(e) | Failure::Exchange(e) => e,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Exchange(e) => e.fmt(f),
        }
    }
}

/// The dialer's own error when connecting failed (refused 502, timeout
/// 504, TLS 502); a broken exchange with a live upstream is a 502.
fn upstream_error(e: hyper_util::client::legacy::Error, url: &str) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(u) = s.downcast_ref::<UpstreamError>() {
            return Failure::Connect(clone_error(u));
        }
        source = s.source();
    }
    let io = std::io::Error::other(e.to_string());
    if e.is_connect() {
        return Failure::Connect(UpstreamError::Unreachable {
            url: url.to_owned(),
            source: io,
        });
    }
    Failure::Exchange(UpstreamError::Unreachable {
        url: url.to_owned(),
        source: io,
    })
}

/// The pool keeps the dialer's error behind a reference; what the client is
/// told only needs its kind.
fn clone_error(e: &UpstreamError) -> UpstreamError {
    match e {
        UpstreamError::Refused { url } => UpstreamError::Refused { url: url.clone() },
        UpstreamError::Unreachable { url, source } => UpstreamError::Unreachable {
            url: url.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        UpstreamError::Timeout { url } => UpstreamError::Timeout { url: url.clone() },
        UpstreamError::Tls { url, source } => UpstreamError::Tls {
            url: url.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        UpstreamError::Status { url, status } => UpstreamError::Status {
            url: url.clone(),
            status: *status,
        },
        UpstreamError::Protocol { url, what } => UpstreamError::Protocol {
            url: url.clone(),
            what,
        },
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) of the upstream's response: they
/// describe the upstream connection, not the client's.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// The upstream's response as the client gets it: status, headers minus
/// hop-by-hop ones, and the body streamed.
fn response(resp: Response<Incoming>) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let named: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        parts.headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        parts.headers.remove(name);
    }
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, Either::Right(body))
}
