//! Fault injection against the real binary: upstreams that die or stall,
//! peers that stop reading, a key server that goes down or serves garbage,
//! a revocation store that cannot be written and a config file that is
//! broken or gone when a reload comes. Each test checks what the contract
//! promises for the fault *and* that the rest of the gateway keeps serving.
//!
//! Redis stopped and restarted under live sessions is covered by
//! `tests/revocation.rs` (`redis_outage_keeps_enforcing_and_catches_up_on_reconnect`,
//! `redis_subscriber_cut_off_catches_up_what_it_missed`).
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// `/echo` to `echo`, plus extra route entries (YAML list items).
fn config(echo: &str, extra_routes: &str, tail: &str) -> String {
    format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {echo}\n{extra_routes}{tail}",
        head()
    )
}

/// A fresh good session on `/echo` proves the gateway still serves.
async fn good_session(gw: &Gateway, sub: &str) -> Ws {
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &token(sub, json!({}))).await;
    roundtrip(&mut ws, &format!("hello from {sub}")).await;
    ws
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => buf.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// Polls `GET /admin/sessions` until it lists `want` sessions; returns the
/// last count seen.
async fn wait_sessions(gw: &Gateway, want: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = gw.admin("GET", "/admin/sessions", None).await;
        let n = serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(usize::MAX);
        if n == want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Upstream dies mid-message
// ---------------------------------------------------------------------------

/// A WebSocket upstream written by hand so it can die at any byte. It
/// completes the handshake, waits for one client frame, then by the last
/// path segment: `fin` sends a 1000-byte binary frame header and 500 bytes
/// of payload then closes; `rst` does the same then resets the connection;
/// `frag` sends a complete first fragment (FIN=0) of a message then closes.
async fn dying_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Some(path) = accept_upgrade(&mut s).await else {
                    return;
                };
                let mut b = [0u8; 1024];
                let _ = tokio::time::timeout(WAIT, s.read(&mut b)).await;
                let mut out = Vec::new();
                if path.ends_with("/frag") {
                    out.extend_from_slice(&[0x02, 100]);
                    out.extend_from_slice(&[b'f'; 100]);
                } else {
                    out.extend_from_slice(&[0x82, 126, 0x03, 0xE8]);
                    out.extend_from_slice(&[b'h'; 500]);
                }
                let _ = s.write_all(&out).await;
                let _ = s.flush().await;
                // Let the bytes leave before the connection goes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if path.ends_with("/rst") {
                    // Linger 0 resets at once on drop; nothing blocks.
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                }
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dies_mid_message_client_gets_1014() {
    let echo = EchoUpstream::start().await;
    let dying = dying_upstream().await;
    let gw = Gateway::start(&config(
        &echo.url(),
        &format!("  - id: dying\n    path: /dying/*\n    upstream: ws://{dying}\n"),
        "",
    ));
    let mut bystander = good_session(&gw, "bystander").await;
    let t = token("alice", json!({}));
    let auth = bearer(&t);
    for mode in ["fin", "rst", "frag"] {
        let mut ws = RawWs::connect(
            gw.addr(),
            &format!("/dying/{mode}"),
            &[("authorization", &auth)],
        )
        .await;
        ws.send_text("go").await;
        let mut data = Vec::new();
        let code = loop {
            match ws.read_frame().await {
                Some((0x8, p)) if p.len() >= 2 => break u16::from_be_bytes([p[0], p[1]]),
                Some((0x8, _)) => break 1005,
                Some((op, p)) => data.push((op, p.len())),
                None => panic!("{mode}: connection ended without a close frame"),
            }
        };
        assert_eq!(code, 1014, "{mode}: close code");
        // A truncated frame is never passed on as if it were whole.
        assert!(
            data.iter().all(|(op, len)| *op != 0x2 || *len != 500),
            "{mode}: a truncated frame reached the client: {data:?}"
        );
        if mode != "frag" {
            assert!(data.is_empty(), "{mode}: {data:?}");
        }
        roundtrip(&mut bystander, &format!("after {mode}")).await;
    }
    // Each lost session was cleaned up: only the bystander is left.
    assert_eq!(wait_sessions(&gw, 1).await, 1);
    let _fresh = good_session(&gw, "after").await;
}

// ---------------------------------------------------------------------------
// Upstream accepts TCP but never answers the handshake
// ---------------------------------------------------------------------------

