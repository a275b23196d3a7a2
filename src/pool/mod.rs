//! The pooled HTTP/1.1 client of one `http: proxy` route ([`HttpProxy`]),
//! built with the route's snapshot: hyper's pooling
//! client over the same dialer as the WebSocket leg ([`crate::upstream::dial`]:
//! TCP, TLS for `https://` with the route's `upstream.ca`), bounded by
//! `connect_timeout`. Connections are kept alive and reused per upstream
//! URL; a reload builds new routes and so new pools, and the old ones close
//! as their last request ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::TlsConnector;

pub mod body;

use crate::config::{TokenSource, UpstreamUrl};
use crate::upstream::{dial, UpstreamError, UpstreamIo};
pub use body::ClientBody;

/// How long an idle upstream connection is kept for reuse. Below the usual
/// server keep-alive timeouts (60 s in nginx, 75 s in Node) would be safer
/// still, but those servers close idle connections cleanly, and a request
/// that meets a closing connection is retried by the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Idle connections kept per upstream URL.
const MAX_IDLE_PER_URL: usize = 256;

/// What a route with `http: proxy` keeps for plain requests.
pub struct HttpProxy {
    pub client: HttpClient,
    /// The route's token sources a plain request can carry (`header`,
    /// `query`, `cookie`), in the route's order.
    pub sources: Vec<TokenSource>,
}

impl HttpProxy {
    pub fn new(client: HttpClient, sources: &[TokenSource]) -> Self {
        let sources = sources
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    TokenSource::Header | TokenSource::Query(_) | TokenSource::Cookie(_)
                )
            })
            .cloned()
            .collect();
        Self { client, sources }
    }
}

/// The route's pooled client.
pub struct HttpClient {
    client: Client<Dialer, ClientBody>,
}

impl HttpClient {
    pub fn new(tls: Option<TlsConnector>, connect_timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_URL)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(Dialer {
                tls,
                connect_timeout,
            });
        Self { client }
    }

    pub fn request(
        &self,
        req: http::Request<ClientBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        self.client.request(req)
    }
}

/// The `http://` / `https://` form of an upstream URL, with `path_and_query`
/// appended to its base path.
pub fn upstream_uri(url: &UpstreamUrl, path_and_query: &str) -> Result<Uri, http::Error> {
    let scheme = if url.tls { "https" } else { "http" };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    Uri::builder()
        .scheme(scheme)
        .authority(format!("{host}:{}", url.port))
        .path_and_query(format!("{}{path_and_query}", url.base_path))
        .build()
}

/// Connects to the authority of the URI the pool asks for.
#[derive(Clone)]
pub struct Dialer {
    tls: Option<TlsConnector>,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = PooledIo;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<PooledIo, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let url = url_of(&uri)?;
            let name = uri.to_string();
            match tokio::time::timeout(timeout, dial(tls.as_ref(), &url, &name)).await {
                Ok(io) => Ok(PooledIo(TokioIo::new(io?))),
                Err(_) => Err(UpstreamError::Timeout { url: name }),
            }
        })
    }
}

/// The pool only asks for URIs made by [`upstream_uri`].
fn url_of(uri: &Uri) -> Result<UpstreamUrl, UpstreamError> {
    let bad = || UpstreamError::Protocol {
        url: uri.to_string(),
        what: "not an upstream URL",
    };
    let tls = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(bad)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().ok_or_else(bad)?;
    Ok(UpstreamUrl {
        tls,
        host,
        port,
        base_path: String::new(),
    })
}

/// An upstream connection as the pool holds it.
pub struct PooledIo(TokioIo<UpstreamIo>);

impl Connection for PooledIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for PooledIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for PooledIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
