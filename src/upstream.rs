//! Connecting to an upstream: choosing a URL (round robin or least
//! connections, the next one tried when one refuses), TCP with
//! `connect_timeout`, TLS for `wss://`, and the WebSocket client handshake.
//!
//! The client handshake is written here rather than taken from tungstenite
//! because the contract needs what tungstenite's refuses: an upstream may
//! select no subprotocol even though some were offered, and a non-101 answer
//! must reach the client with its status.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::config::{Balance, UpstreamUrl};
use crate::io::prefixed::Prefixed;

/// The largest upstream handshake response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection refused by {url}")]
    Refused { url: String },
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("connect to {url} timed out")]
    Timeout { url: String },
    #[error("TLS with {url} failed: {source}")]
    Tls {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("upstream {url} answered the handshake with {status}")]
    Status { url: String, status: StatusCode },
    #[error("upstream {url} broke the WebSocket handshake: {what}")]
    Protocol { url: String, what: &'static str },
}

impl UpstreamError {
    /// The `kind` label of `wsgate_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::Unreachable { .. } => "unreachable",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Tls { .. } => "tls",
            UpstreamError::Status { .. } => "status",
            UpstreamError::Protocol { .. } => "protocol",
        }
    }

    /// The status the client receives (the CONTRACT's handshake table).
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Refused { .. }
            | UpstreamError::Unreachable { .. }
            | UpstreamError::Tls { .. }
            | UpstreamError::Protocol { .. } => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Status { status, .. } => *status,
        }
    }
}

/// A TCP or TLS connection to an upstream.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The upstreams of one route and the balancing state over them.
pub struct Upstreams {
    urls: Vec<UpstreamUrl>,
    balance: Balance,
    connect_timeout: Duration,
    tls: Option<TlsConnector>,
    next: AtomicUsize,
    /// Open sessions per URL, for `least_connections`.
    active: Arc<Vec<AtomicUsize>>,
}

/// Holds one unit of an upstream's `least_connections` count while a session lives.
pub struct Lease {
    active: Arc<Vec<AtomicUsize>>,
    index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(a) = self.active.get(self.index) {
            a.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the gateway asks of the upstream.
pub struct UpstreamRequest {
    /// Path and query, already rewritten and stripped of a query token.
    pub path_and_query: String,
    /// Application subprotocols, in the client's order.
    pub subprotocols: Vec<String>,
    /// The client's `permessage-deflate` offers, passed on as written (see
    /// [`crate::handshake`]: only routes that let frames through untouched
    /// negotiate compression).
    pub extensions: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `balance: hash` key's hash; `None` falls back to round robin.
    pub affinity: Option<u64>,
}

/// What the upstream's 101 agreed to.
#[derive(Debug, Default)]
struct Agreed {
    protocol: Option<String>,
    /// Its `Sec-WebSocket-Extensions` answer (one `permessage-deflate`).
    extensions: Option<String>,
}

/// The upstream's stream after its 101, starting with any frames that
/// arrived together with the response head.
pub type UpstreamStream = Prefixed<UpstreamIo>;

/// A connected upstream.
pub struct Connected {
    pub io: UpstreamStream,
    /// The subprotocol the upstream selected, if any.
    pub protocol: Option<String>,
    /// The `permessage-deflate` parameters the upstream accepted, passed on
    /// to the client as its answer; frames then carry RSV1.
    pub extensions: Option<String>,
    pub lease: Lease,
    /// The URL connected to (for the log lines).
    pub url: UpstreamUrl,
}

impl Upstreams {
    pub fn new(
        urls: Vec<UpstreamUrl>,
        balance: Balance,
        connect_timeout: Duration,
        tls: Option<TlsConnector>,
    ) -> Self {
        let active = Arc::new(urls.iter().map(|_| AtomicUsize::new(0)).collect());
        Self {
            urls,
            balance,
            connect_timeout,
            tls,
            next: AtomicUsize::new(0),
            active,
        }
    }

    pub fn urls(&self) -> &[UpstreamUrl] {
        &self.urls
    }

    pub fn balance(&self) -> &Balance {
        &self.balance
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The order in which URLs are tried for one session (or one plain
    /// request): the balancer's pick first, then the others in file order
    /// from there. With `hash`, one affinity always starts at the same URL
    /// (modulo the URL count: adding a URL moves most keys).
    pub fn order(&self, affinity: Option<u64>) -> Vec<usize> {
        let n = self.urls.len();
        let round_robin = || self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let first = match (&self.balance, affinity) {
            (Balance::Hash(_), Some(h)) => (h % n.max(1) as u64) as usize,
            (Balance::RoundRobin | Balance::Hash(_), _) => round_robin(),
            (Balance::LeastConnections, _) => (0..n)
                .min_by_key(|i| self.active[*i].load(Ordering::Relaxed))
                .unwrap_or(0),
        };
        (0..n).map(|i| (first + i) % n).collect()
    }

    /// Connects to the first URL that accepts; a URL that refuses, cannot be
    /// reached or times out gives way to the next. An upstream that answers
    /// its handshake with a status ends the search: it is alive and said no.
    pub async fn connect(&self, req: &UpstreamRequest) -> Result<Connected, UpstreamError> {
        let mut last_err = None;
        for index in self.order(req.affinity) {
            let url = &self.urls[index];
            self.active[index].fetch_add(1, Ordering::Relaxed);
            let lease = Lease {
                active: Arc::clone(&self.active),
                index,
            };
            match self.connect_one(url, req).await {
                Ok((io, agreed)) => {
                    return Ok(Connected {
                        io,
                        protocol: agreed.protocol,
                        extensions: agreed.extensions,
                        lease,
                        url: url.clone(),
                    })
                }
                Err(e @ (UpstreamError::Status { .. } | UpstreamError::Protocol { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upstream attempt failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(UpstreamError::Protocol {
            url: String::new(),
            what: "no upstream configured",
        }))
    }

    async fn connect_one(
        &self,
        url: &UpstreamUrl,
        req: &UpstreamRequest,
    ) -> Result<(UpstreamStream, Agreed), UpstreamError> {
        let name = url.to_string();
        let attempt = async {
            let mut io = dial(self.tls.as_ref(), url, &name).await?;
            let (agreed, leftover) = client_handshake(&mut io, url, req, &name).await?;
            Ok((Prefixed::new(leftover, io), agreed))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout { url: name }),
        }
    }
}

/// TCP, then TLS for `wss://`/`https://`; no timeout (the caller's
/// `connect_timeout` covers the whole attempt).
pub async fn dial(
    tls: Option<&TlsConnector>,
    url: &UpstreamUrl,
    name: &str,
) -> Result<UpstreamIo, UpstreamError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::ConnectionRefused => UpstreamError::Refused {
                url: name.to_owned(),
            },
            _ => UpstreamError::Unreachable {
                url: name.to_owned(),
                source,
            },
        })?;
    let _ = tcp.set_nodelay(true);
    crate::io::tcp_keepalive(&tcp);
    match (tls, url.tls) {
        (Some(connector), true) => {
            let server_name =
                rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|_| {
                    UpstreamError::Protocol {
                        url: name.to_owned(),
                        what: "host is not a valid TLS server name",
                    }
                })?;
            let tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(|source| UpstreamError::Tls {
                    url: name.to_owned(),
                    source,
                })?;
            Ok(UpstreamIo::Tls(Box::new(tls)))
        }
        (None, true) => Err(UpstreamError::Protocol {
            url: name.to_owned(),
            what: "wss:// upstream without a TLS client configuration",
        }),
        (_, false) => Ok(UpstreamIo::Plain(tcp)),
    }
}

/// Writes the upgrade request and reads the upstream's answer. Returns what
/// it agreed to and any bytes read past the response head (frames the
/// upstream sent right after its 101).
async fn client_handshake(
    io: &mut UpstreamIo,
    url: &UpstreamUrl,
    req: &UpstreamRequest,
    name: &str,
) -> Result<(Agreed, Vec<u8>), UpstreamError> {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let head = request_head(url, req, &key);
    let io_err = |source: io::Error| UpstreamError::Unreachable {
        url: name.to_owned(),
        source,
    };
    io.write_all(&head).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;

    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(protocol(name, "response head too large"));
        }
        let mut chunk = [0u8; 2048];
        let n = io.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            return Err(io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the handshake",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp
                    .code
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| protocol(name, "invalid status"))?;
                if status != StatusCode::SWITCHING_PROTOCOLS {
                    return Err(UpstreamError::Status {
                        url: name.to_owned(),
                        status,
                    });
                }
                let agreed = check_101(resp.headers, &key, req, name)?;
                break (len, agreed);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(protocol(name, "malformed response")),
        }
    };
    let (len, selected) = head_len;
    Ok((selected, buf.split_off(len)))
}