/// Accepts, reads the request, then sends `prefix` (maybe nothing) and
/// stalls forever with the connection open.
async fn stalling_upstream(prefix: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let held = Arc::new(Mutex::new(Vec::new()));
        while let Ok((mut s, _)) = l.accept().await {
            let held = Arc::clone(&held);
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let _ = s.write_all(prefix).await;
                held.lock().unwrap().push(s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_never_answers_handshake_504_after_connect_timeout() {
    let echo = EchoUpstream::start().await;
    let (silent, _task) = silent_upstream().await;
    let half =
        stalling_upstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n").await;
    let routes = format!(
        "  - id: silent\n    path: /silent\n    upstream:\n      urls: [ws://{silent}]\n      connect_timeout: 1s\n\
         \x20 - id: half\n    path: /half\n    upstream:\n      urls: [ws://{half}]\n      connect_timeout: 1s\n"
    );
    let gw = Gateway::start(&config(&echo.url(), &routes, ""));
    let mut bystander = good_session(&gw, "bystander").await;
    let t = token("alice", json!({}));
    for path in ["/silent", "/half"] {
        let started = Instant::now();
        let r = ws_connect(&gw.ws_url(path), &[("authorization", &bearer(&t))]).await;
        let took = started.elapsed();
        assert_eq!(status_of(r), 504, "{path}");
        eprintln!("{path}: 504 after {took:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(6),
            "{path}: 504 after {took:?}, connect_timeout is 1s"
        );
        roundtrip(&mut bystander, path).await;
    }
    // Several at once: each is bounded, none blocks the others.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = gw.ws_url("/silent");
        let auth = bearer(&t);
        tasks.push(tokio::spawn(async move {
            status_of(ws_connect(&url, &[("authorization", &auth)]).await)
        }));
    }
    let _during = good_session(&gw, "during").await;
    for task in tasks {
        assert_eq!(task.await.unwrap(), 504);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let sessions = gw.admin("GET", "/admin/sessions", None).await;
    let list: Value = serde_json::from_str(&sessions.body).unwrap();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "only the two good sessions are registered: {}",
        sessions.body
    );
}

// ---------------------------------------------------------------------------
// Slow readers
// ---------------------------------------------------------------------------

/// Polls RSS for `for_how_long` and returns the maximum seen, in KiB.
async fn max_rss_during(gw: &Gateway, for_how_long: Duration) -> u64 {
    let deadline = Instant::now() + for_how_long;
    let mut max = 0;
    while Instant::now() < deadline {
        max = max.max(gw.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    max
}

/// Allowed RSS growth while a peer does not read.
const RSS_BUDGET_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_keeps_rss_bounded() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", ""));
    let mut other = good_session(&gw, "bob").await;
    let base = gw.rss_kib();

    // A client that completes the handshake, asks for 256 MiB and never
    // reads a byte of it.
    let t = token("alice", json!({}));
    let mut stalled = RawWs::connect(gw.addr(), "/echo", &[("authorization", &bearer(&t))]).await;
    stalled.send_text("flood 256").await;
    let max = max_rss_during(&gw, Duration::from_secs(8)).await;
    let offered = up.flooded.load(Ordering::Relaxed);
    eprintln!(
        "rss base {base} KiB, max {max} KiB, upstream got {} MiB written of 256",
        offered >> 20
    );
    assert!(
        max < base + RSS_BUDGET_KIB,
        "gateway RSS grew from {base} KiB to {max} KiB"
    );
    assert!(
        offered < 200 << 20,
        "backpressure never reached the upstream: {} MiB taken",
        offered >> 20
    );
    roundtrip(&mut other, "other session unaffected").await;
    let _fresh = good_session(&gw, "carol").await;
    // The stalled client goes away: its session ends and memory stays put.
    drop(stalled);
    let gone = {
        let mut ok = false;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let s = gw.admin("GET", "/admin/sessions", None).await;
            if !s.body.contains("\"alice\"") {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ok
    };
    assert!(gone, "the stalled session was never cleaned up");
    assert!(gw.rss_kib() < base + RSS_BUDGET_KIB);
    roundtrip(&mut other, "still fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_stops_reading_keeps_rss_bounded() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", ""));
    let mut other = good_session(&gw, "bob").await;
    let base = gw.rss_kib();

    let mut flooder = ws_bearer(&gw.ws_url("/echo"), &token("alice", json!({}))).await;
    flooder.send(Message::text("slow")).await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let task = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..(256 * 16) {
                if flooder.send(Message::binary(chunk.clone())).await.is_err() {
                    break;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            flooder
        })
    };
    let max = max_rss_during(&gw, Duration::from_secs(8)).await;
    let wrote = sent.load(Ordering::Relaxed);
    eprintln!(
        "rss base {base} KiB, max {max} KiB, client got {} MiB written of 256",
        wrote >> 20
    );
    assert!(
        max < base + RSS_BUDGET_KIB,
        "gateway RSS grew from {base} KiB to {max} KiB"
    );
    assert!(
        wrote < 200 << 20,
        "backpressure never reached the client: {} MiB taken",
        wrote >> 20
    );
    roundtrip(&mut other, "other session unaffected").await;
    let _fresh = good_session(&gw, "carol").await;
    task.abort();
}

// ---------------------------------------------------------------------------
// JWKS endpoint down or serving garbage
// ---------------------------------------------------------------------------

/// What the test key server answers.
const JWKS_GOOD: u8 = 0;
const JWKS_NOT_JSON: u8 = 1;
const JWKS_NO_USABLE_KEYS: u8 = 2;
const JWKS_500: u8 = 3;

struct KeyServer {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(good: String) -> KeyServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(JWKS_GOOD));
        let hits = Arc::new(AtomicUsize::new(0));
        let (m, h) = (Arc::clone(&mode), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (m, h, good) = (Arc::clone(&m), Arc::clone(&h), good.clone());
                tokio::spawn(async move {
                    let _ = read_head(&mut s).await;
                    let (status, body) = match m.load(Ordering::SeqCst) {
                        JWKS_GOOD => ("200 OK", good),
                        JWKS_NOT_JSON => ("200 OK", "<html>maintenance</html>\0\u{1}".into()),
                        JWKS_NO_USABLE_KEYS => (
                            "200 OK",
                            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"AA","y":"AA"},{"kty":"oct","k":"c2VjcmV0"}]}"#.into(),
                        ),
                        _ => ("500 Internal Server Error", "oops".into()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                         Cache-Control: max-age=3600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    h.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        KeyServer {
            addr,
            mode,
            hits,
            task,
        }
    }
}

fn ec_jwk(key: &rcgen::KeyPair, kid: &str) -> Value {
    let raw = key.public_key_raw();
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]),
    })
}

