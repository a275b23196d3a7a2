//! A small harness for the revocation and admin tests: the real `wsgate`
//! binary on loopback ports learned from its log, an echo upstream in the
//! test process, HS256 tokens, a raw HTTP/1.1 admin client and a real
//! `redis-server` on a free port. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "revocation-test-secret-0123456789abcdef";
pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "wsgate-test";
pub const ADMIN: &str = "revocation-admin-token";
/// A second loopback address: the config check refuses two binds on the
/// same address even when both ask for an ephemeral port (`:0`).
const ADMIN_BIND: &str = "127.0.0.2:0";
/// Bound on anything that should happen promptly (start-up, connects).
pub const WAIT: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Config with one echo route; `revocation` is the YAML of that section.
pub fn config(upstream: SocketAddr, revocation: &str) -> String {
    format!(
        r#"log: {{ level: info, format: text }}
listeners:
  - bind: "127.0.0.1:0"
admin:
  bind: "{ADMIN_BIND}"
  token: "{ADMIN}"
issuers:
  - id: test
    issuer: "{ISS}"
    audiences: ["{AUD}"]
    algorithms: [HS256]
    keys:
      secret: "{SECRET}"
    leeway: 1s
routes:
  - id: echo
    path: /echo
    upstream: ws://{upstream}
revocation:
{revocation}
"#
    )
}

/// A token for `sub`, issued at `iat` (None: no `iat` claim), with extra claims.
pub fn token(sub: &str, jti: &str, iat: Option<i64>, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": sub, "jti": jti, "exp": now() + 600,
    });
    if let Some(iat) = iat {
        claims["iat"] = iat.into();
    }
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// An echo WebSocket upstream in the test process.
pub async fn echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// One `wsgate run` process; killed by PID when dropped.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    if !line.contains(marker) {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Gateway {
    pub fn start(config: &Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .arg("run")
            .arg("-c")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wsgate] {line}");
                let _ = tx.send(line.clone());
                log2.lock().expect("log").push(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + WAIT;
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = log.lock().map(|l| l.join("\n")).unwrap_or_default();
                    panic!("gateway did not report its listeners within {WAIT:?}; log:\n{log}");
                }
            };
            if let Some(a) = addr_after(&line, "admin listener ready") {
                admin = Some(a);
            } else if let Some(a) = addr_after(&line, "listener ready") {
                addr = Some(a);
            }
        }
        Gateway {
            child,
            addr: addr.expect("addr"),
            admin: admin.expect("admin"),
            log,
            config: config.to_owned(),
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (bounded) until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log_contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An admin request; returns the status and the body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.admin, method, path, Some(ADMIN), body).await
    }

    pub async fn revoke(&self, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.admin("POST", "/admin/revocations", Some(body)).await;
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }

    /// Opens `/echo` with a bearer token: the session or the refusal status.
    pub async fn connect(&self, token: &str) -> Result<Ws, u16> {
        let mut req = format!("ws://{}/echo", self.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(WsError::Http(resp))) => Err(resp.status().as_u16()),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => panic!("connect timed out"),
        }
    }

    /// Opens a session and checks that it echoes.
    pub async fn session(&self, token: &str) -> Ws {
        let mut ws = self.connect(token).await.expect("session accepted");
        ws.send(Message::text("ping")).await.expect("send");
        let echoed = tokio::time::timeout(WAIT, ws.next()).await.expect("echo");
        assert!(matches!(echoed, Some(Ok(Message::Text(t))) if t.as_str() == "ping"));
        ws
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the process (by PID) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for the close frame; panics unless it arrives within `within`.
pub async fn closed_within(ws: &mut Ws, within: Duration) -> (u16, String) {
    let got = tokio::time::timeout(within, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(Some(f))) => {
                    return Some((u16::from(f.code), f.reason.to_string()))
                }
                Ok(Message::Close(None)) => return Some((1005, String::new())),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await;
    match got {
        Ok(Some(c)) => c,
        Ok(None) => panic!("connection ended without a close frame"),
        Err(_) => panic!("no close frame within {within:?}"),
    }
}

/// Checks the session is still open: an echo comes back.
pub async fn still_open(ws: &mut Ws) {
    ws.send(Message::text("still")).await.expect("send");
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo in time");
    assert!(
        matches!(&m, Some(Ok(Message::Text(t))) if t.as_str() == "still"),
        "expected an echo, got {m:?}"
    );
}

/// A raw HTTP/1.1 request with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let body = body.unwrap_or("");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Bodies are small; hyper may send them chunked.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A `redis-server` on a free loopback port, killed by PID when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = Redis { child: None, port };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port and waits for PONG.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if self.ping().await {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
        )
    }

    /// Sends one inline command and returns the raw reply.
    pub async fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("redis connect");
        s.write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("redis write");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("redis reply in time")
            .expect("redis read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
