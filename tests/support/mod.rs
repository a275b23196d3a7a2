//! Test harness: the real `wsgate` binary on loopback ports, upstream
//! servers and clients running inside the test process.
//!
//! Every port is ephemeral (`127.0.0.1:0`); the harness learns the
//! gateway's ports from its `listener ready addr=...` log lines, so no test
//! sleeps waiting for a bind. [`redis::Redis`] runs a real `redis-server`
//! for the shared revocation store.

#![allow(dead_code)]

pub mod pki;
pub mod redis;
pub mod upstream;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

#[allow(unused_imports)]
pub use upstream::{closed_port, silent_upstream, status_upstream, EchoUpstream};

/// Shared secret of the test issuer `test`.
pub const SECRET: &str = "wsgate-test-secret-0123456789abcdef";
pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "wsgate-test";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// How long the harness waits for anything the gateway should do promptly.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `issuers:` entry of [`head`]: the HS256 issuer `test` (secret
/// [`SECRET`], issuer [`ISS`], audience [`AUD`]), indented as a list item.
pub fn test_issuer() -> String {
    format!(
        r#"  - id: test
    issuer: "{ISS}"
    audiences: ["{AUD}"]
    algorithms: [HS256]
    keys:
      secret: "{SECRET}"
    leeway: 1s
"#
    )
}

/// The config head shared by most tests: one plaintext listener, an admin
/// listener and the HS256 issuer `test`. Append `routes:` (and anything
/// else) to it.
pub fn head() -> String {
    head_with(&test_issuer())
}

/// [`head`] with other issuers: `issuers` is the YAML list under
/// `issuers:`, already indented (each item `  - id: ...`, ending in a
/// newline).
pub fn head_with(issuers: &str) -> String {
    format!(
        r#"log: {{ level: info, format: text }}
listeners:
  - bind: "127.0.0.1:0"
admin:
  bind: "127.0.0.1:0"
  token: "{ADMIN_TOKEN}"
issuers:
{issuers}"#
    )
}

/// [`head`] plus one authenticated route `/echo` to `upstream` (a ws://
/// URL) and a `revocation:` section; `section` holds its indented keys,
/// e.g. `"  store: memory"`.
pub fn revocation_config(upstream: &str, section: &str) -> String {
    format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {upstream}\nrevocation:\n{section}\n",
        head()
    )
}

/// Unix time now, in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Installs the JWT crypto provider once per process.
pub fn install_crypto() {
    wsgate::auth::install_crypto_provider();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Signs `claims` with HS256 and `secret`.
pub fn mint(secret: &str, claims: &serde_json::Value) -> String {
    install_crypto();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign test token")
}

/// Standard claims for `sub` from the test issuer, valid for ten minutes,
/// with `extra` merged in (a `null` value removes a claim).
pub fn claims(sub: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": sub,
        "iat": now(), "exp": now() + 600,
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(&k);
            } else {
                c[k] = v;
            }
        }
    }
    c
}

/// The public half of a P-256 key as a JWK.
pub fn ec_jwk(key: &rcgen::KeyPair, kid: Option<&str>) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let raw = key.public_key_raw();
    assert_eq!(raw.len(), 65, "uncompressed P-256 point");
    let mut jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]),
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

/// The private half of a P-256 key, for signing test tokens.
pub fn ec_key(key: &rcgen::KeyPair) -> jsonwebtoken::EncodingKey {
    jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC encoding key")
}

/// A valid token for `sub` from the test issuer.
pub fn token(sub: &str, extra: serde_json::Value) -> String {
    mint(SECRET, &claims(sub, extra))
}

struct LogBuf {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running `wsgate run` child process.
pub struct Gateway {
    child: Mutex<Child>,
    pub pid: u32,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    logs: Arc<LogBuf>,
    /// The gateway listeners, in config order.
    pub listeners: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl Gateway {
    /// Starts the gateway with `yaml` as its config file.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with_files(yaml, &[])
    }