fn es256(key: &EncodingKey, kid: &str, sub: &str) -> String {
    let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_owned());
    install_crypto();
    jsonwebtoken::encode(&h, &claims(sub, json!({})), key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_or_garbage_keeps_the_last_good_keys() {
    install_crypto();
    let k1 = rcgen::KeyPair::generate().unwrap();
    let k2 = rcgen::KeyPair::generate().unwrap();
    let enc1 = EncodingKey::from_ec_pem(k1.serialize_pem().as_bytes()).unwrap();
    let enc2 = EncodingKey::from_ec_pem(k2.serialize_pem().as_bytes()).unwrap();
    let ks = KeyServer::start(json!({"keys": [ec_jwk(&k1, "k1")]}).to_string()).await;
    let up = EchoUpstream::start().await;
    let yaml = format!(
        r#"log: {{ level: info, format: text }}
listeners:
  - bind: "127.0.0.1:0"
admin:
  bind: "127.0.0.2:0"
  token: "{ADMIN_TOKEN}"
issuers:
  - id: remote
    issuer: "{ISS}"
    audiences: ["{AUD}"]
    algorithms: [ES256]
    keys:
      jwks_url: http://{ks}/jwks.json
    leeway: 1s
routes:
  - id: echo
    path: /echo
    upstream: {up}
"#,
        ks = ks.addr,
        up = up.url()
    );
    let gw = Gateway::start(&yaml);
    assert!(gw.wait_for_log("key set loaded", WAIT).await, "first fetch");
    let mut fetched_at = Instant::now();
    let mut live = ws_bearer(&gw.ws_url("/echo"), &es256(&enc1, "k1", "live")).await;
    roundtrip(&mut live, "k1 accepted").await;

    let refused = "key set refetch failed; keeping the last good set";
    let mut n = 0;
    for (what, mode) in [
        ("not JSON", Some(JWKS_NOT_JSON)),
        ("no usable keys", Some(JWKS_NO_USABLE_KEYS)),
        ("HTTP 500", Some(JWKS_500)),
        ("server down", None),
    ] {
        match mode {
            Some(m) => ks.mode.store(m, Ordering::SeqCst),
            None => ks.task.abort(),
        }
        // Unknown-kid refetches are rate limited to one per 10 s.
        let wait = Duration::from_millis(10_500).saturating_sub(fetched_at.elapsed());
        tokio::time::sleep(wait).await;
        n += 1;
        let hits = ks.hits.load(Ordering::SeqCst);
        // A token with a kid the gateway does not know makes it refetch.
        let unknown = es256(&enc2, &format!("rotated-{n}"), "probe");
        let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&unknown))]).await;
        assert_eq!(status_of(r), 401, "{what}: unknown kid");
        fetched_at = Instant::now();
        assert!(
            gw.wait_for_log_count(refused, n, WAIT).await,
            "{what}: the failed refetch was not logged"
        );
        if mode.is_some() {
            assert!(ks.hits.load(Ordering::SeqCst) > hits, "{what}: no refetch");
        }
        // A fresh token (never cached) signed with the last good key.
        let t = es256(&enc1, "k1", &format!("fresh-{n}"));
        let mut ws = ws_bearer(&gw.ws_url("/echo"), &t).await;
        roundtrip(&mut ws, &format!("k1 still accepted ({what})")).await;
        roundtrip(&mut live, &format!("live session kept ({what})")).await;
    }
    let ready = http_request(
        gw.admin.unwrap(),
        "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(ready.status, 200, "the issuer still has keys: {ready:?}");
}