fn protocol(name: &str, what: &'static str) -> UpstreamError {
    UpstreamError::Protocol {
        url: name.to_owned(),
        what,
    }
}

fn request_head(url: &UpstreamUrl, req: &UpstreamRequest, key: &str) -> Vec<u8> {
    let default_port = if url.tls { 443 } else { 80 };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let authority = if url.port == default_port {
        host
    } else {
        format!("{host}:{}", url.port)
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(url.base_path.as_bytes());
    out.extend_from_slice(req.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !req.subprotocols.is_empty() {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(req.subprotocols.join(", ").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ext) = &req.extensions {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(ext.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &req.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn check_101(
    headers: &[httparse::Header<'_>],
    key: &str,
    req: &UpstreamRequest,
    name: &str,
) -> Result<Agreed, UpstreamError> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(n))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |v: Option<&str>, token: &str| {
        v.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(get("upgrade"), "websocket") {
        return Err(protocol(name, "101 without Upgrade: websocket"));
    }
    if !has_token(get("connection"), "upgrade") {
        return Err(protocol(name, "101 without Connection: upgrade"));
    }
    if get("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(protocol(name, "wrong Sec-WebSocket-Accept"));
    }
    let protocol_sel = match get("sec-websocket-protocol") {
        None | Some("") => None,
        Some(p) if req.subprotocols.iter().any(|o| o == p) => Some(p.to_owned()),
        Some(_) => {
            return Err(protocol(
                name,
                "selected a subprotocol that was not offered",
            ))
        }
    };
    // The relay lets RSV1 through only for `permessage-deflate`, and only
    // when it was offered: any other answer would make frames the gateway
    // cannot vouch for.
    let extensions = match get("sec-websocket-extensions") {
        None | Some("") => None,
        Some(e) if req.extensions.is_some() && crate::extensions::is_deflate_answer(e) => {
            Some(e.to_owned())
        }
        Some(_) => return Err(protocol(name, "accepted an extension that was not offered")),
    };
    Ok(Agreed {
        protocol: protocol_sel,
        extensions,
    })
}