    /// Starts the gateway with `yaml`, after writing `files` (relative path,
    /// contents) next to the config file.
    pub fn start_with_files(yaml: &str, files: &[(&str, &[u8])]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, data) in files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(p, data).unwrap();
        }
        Self::start_in(dir, yaml)
    }

    /// Starts the gateway in an existing folder (files already written).
    pub fn start_in(dir: tempfile::TempDir, yaml: &str) -> Gateway {
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let (child, logs) = spawn(dir.path(), &config_path);
        let mut gw = Gateway {
            pid: child.id(),
            child: Mutex::new(child),
            dir,
            config_path,
            logs,
            listeners: Vec::new(),
            admin: None,
        };
        gw.wait_ready();
        gw
    }

    /// Ends the process (by its PID) and reaps it. Files in [`Self::dir`]
    /// stay; [`Self::restart`] starts the gateway again.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the process if it still runs and starts a new one on the same
    /// config file and folder. The listeners keep their configured binds
    /// (ephemeral ports are learned again); the log buffer starts empty.
    pub fn restart(&mut self) {
        self.stop();
        let (child, logs) = spawn(self.dir.path(), &self.config_path);
        self.pid = child.id();
        *self.child.get_mut().unwrap() = child;
        self.logs = logs;
        self.listeners.clear();
        self.admin = None;
        self.wait_ready();
    }

    /// Waits (bounded) for the `listener ready` lines the config file asks
    /// for and records their addresses.
    fn wait_ready(&mut self) {
        let yaml = std::fs::read_to_string(&self.config_path).unwrap_or_default();
        let (want_listeners, want_admin) = expected_listeners(&yaml);
        let deadline = Instant::now() + WAIT;
        loop {
            let (listeners, admin) = {
                let lines = self.logs.lines.lock().unwrap();
                parse_ready(&lines)
            };
            if listeners.len() >= want_listeners && (admin.is_some() || !want_admin) {
                self.listeners = listeners;
                self.admin = admin;
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "wsgate exited before it was ready ({status}); stderr:\n{}",
                    self.logs().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "wsgate not ready within {WAIT:?}; stderr:\n{}",
                    self.logs().join("\n")
                );
            }
            let lines = self.logs.lines.lock().unwrap();
            let _ = self
                .logs
                .changed
                .wait_timeout(lines, Duration::from_millis(100))
                .unwrap();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    /// `ws://<first listener><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr(), path)
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("admin listener"), path)
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines.lock().unwrap().clone()
    }

    /// Whether any log line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (polling, without blocking the async runtime) until a log line
    /// contains `needle`. Returns whether it appeared within `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout).await
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub async fn wait_for_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self
                .logs
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if count >= n {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid);
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Replaces the config file (for a reload).
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, yaml).unwrap();
    }

    /// Rewrites the config, sends SIGHUP and waits for the reload log line.
    pub async fn reload(&self, yaml: &str) {
        let before = self.count_logs("configuration reloaded");
        self.rewrite_config(yaml);
        self.sighup();
        assert!(
            self.wait_for_log_count("configuration reloaded", before + 1, WAIT)
                .await,
            "reload not logged; stderr:\n{}",
            self.logs().join("\n")
        );
    }

    pub fn count_logs(&self, needle: &str) -> usize {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Waits (polling) for the process to exit.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident set size of the gateway process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// How many of the gateway's threads have a name starting with `prefix`.
    pub fn threads_named(&self, prefix: &str) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .expect("read /proc task list")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(prefix))
            .count()
    }

    /// Asserts the gateway still answers HTTP on its first listener (a path
    /// no test routes answers 404) and has not exited.
    pub async fn assert_serving(&self) {
        assert!(self.try_exit().is_none(), "gateway exited");
        let r = http_request(
            self.addr(),
            "GET /__no_such_route__ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("gateway answers after a bad request");
        assert_eq!(r.status, 404, "liveness probe: {r:?}");
    }

    /// An admin API request with the admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.admin_as(Some(ADMIN_TOKEN), method, path, body).await
    }

    /// An admin API request with `bearer` as the token (`None`: no
    /// `Authorization` header at all).
    pub async fn admin_as(
        &self,
        bearer: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> HttpResponse {
        let body = body.unwrap_or("");
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        http_request(self.admin.expect("admin listener"), &req)
            .await
            .expect("admin request")
    }

    /// `POST /admin/revocations` with `body`: the status and the JSON answer
    /// (a JSON string holding the raw body when it is not JSON).
    pub async fn revoke(&self, body: &str) -> (u16, serde_json::Value) {
        let r = self.admin("POST", "/admin/revocations", Some(body)).await;
        let v = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body));
        (r.status, v)
    }

    /// Opens `path` on the first listener with `Authorization: Bearer
    /// <token>`: the session, or the status of the refused handshake. Any
    /// other failure panics.
    pub async fn connect(&self, path: &str, token: &str) -> Result<Ws, u16> {
        let auth = format!("Bearer {token}");
        match ws_connect(&self.ws_url(path), &[("authorization", &auth)]).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connect {path}: {}", describe(&e)),
        }
    }

    /// Opens `path` with a bearer token and checks that the session echoes
    /// (the route's upstream is an [`EchoUpstream`]).
    pub async fn session(&self, path: &str, token: &str) -> Ws {
        let mut ws = match self.connect(path, token).await {
            Ok(ws) => ws,
            Err(status) => panic!("session on {path} refused with {status}"),
        };
        roundtrip(&mut ws, "ping").await;
        ws
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Kills by our own child's PID only.
        self.stop();
    }
}