// ---------------------------------------------------------------------------
// Revocation file unwritable
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_file_unwritable_fails_the_call_but_enforces_locally() {
    let up = EchoUpstream::start().await;
    let yaml = config(
        &up.url(),
        "",
        "revocation:\n  store: file\n  path: state/revocations.jsonl\n",
    );
    let gw = Gateway::start_with_files(&yaml, &[("state/.keep", b"")]);
    let mut bystander = good_session(&gw, "bystander").await;
    let t1 = token("frank", json!({"jti": "f1"}));
    let mut s1 = ws_bearer(&gw.ws_url("/echo"), &t1).await;
    roundtrip(&mut s1, "before").await;
    let t2 = token("grace", json!({"jti": "g1", "iat": now() - 5}));
    let s2 = ws_bearer(&gw.ws_url("/echo"), &t2).await;

    // The folder disappears and a regular file takes its name: every write
    // below it fails with ENOTDIR, whoever the process runs as.
    let state = gw.dir().join("state");
    std::fs::rename(&state, gw.dir().join("state.moved")).unwrap();
    std::fs::write(&state, b"not a folder").unwrap();

    for (body, mut ws, t) in [
        (r#"{"jti":"f1"}"#, s1, &t1),
        (r#"{"sub":"grace"}"#, s2, &t2),
    ] {
        let r = gw.admin("POST", "/admin/revocations", Some(body)).await;
        assert_eq!(r.status, 503, "{body}: {r:?}");
        let v: Value = serde_json::from_str(&r.body).expect("JSON error body");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("revocations.jsonl"),
            "the error names the file: {msg}"
        );
        assert_eq!(v["closed"], 1, "{body}: {}", r.body);
        // Enforced locally all the same: closed now, refused from now on.
        assert_eq!(expect_close(&mut ws).await.0, 4403, "{body}");
        let again = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(t))]).await;
        assert_eq!(status_of(again), 401, "{body}: reconnect");
    }
    // Both stay listed as in force.
    let list = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains("f1") && list.body.contains("grace"),
        "{}",
        list.body
    );
    roundtrip(&mut bystander, "bystander unaffected").await;

    // The disk comes back: the next revocation is stored again.
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(gw.dir().join("state.moved"), &state).unwrap();
    let r = gw
        .admin("POST", "/admin/revocations", Some(r#"{"jti":"h1"}"#))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let stored = std::fs::read_to_string(state.join("revocations.jsonl")).unwrap_or_default();
    assert!(stored.contains("h1"), "{stored}");
    let _fresh = good_session(&gw, "after").await;
}

// ---------------------------------------------------------------------------
// Config file broken or deleted before a reload
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_deleted_config_is_refused_and_the_old_one_serves() {
    let up = EchoUpstream::start().await;
    // The route requires a role, so "the old config serves" is observable:
    // a token without the role stays refused with 403.
    let good = config(&up.url(), "", "").replace(
        "    path: /echo\n",
        "    path: /echo\n    require:\n      - claim: roles\n        any_of: [chat]\n",
    );
    let gw = Gateway::start(&good);
    let chat = token("alice", json!({"roles": ["chat"]}));
    let mut live = ws_bearer(&gw.ws_url("/echo"), &chat).await;
    roundtrip(&mut live, "before").await;
    let path = gw.config_path().to_owned();

    let old_serves = |what: String| {
        let gw = &gw;
        let chat = chat.clone();
        async move {
            let mut ws = ws_bearer(&gw.ws_url("/echo"), &chat).await;
            roundtrip(&mut ws, &what).await;
            let no_role = token("bob", json!({}));
            let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&no_role))]).await;
            assert_eq!(status_of(r), 403, "{what}: the old rules apply");
            assert!(gw.try_exit().is_none(), "{what}: gateway exited");
        }
    };

    let broken: Vec<(&str, Option<Vec<u8>>)> = vec![
        (
            "binary garbage",
            Some((0u8..=255).cycle().take(4096).collect()),
        ),
        ("empty file", Some(Vec::new())),
        (
            "truncated",
            Some(good.as_bytes()[..good.len() / 2].to_vec()),
        ),
        ("not yaml", Some(b"listeners: [ {{{ ".to_vec())),
        (
            "missing key file",
            Some(
                good.replace("secret: \"", "public_key: nowhere.pem\n      # \"")
                    .into_bytes(),
            ),
        ),
        ("deleted", None),
    ];
    for (what, contents) in &broken {
        match contents {
            Some(c) => std::fs::write(&path, c).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let r = gw.admin("POST", "/admin/reload", None).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {}",
            r.body
        );
        roundtrip(&mut live, &format!("live after {what}")).await;
        old_serves(format!("admin reload, {what}")).await;
    }

    // The same through SIGHUP: an error is logged, nothing else changes.
    let refused = "reload refused; the previous configuration stays in force";
    for (i, (what, contents)) in broken.iter().enumerate() {
        match contents {
            Some(c) => std::fs::write(&path, c).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        gw.sighup();
        assert!(
            gw.wait_for_log_count(refused, i + 1, WAIT).await,
            "{what}: SIGHUP reload error not logged"
        );
        roundtrip(&mut live, &format!("live after SIGHUP {what}")).await;
        old_serves(format!("SIGHUP, {what}")).await;
    }
    assert_eq!(gw.count_logs("configuration reloaded"), 0);

    // Restored, a reload is accepted again.
    std::fs::write(&path, &good).unwrap();
    let r = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    roundtrip(&mut live, "after restore").await;
}

