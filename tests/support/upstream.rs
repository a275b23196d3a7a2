//! Upstream servers for the gateway to talk to: an echo WebSocket server
//! that records what it received, and raw TCP servers that misbehave.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::WAIT;

/// What one upstream connection saw.
#[derive(Debug, Clone, Default)]
pub struct UpConn {
    /// Request target: path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// Offered subprotocols, in order.
    pub protocols: Vec<String>,
    /// The subprotocol this server selected.
    pub selected: Option<String>,
    /// Every message received (including pings and the close).
    pub received: Vec<Message>,
    /// The close frame received from the gateway, if any.
    pub close: Option<(u16, String)>,
    /// The connection is over.
    pub ended: bool,
}

impl UpConn {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Which subprotocol the echo server selects.
#[derive(Debug, Clone)]
pub enum Select {
    None,
    /// This one, when offered.
    This(String),
    /// The first offered.
    First,
}

/// A WebSocket echo server in the test process.
///
/// Text commands: `close` drops the TCP connection without a close frame,
/// `graceful <code> <reason>` sends a close frame, `slow` stops reading,
/// `flood <MiB>` sends that much binary data as fast as the gateway takes it.
/// Anything else (text or binary) is echoed.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<UpConn>>>>>,
    /// Bytes the `flood` command got written so far.
    pub flooded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        Self::start_with(Select::None, None).await
    }

    pub async fn selecting(select: Select) -> EchoUpstream {
        Self::start_with(select, None).await
    }

    /// With `tls`, serves wss://.
    pub async fn start_with(
        select: Select,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<Mutex<UpConn>>>>> = Arc::default();
        let flooded = Arc::new(AtomicU64::new(0));
        let task = {
            let conns = Arc::clone(&conns);
            let flooded = Arc::clone(&flooded);
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let conns = Arc::clone(&conns);
                    let select = select.clone();
                    let tls = tls.clone();
                    let flooded = Arc::clone(&flooded);
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(tcp).await {
                                    serve(s, conns, select, flooded).await
                                }
                            }
                            None => serve(tcp, conns, select, flooded).await,
                        }
                    });
                }
            })
        };
        EchoUpstream {
            addr,
            conns,
            flooded,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Snapshots of every connection so far, in accept order.
    pub fn conns(&self) -> Vec<UpConn> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// How many connections have received a close frame so far.
    pub fn closed(&self) -> usize {
        self.conns().iter().filter(|c| c.close.is_some()).count()
    }

    /// The `i`th connection (waiting for it to arrive).
    pub async fn conn(&self, i: usize) -> UpConn {
        assert!(
            super::eventually(WAIT, || self.count() > i).await,
            "upstream connection #{i} never arrived"
        );
        self.conns()[i].clone()
    }

    /// Waits until connection `i` has received a close frame and returns it.
    pub async fn close_of(&self, i: usize) -> (u16, String) {
        let ok = super::eventually(WAIT, || {
            self.conns().get(i).is_some_and(|c| c.close.is_some())
        })
        .await;
        assert!(
            ok,
            "upstream connection #{i} got no close frame: {:?}",
            self.conns().get(i)
        );
        self.conns()[i].close.clone().unwrap()
    }

    /// Waits until connection `i` is over.
    pub async fn wait_ended(&self, i: usize) -> bool {
        super::eventually(WAIT, || self.conns().get(i).is_some_and(|c| c.ended)).await
    }
}

async fn serve<S>(
    stream: S,
    conns: Arc<Mutex<Vec<Arc<Mutex<UpConn>>>>>,
    select: Select,
    flooded: Arc<AtomicU64>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rec = Arc::new(Mutex::new(UpConn::default()));
    let cb_rec = Arc::clone(&rec);
    // The signature is tungstenite's callback type; the large error is theirs.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let mut c = cb_rec.lock().unwrap();
        c.target = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        c.headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        c.protocols = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let chosen = match &select {
            Select::None => None,
            Select::This(p) => c.protocols.iter().find(|o| *o == p).cloned(),
            Select::First => c.protocols.first().cloned(),
        };
        if let Some(p) = &chosen {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
        }
        c.selected = chosen;
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    conns.lock().unwrap().push(Arc::clone(&rec));
    loop {
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            _ => break,
        };
        rec.lock().unwrap().received.push(msg.clone());
        match msg {
            Message::Text(t) => {
                let s = t.as_str();
                if s == "close" {
                    // Drop the TCP connection without a close frame.
                    rec.lock().unwrap().ended = true;
                    drop(ws);
                    return;
                } else if let Some(rest) = s.strip_prefix("graceful ") {
                    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                    let code: u16 = code.parse().unwrap_or(1000);
                    let _ = ws
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.to_owned().into(),
                        })))
                        .await;
                } else if s == "slow" {
                    // Hold the connection without reading from it.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                } else if let Some(mib) = s.strip_prefix("flood ") {
                    let mib: u64 = mib.parse().unwrap_or(1);
                    let chunk = vec![0x5au8; 64 * 1024];
                    for _ in 0..mib * 16 {
                        if ws.send(Message::binary(chunk.clone())).await.is_err() {
                            break;
                        }
                        flooded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                } else if ws.send(Message::Text(t)).await.is_err() {
                    break;
                }
            }
            Message::Binary(b) => {
                if ws.send(Message::Binary(b)).await.is_err() {
                    break;
                }
            }
            Message::Close(f) => {
                rec.lock().unwrap().close = Some(match f {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (1005, String::new()),
                });
                // tungstenite answers the close; keep polling to finish.
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    rec.lock().unwrap().ended = true;
}

/// A TCP server that accepts connections and never answers (for 504).
pub async fn silent_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// A server that answers every request with `status` (for a non-101
/// upstream answer).
pub async fn status_upstream(status: u16) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let resp = format!(
                    "HTTP/1.1 {status} Upstream Says No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

async fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// A loopback port with nothing listening (for 502).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}