/// Spawns `wsgate run -c <config>` in `dir`, with a thread collecting its
/// stderr lines.
fn spawn(dir: &Path, config_path: &Path) -> (Child, Arc<LogBuf>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("run")
        .arg("-c")
        .arg(config_path)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("WSGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgate");
    let pid = child.id();
    let logs = Arc::new(LogBuf {
        lines: Mutex::new(Vec::new()),
        changed: Condvar::new(),
    });
    let stderr = child.stderr.take().expect("piped stderr");
    {
        let logs = Arc::clone(&logs);
        std::thread::spawn(move || {
            let echo = std::env::var_os("WSGATE_TEST_ECHO_LOGS").is_some();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("[wsgate {pid}] {line}");
                }
                logs.lines.lock().unwrap().push(line);
                logs.changed.notify_all();
            }
            // EOF: wake waiters so they notice the exit.
            logs.lines.lock().unwrap().push(String::new());
            logs.changed.notify_all();
        });
    }
    (child, logs)
}

/// How many gateway listeners the config declares, and whether it has an
/// admin listener.
fn expected_listeners(yaml: &str) -> (usize, bool) {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap_or(serde_yaml::Value::Null);
    let n = v
        .get("listeners")
        .and_then(|l| l.as_sequence())
        .map_or(1, |s| s.len());
    let admin = v.get("admin").is_some_and(|a| !a.is_null());
    (n, admin)
}

/// Reads the bound addresses from the `listener ready` log lines.
fn parse_ready(lines: &[String]) -> (Vec<SocketAddr>, Option<SocketAddr>) {
    let mut listeners = Vec::new();
    let mut admin = None;
    for l in lines {
        // Text lines carry `addr=...`; JSON lines (`log.format: json`) an
        // `addr` field beside the `message`.
        let json: Option<serde_json::Value> = serde_json::from_str(l).ok();
        let from_json = json.as_ref().and_then(|v| v["addr"].as_str()?.parse().ok());
        let Some(addr) = from_json.or_else(|| field(l, "addr=")) else {
            continue;
        };
        let message = json.as_ref().and_then(|v| v["message"].as_str());
        let is = |what: &str| match message {
            Some(m) => m == what,
            None => l.contains(&format!(" {what}")),
        };
        if is("admin listener ready") {
            admin = Some(addr);
        } else if is("listener ready") {
            listeners.push(addr);
        }
    }
    (listeners, admin)
}

