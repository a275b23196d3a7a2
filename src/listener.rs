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

// Request heads above this size get 431 (hyper's buffer limit catches the
// gross cases, `handshake` the exact one); a JWT plus ordinary headers fits.
use crate::handshake::MAX_HEAD_BYTES;
/// Header lines above this count get 431.
const MAX_HEADERS: usize = 128;

pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
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
        let workers = &gw.workers;
        let gw = Arc::clone(&gw);
        let tls = tls.clone();
        let cancel = cancel.clone();
        let task = conns.track_future(async move {
            let tcp = match into_tokio(tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "accepted socket unusable");
                    return;
                }
            };
            let timeout = gw.snapshot.load().config.limits.handshake_timeout;
            let info = ConnInfo {
                remote,
                tls: tls.is_some(),
            };
            match tls {
                None => serve_http(gw, tcp, info, timeout, cancel).await,
                Some(config) => {
                    match tokio::time::timeout(timeout, crate::tls::stream::accept(tcp, config))
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

/// Registers a moved socket (still non-blocking) with the calling worker's runtime.
fn into_tokio(tcp: std::net::TcpStream) -> io::Result<TcpStream> {
    let tcp = TcpStream::from_std(tcp)?;
    let _ = tcp.set_nodelay(true);
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
    let svc = service_fn(move |req| {
        let gw = Arc::clone(&gw);
        let info = info.clone();
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