/// Reads an upgrade request and answers 101 by hand (so the caller can then
/// misbehave at any byte). Returns the request path.
async fn accept_upgrade(s: &mut TcpStream) -> Option<String> {
    let head = read_head(s).await;
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(resp.as_bytes()).await.ok()?;
    Some(path)
}

/// An upstream that completes the handshake and, when the client's close
/// reaches it, drops the connection without answering.
async fn upstream_vanishing_on_close() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if accept_upgrade(&mut s).await.is_none() {
                    return;
                }
                let mut b = [0u8; 1024];
                // Client frames are masked: the first byte says the opcode.
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || b[..n].contains(&0x88) {
                        break;
                    }
                }
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_vanishing_after_the_clients_close_still_ends_cleanly() {
    let echo = EchoUpstream::start().await;
    let rude = upstream_vanishing_on_close().await;
    let gw = Gateway::start(&config(
        &echo.url(),
        &format!("  - id: rude\n    path: /rude/*\n    upstream: ws://{rude}\n"),
        "",
    ));
    let t = token("alice", json!({}));
    let mut ws = RawWs::connect(gw.addr(), "/rude/x", &[("authorization", &bearer(&t))]).await;
    ws.send_close(4000, "done").await;
    // The client asked to close; the upstream left instead of answering:
    // the client gets its own close back, not 1014.
    let (code, reason) = ws.expect_close().await;
    assert_eq!((code, reason.as_str()), (4000, "done"));
    assert!(
        gw.wait_for_log("reason=\"client\"", WAIT).await,
        "{}",
        gw.logs().join("\n")
    );
}
