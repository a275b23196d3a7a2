//! Accept loops: one per configured listener, on the control runtime. Each
//! accepted socket moves to one of the I/O [`crate::workers`] (registered
//! with that worker's runtime instead of the control runtime's), where it
//! gets TLS (when configured) and an HTTP/1.1 connection with upgrades, both
//! bounded by `limits.handshake_timeout` so half-sent requests cannot hold a
//! socket.
//! Accept errors (e.g. out of file descriptors) are logged and the loop goes
//! on: one bad moment must not end the listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;
use crate::handshake::ConnInfo;

pub mod proxy_protocol;

// Request heads above this size get 431 (hyper's buffer limit catches the
// gross cases, `handshake` the exact one); a JWT plus ordinary headers fits.
use crate::handshake::MAX_HEAD_BYTES;
/// Header lines above this count get 431.
const MAX_HEADERS: usize = 128;

/// How a listener takes its connections.
#[derive(Clone)]
pub struct Settings {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Read a PROXY protocol header first (`listeners[].proxy_protocol`).
    pub proxy_protocol: bool,
}

pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    settings: Settings,
    conns: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = accept(&listener) => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors: give closing sessions a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let max_pending = gw.snapshot.load().config.limits.max_pending;
        let Some(permit) = gw.pending.try_acquire(max_pending) else {
            // Closed at once: a flood of connections that never become
            // sessions must not hold memory or descriptors.
            tracing::debug!(%remote, "pending connection limit reached; closed");
            drop(tcp);
            continue;
        };
        let workers = &gw.workers;
        let gw = Arc::clone(&gw);
        let settings = settings.clone();
        let cancel = cancel.clone();
        let task = conns.track_future(async move {
            // Until the connection's task ends: its upgrade hands the
            // session to a task of its own.
            let _pending = gw.metrics.pending();
            let mut tcp = match into_tokio(tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "accepted socket unusable");
                    return;
                }
            };
            let timeout = gw.snapshot.load().config.limits.handshake_timeout;
            // The PROXY header and TLS share one deadline; the HTTP head
            // has its own (hyper's header timeout).
            let deadline = tokio::time::Instant::now() + timeout;
            let remote = if settings.proxy_protocol {
                match proxied_remote(&mut tcp, remote, deadline).await {
                    Some(r) => r,
                    None => return,
                }
            } else {
                remote
            };
            let info = ConnInfo {
                remote,
                tls: settings.tls.is_some(),
                pending: Some(Arc::new(permit)),
                forwarded_for: None,
            };
            match settings.tls {
                None => serve_http(gw, tcp, info, timeout, cancel).await,
                Some(config) => {
                    match tokio::time::timeout_at(deadline, crate::tls::stream::accept(tcp, config))
                        .await
                    {
                        Ok(Ok(stream)) => serve_http(gw, stream, info, timeout, cancel).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
        workers.spawn(task);
    }
}

/// Accepts one connection, unregistered from this runtime so that it can
/// move to a worker.
async fn accept(listener: &TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let (tcp, remote) = listener.accept().await?;
        // A socket that cannot be moved is dropped (closed); the next one
        // may well be fine.
        match tcp.into_std() {
            Ok(tcp) => return Ok((tcp, remote)),
            Err(e) => tracing::debug!(%remote, error = %e, "accepted socket unusable"),
        }
    }
}

/// The client address a PROXY protocol header gives (the peer's own for a
/// `LOCAL` or `UNKNOWN` header); `None`: the connection is refused.
async fn proxied_remote(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<SocketAddr> {
    match tokio::time::timeout_at(deadline, proxy_protocol::read_header(tcp)).await {
        Ok(Ok(proxy_protocol::Header::Proxied { source })) => Some(source),
        Ok(Ok(proxy_protocol::Header::Local)) => Some(peer),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection refused: PROXY protocol header");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "connection refused: no PROXY protocol header in time");
            None
        }
    }
}

/// The request's client, believing `X-Forwarded-For` from trusted peers.
fn with_forwarded(gw: &Gateway, info: &ConnInfo, headers: &http::HeaderMap) -> ConnInfo {
    let mut info = info.clone();
    let trusted = &gw.snapshot.load().config.trusted_proxies;
    if trusted.is_empty() {
        return info;
    }
    let xff = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let resolved = crate::client_addr::resolve(info.remote.ip(), xff, trusted);
    if resolved.client != info.remote.ip() {
        // X-Forwarded-For carries no port.
        info.remote = SocketAddr::new(resolved.client, 0);
    }
    info.forwarded_for = resolved.forwarded_for.map(Arc::from);
    info
}

/// Registers a moved socket (still non-blocking) with the calling worker's runtime.
fn into_tokio(tcp: std::net::TcpStream) -> io::Result<TcpStream> {
    let tcp = TcpStream::from_std(tcp)?;
    let _ = tcp.set_nodelay(true);
    crate::io::tcp_keepalive(&tcp);
    Ok(tcp)
}

async fn serve_http<S>(
    gw: Arc<Gateway>,
    io: S,
    info: ConnInfo,
    timeout: Duration,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let gw = Arc::clone(&gw);
        let info = with_forwarded(&gw, &info, req.headers());
        async move { Ok::<_, std::convert::Infallible>(crate::plain::serve(gw, info, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            // Let an in-flight request finish, then close; bounded by the
            // caller's shutdown grace.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
