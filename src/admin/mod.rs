//! The admin listener: `/healthz`, `/readyz`, `/metrics` (open), and the
//! `/admin/*` API behind the admin bearer token (compared in constant time).
//!
//! - [`sessions`]: list and kill live sessions;
//! - [`revocations`]: create and list revocations, and `POST /admin/reload`;
//! - [`issuers`]: issuers' key status and the recent outcome history;
//! - [`page`]: the admin page at `/`, which calls the above.

mod issuers;
mod page;
mod revocations;
mod sessions;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;

pub type Body = Full<Bytes>;

/// Admin request bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    conns: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let gw = Arc::clone(&gw);
        let cancel = cancel.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let gw = Arc::clone(&gw);
                async move { Ok::<_, std::convert::Infallible>(route(gw, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn route(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if method == Method::GET {
        if let Some(file) = page::asset(&path) {
            return file;
        }
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            let (ready, why) = gw.readiness();
            if ready {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, &why)
            }
        }
        (&Method::GET, "/metrics") => {
            gw.metrics.set_worker_tasks(&gw.workers.loads());
            issuers::scrape_keys(&gw);
            let mut r = Response::new(Full::new(Bytes::from(gw.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (_, p) if p.starts_with("/admin/") => {
            if !authorized(&gw, &req) {
                let mut r = text(StatusCode::UNAUTHORIZED, "admin token required");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wsgate-admin\""),
                );
                return r;
            }
            admin(gw, req, &method, p.to_owned()).await
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn admin(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    method: &Method,
    path: String,
) -> Response<Body> {
    let segments: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["sessions"]) => sessions::list(&gw, req.uri().query()).await,
        (&Method::DELETE, ["sessions", id]) => sessions::kill(&gw, id).await,
        (&Method::GET, ["revocations"]) => revocations::list(&gw),
        (&Method::GET, ["issuers"]) => issuers::list(&gw),
        (&Method::GET, ["history"]) => issuers::history(&gw),
        (&Method::POST, ["revocations"]) => match read_body(req).await {
            Ok(body) => revocations::create(&gw, body).await,
            Err(r) => r,
        },
        (&Method::POST, ["reload"]) => {
            let _ = read_body(req).await;
            revocations::reload(&gw).await
        }
        (_, ["revocations"] | ["reload"]) => {
            let _ = read_body(req).await;
            revocations::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => {
            let _ = read_body(req).await;
            text(StatusCode::NOT_FOUND, "not found")
        }
    }
}

fn authorized<B>(gw: &Gateway, req: &Request<B>) -> bool {
    let state = gw.snapshot.load();
    let Some(expected) = state.config.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return false;
    };
    if expected.is_empty() {
        return false;
    }
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Reads a bounded request body.
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or unreadable",
        )),
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