fn field(line: &str, key: &str) -> Option<SocketAddr> {
    let at = line.find(key)? + key.len();
    let rest = &line[at..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().ok()
}

// ---------------------------------------------------------------------------
// Plain HTTP over raw TCP
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` (a whole HTTP/1.1 request) and reads one response: the head,
/// then a `Content-Length` body or everything until EOF.
pub async fn http_request(addr: SocketAddr, raw: &str) -> std::io::Result<HttpResponse> {
    http_request_bytes(addr, raw.as_bytes()).await
}

pub async fn http_request_bytes(addr: SocketAddr, raw: &[u8]) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(raw).await?;
    tokio::time::timeout(WAIT, read_response(&mut s))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP response"))?
}

/// Reads one HTTP response head (and body) from `s`.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if status != 101 {
        match len {
            Some(len) => {
                while body.len() < len {
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
            }
            None if chunked => {
                // Enough for the small bodies the gateway sends.
                while !body.ends_with(b"0\r\n\r\n") {
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body = dechunk(&body);
            }
            None => {}
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = p + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// A well-formed upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra: &[(&str, &str)]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

// ---------------------------------------------------------------------------
// WebSocket clients
// ---------------------------------------------------------------------------

pub type Ws = WebSocketStream<TcpStream>;

/// Connects to `url` (ws://) with extra request headers. An `Err(Http)` is
/// a refused handshake; see [`status_of`].
pub async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<(Ws, WsResponse), WsError> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let uri = req.uri().clone();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap_or(80));
    let tcp = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .map_err(|_| WsError::Io(std::io::Error::other("handshake timed out")))?
}

/// Connects with `Authorization: Bearer <token>`, expecting success.
pub async fn ws_bearer(url: &str, token: &str) -> Ws {
    let auth = format!("Bearer {token}");
    match ws_connect(url, &[("authorization", &auth)]).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("connect {url}: {}", describe(&e)),
    }
}

/// The HTTP status of a refused handshake.
pub fn status_of<T: std::fmt::Debug>(r: Result<T, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

/// A refused handshake's response (status, headers, body).
pub fn refusal<T: std::fmt::Debug>(
    r: Result<T, WsError>,
) -> tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>> {
    match r {
        Err(WsError::Http(resp)) => resp,
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

pub fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(r) => format!(
            "HTTP {} {:?}",
            r.status(),
            r.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
        ),
        e => e.to_string(),
    }
}

/// The next data/control message, within [`WAIT`]. `None` at the end of the
/// stream or on an error.
pub async fn next_msg<S>(ws: &mut WebSocketStream<S>) -> Option<Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        Ok(_) => None,
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// The next text message, skipping pings/pongs.
pub async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match next_msg(ws).await {
            Some(Message::Text(t)) => return t.to_string(),
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until a close frame arrives and returns its code and reason.
/// Panics when the stream ends without one.
pub async fn expect_close<S>(ws: &mut WebSocketStream<S>) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    expect_close_within(ws, WAIT).await
}

pub async fn expect_close_within<S>(ws: &mut WebSocketStream<S>, within: Duration) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close frame within {within:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("stream error before a close frame: {e}"),
            Ok(None) => panic!("stream ended without a close frame"),
        }
    }
}

/// Sends text and expects it echoed back (proves the session is alive).
pub async fn roundtrip<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    ws.send(Message::text(text.to_owned())).await.expect("send");
    assert_eq!(next_text(ws).await, text);
}

/// Blocking read of a whole file (for tests that build configs from files).
pub fn read_to_string(p: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(p)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// Writes `data` to `path` (creating folders).
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// A raw WebSocket client, for close codes tungstenite will not report
// ---------------------------------------------------------------------------

/// tungstenite replaces a received close code it considers reserved (1014
/// among them, though RFC 6455's registry assigns it) with 1002, so tests of
/// such codes speak the protocol themselves.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Completes an upgrade to `path` with extra header lines; panics unless
    /// the answer is 101.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(upgrade_request(path, headers).as_bytes())
            .await
            .unwrap();
        // Read the head byte by byte so no frame bytes are swallowed.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(WAIT, stream.read(&mut b))
                .await
                .expect("101 in time")
                .unwrap();
            assert!(
                n > 0,
                "closed during the handshake: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawWs {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends one masked close frame with a code and reason.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(0x88, &payload).await;
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes()).await;
    }

    /// Sends one masked frame whose first header byte is `b0`.
    pub async fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        let mut frame = vec![b0];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads one frame: (opcode, payload).
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((op, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until a close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.read_frame().await {
                Some((0x8, p)) if p.len() >= 2 => {
                    return (
                        u16::from_be_bytes([p[0], p[1]]),
                        String::from_utf8_lossy(&p[2..]).to_string(),
                    )
                }
                Some((0x8, _)) => return (1005, String::new()),
                Some(_) => continue,
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Reads until a text frame; returns it.
    pub async fn next_text(&mut self) -> String {
        loop {
            match self.read_frame().await {
                Some((0x1, p)) => return String::from_utf8(p).unwrap(),
                Some((0x8, p)) => panic!("closed: {p:?}"),
                Some(_) => continue,
                None => panic!("connection ended"),
            }
        }
    }
}

/// Parses one unmasked server frame (no fragmentation handling needed here).
fn parse_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        if b.len() < at + 4 {
            return None;
        }
        let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    if b.len() < at + len {
        return None;
    }
    let mut payload = b[at..at + len].to_vec();
    if let Some(m) = mask {
        for (i, x) in payload.iter_mut().enumerate() {
            *x ^= m[i % 4];
        }
    }
    Some((op, payload, at + len))
}
