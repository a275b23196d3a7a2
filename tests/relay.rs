//! The relay's frame rules through the real binary: close frames are
//! checked, gateway messages go between messages only, closes finish
//! within a second, and keepalive pings find peers that stopped answering.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do
// not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

fn bearer(sub: &str) -> String {
    format!("Bearer {}", token(sub, json!({})))
}

/// `/echo` to `echo` with extra route keys, plus extra routes.
fn config(echo: &str, extra: &str, routes: &str) -> String {
    format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {echo}\n{extra}{routes}",
        head()
    )
}

async fn raw_client(gw: &Gateway, path: &str) -> RawWs {
    let auth = bearer("alice");
    RawWs::connect(gw.addr(), path, &[("authorization", &auth)]).await
}

// ---------------------------------------------------------------------------
// A hand-written upstream: answers the upgrade, then plays a script
// ---------------------------------------------------------------------------

/// Reads the upgrade request and answers 101 by hand.
async fn accept_upgrade(s: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let key = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| v.trim().to_owned())
    })?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(resp.as_bytes()).await.ok()
}

/// One unmasked (server) frame.
fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![b0, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

/// What a scripted upstream connection received after its handshake.
#[derive(Default)]
struct Heard {
    bytes: Vec<u8>,
    ended: bool,
}

/// An upstream that, once the first client frame arrives, writes `script`
/// and then records everything it receives until the gateway hangs up.
async fn scripted_upstream(script: Vec<u8>) -> (SocketAddr, Arc<Mutex<Heard>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heard = Arc::new(Mutex::new(Heard::default()));
    let h = Arc::clone(&heard);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = Arc::clone(&h);
            let script = script.clone();
            tokio::spawn(async move {
                if accept_upgrade(&mut s).await.is_none() {
                    return;
                }
                let mut b = [0u8; 4096];
                let mut first = true;
                loop {
                    match s.read(&mut b).await {
                        Ok(n) if n > 0 => {
                            h.lock().unwrap().bytes.extend_from_slice(&b[..n]);
                            if first {
                                first = false;
                                let _ = s.write_all(&script).await;
                            }
                        }
                        _ => break,
                    }
                }
                h.lock().unwrap().ended = true;
            });
        }
    });
    (addr, heard)
}

/// Unmasked close frames (code, reason) in a byte stream of masked frames.
fn closes_in(bytes: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some(h)) = wsgate::proxy::frame::parse(&bytes[at..]) {
        let end = at + h.len + h.payload_len as usize;
        if end > bytes.len() {
            break;
        }
        let mut body = bytes[at + h.len..end].to_vec();
        if let Some(m) = h.mask {
            wsgate::proxy::frame::unmask(&mut body, m, 0);
        }
        if h.opcode == 0x8 {
            let f = wsgate::proxy::frame::parse_close(&body).expect("gateway closes are valid");
            out.push((f.code, f.reason));
        }
        at = end;
    }
    out
}

// ---------------------------------------------------------------------------
// Close frames are checked
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_close_gets_1002_and_the_upstream_1001() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", ""));
    // A one-byte payload, a code that may not be sent, a reason that is not UTF-8.
    let bad: [&[u8]; 4] = [
        &[0x03],
        &[0x03, 0xED],
        &[0x07, 0xD0],
        &[0x03, 0xE8, 0xFF, 0xFE],
    ];
    for (i, payload) in bad.into_iter().enumerate() {
        let mut ws = raw_client(&gw, "/echo").await;
        ws.send_text("hi").await;
        assert_eq!(ws.next_text().await, "hi");
        ws.send_frame(0x88, payload).await;
        assert_eq!(ws.expect_close().await.0, 1002, "{payload:?}");
        assert_eq!(up.close_of(i).await.0, 1001, "{payload:?}");
    }
    // 1012-1014 are assigned codes: passed on unchanged.
    let mut ws = raw_client(&gw, "/echo").await;
    ws.send_close(1013, "try again later").await;
    assert_eq!(up.close_of(4).await, (1013, "try again later".to_owned()));
    assert_eq!(ws.expect_close().await.0, 1013);
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_close_gets_1002_and_the_client_1014() {
    let echo = EchoUpstream::start().await;
    // A one-byte payload, codes that may not be sent (999, 1005), a reason
    // that is not UTF-8: each upstream answers the first frame with one.
    let bad: [&[u8]; 4] = [
        &[0x03],
        &[0x03, 0xE7],
        &[0x03, 0xED],
        &[0x03, 0xE8, 0xFF, 0xFE],
    ];
    let mut upstreams = Vec::new();
    let mut routes = String::new();
    for (i, payload) in bad.iter().enumerate() {
        let (addr, heard) = scripted_upstream(server_frame(0x88, payload)).await;
        routes.push_str(&format!(
            "  - id: bad{i}\n    path: /bad{i}\n    upstream: ws://{addr}\n"
        ));
        upstreams.push(heard);
    }
    let gw = Gateway::start(&config(&echo.url(), "", &routes));
    for (i, (payload, heard)) in bad.iter().zip(&upstreams).enumerate() {
        let mut ws = raw_client(&gw, &format!("/bad{i}")).await;
        ws.send_text("go").await;
        assert_eq!(ws.expect_close().await.0, 1014, "{payload:?}");
        assert!(
            eventually(WAIT, || {
                let h = heard.lock().unwrap();
                h.ended && closes_in(&h.bytes).iter().map(|c| c.0).eq([1002])
            })
            .await,
            "the upstream did not get 1002 and a closed connection: {payload:?}"
        );
    }
    gw.assert_serving().await;
}

// ---------------------------------------------------------------------------
// Gateway messages and fragments
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_sent_in_fragments_is_taken_by_the_gateway() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(
        &up.url(),
        "    session:\n      refresh: true\n",
        "",
    ));
    let mut ws = raw_client(&gw, "/echo").await;
    ws.send_text("before").await;
    assert_eq!(ws.next_text().await, "before");
    let exp = now() + 900;
    let fresh = token("alice", json!({ "exp": exp }));
    let msg = json!({"type": "wsgate.refresh", "token": fresh}).to_string();
    let (a, rest) = msg.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.send_frame(0x01, a.as_bytes()).await; // text, more to come
    ws.send_frame(0x89, b"between").await; // a ping between fragments
    ws.send_frame(0x00, b.as_bytes()).await; // continuation
    ws.send_frame(0x80, c.as_bytes()).await; // last continuation
    let reply: serde_json::Value = serde_json::from_str(&ws.next_text().await).unwrap();
    assert_eq!(reply["type"], "wsgate.refreshed", "{reply}");
    assert_eq!(reply["exp"], json!(exp), "{reply}");
    ws.send_text("after").await;
    assert_eq!(ws.next_text().await, "after");
    let seen = up.conn(0).await.received;
    assert!(
        !seen
            .iter()
            .any(|m| m.to_text().is_ok_and(|t| t.contains("wsgate.refresh"))),
        "the refresh reached the upstream: {seen:?}"
    );
}

// ---------------------------------------------------------------------------
// Closes within a second
// ---------------------------------------------------------------------------

/// Reads until the gateway's close frame; answers it when `answer`; then
/// returns the close code and how long the TCP connection stayed open after
/// the close frame arrived (until EOF).
async fn close_then_eof(ws: &mut RawWs, answer: bool) -> (u16, Duration) {
    let code = loop {
        match ws.read_frame().await {
            Some((0x8, p)) if p.len() >= 2 => break u16::from_be_bytes([p[0], p[1]]),
            Some((0x8, _)) => break 1005,
            Some(_) => continue,
            None => panic!("connection ended without a close frame"),
        }
    };
    let closed = Instant::now();
    if answer {
        ws.send_close(code, "").await;
    }
    while ws.read_frame().await.is_some() {}
    (code, closed.elapsed())
}

/// A peer that never answers is cut off 1 s after the close (a loaded
/// machine gets half a second more).
const UNANSWERED: Duration = Duration::from_millis(1500);
/// A peer that answers sees EOF right away: well before the 1 s fallback.
const ANSWERED: Duration = Duration::from_millis(700);

async fn kill_session(gw: &Gateway, sub: &str) {
    let r = gw.admin("GET", "/admin/sessions", None).await;
    let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = list
        .as_array()
        .and_then(|a| a.iter().find(|s| s["sub"] == sub))
        .map(|s| match &s["id"] {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        })
        .unwrap_or_else(|| panic!("no session of {sub}: {}", r.body));
    let r = gw
        .admin("DELETE", &format!("/admin/sessions/{id}"), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_close_refusals_close_tcp_within_a_second() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "    reject: close\n", ""));
    for answer in [false, true] {
        let mut ws = RawWs::connect(gw.addr(), "/echo", &[]).await;
        let (code, open) = close_then_eof(&mut ws, answer).await;
        assert_eq!(code, 4401);
        let bound = if answer { ANSWERED } else { UNANSWERED };
        assert!(
            open < bound,
            "answer={answer}: TCP open {open:?} after the close"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_timeout_closes_tcp_within_a_second() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}limits:\n  auth_timeout: 300ms\n",
        config(&up.url(), "    token_sources: [first_message]\n", "")
    ));
    for answer in [false, true] {
        let mut ws = RawWs::connect(gw.addr(), "/echo", &[]).await;
        let (code, open) = close_then_eof(&mut ws, answer).await;
        assert_eq!(code, 4408);
        let bound = if answer { ANSWERED } else { UNANSWERED };
        assert!(
            open < bound,
            "answer={answer}: TCP open {open:?} after the close"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_closes_tcp_within_a_second() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", ""));
    for answer in [false, true] {
        let mut ws = raw_client(&gw, "/echo").await;
        ws.send_text("x").await;
        assert_eq!(ws.next_text().await, "x");
        kill_session(&gw, "alice").await;
        let (code, open) = close_then_eof(&mut ws, answer).await;
        assert_eq!(code, 4403);
        let bound = if answer { ANSWERED } else { UNANSWERED };
        assert!(
            open < bound,
            "answer={answer}: TCP open {open:?} after the close"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_close_frame_fails_with_1002_and_closes_tcp() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", ""));
    let mut ws = raw_client(&gw, "/echo").await;
    // Autobahn 7.3.6: a close frame with a 126-byte payload.
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[b'a'; 124]);
    ws.send_frame(0x88, &payload).await;
    let (code, open) = close_then_eof(&mut ws, false).await;
    assert_eq!(code, 1002);
    assert!(open < UNANSWERED, "TCP open {open:?} after the close");
    assert_eq!(up.close_of(0).await.0, 1001);
}

// ---------------------------------------------------------------------------
// Keepalive and idle
// ---------------------------------------------------------------------------

fn keepalive(interval: &str, timeout: &str) -> String {
    format!("    session:\n      ping_interval: {interval}\n      ping_timeout: {timeout}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_closed_1011() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &keepalive("500ms", "1s"), ""));
    let mut ws = raw_client(&gw, "/echo").await;
    ws.send_text("x").await;
    assert_eq!(ws.next_text().await, "x");
    // Reads (so the close can arrive) but never answers a ping.
    let mut pings = 0;
    let (code, reason) = loop {
        match ws.read_frame().await {
            Some((0x9, _)) => pings += 1,
            Some((0x8, p)) if p.len() >= 2 => {
                break (
                    u16::from_be_bytes([p[0], p[1]]),
                    String::from_utf8_lossy(&p[2..]).to_string(),
                )
            }
            Some(_) => continue,
            None => panic!("connection ended without a close frame"),
        }
    };
    assert_eq!((code, reason.as_str()), (1011, "peer unresponsive"));
    assert_eq!(pings, 1, "one ping, then the timeout");
    assert_eq!(up.close_of(0).await.0, 1001);
    assert!(
        gw.wait_for_log("reason=\"unresponsive\"", WAIT).await,
        "{}",
        gw.logs().join("\n")
    );
    let metrics = http_request(
        gw.admin.expect("admin"),
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("metrics");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("wsgate_session_closes_total")
                && l.contains("reason=\"unresponsive\"")
                && l.ends_with(" 1")),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answering_client_survives_many_ping_intervals() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &keepalive("300ms", "1s"), ""));
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &token("alice", json!({}))).await;
    roundtrip(&mut ws, "x").await;
    // tungstenite answers each ping as it reads on: wait for five of them.
    let mut pings = 0;
    while pings < 5 {
        match next_msg(&mut ws).await {
            Some(Message::Ping(_)) => pings += 1,
            Some(_) => {}
            None => panic!("closed after {pings} pings"),
        }
    }
    roundtrip(&mut ws, "still here").await;
    // The client's pongs answered the gateway: none reached the upstream.
    let seen = up.conn(0).await.received;
    assert!(
        !seen.iter().any(|m| matches!(m, Message::Pong(_))),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_pings_is_not_idle() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(
        &up.url(),
        "    session:\n      idle_timeout: 1500ms\n      ping_interval: 0\n",
        "",
    ));
    let mut ws = raw_client(&gw, "/echo").await;
    ws.send_text("x").await;
    assert_eq!(ws.next_text().await, "x");
    // Pings every 500 ms for well over the idle timeout; each is answered.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4000) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.send_frame(0x89, b"are you there").await;
        loop {
            match ws.read_frame().await {
                Some((0xA, p)) if p == b"are you there" => break,
                Some((0x8, p)) => panic!("closed after {:?}: {p:?}", started.elapsed()),
                Some(_) => continue,
                None => panic!("connection ended"),
            }
        }
    }
    ws.send_text("alive").await;
    assert_eq!(ws.next_text().await, "alive");
    // Then silence: the idle timeout applies.
    assert_eq!(ws.expect_close().await.0, 1001);
}

/// Whether the kernel's keepalive timer (`tr` = 2) runs on the established
/// loopback TCP socket whose remote port is `remote` (and local port
/// `local`, when given), from `/proc/net/tcp`. The kernel arms it on an
/// idle socket only when `SO_KEEPALIVE` is on; without, `tr` is 0.
fn keepalive_armed(local: Option<u16>, remote: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 5
            && f[3] == "01"
            && local.is_none_or(|l| port(f[1]) == Some(l))
            && port(f[2]) == Some(remote)
            && f[5].starts_with("02:")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_legs_of_a_session_have_tcp_keepalive() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", ""));
    let ws = gw.session("/echo", &token("alice", json!({}))).await;
    let client_port = ws.get_ref().local_addr().expect("client address").port();
    let up_port: u16 = up
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("upstream port");
    // The client leg: the gateway's accepted socket.
    assert!(
        eventually(WAIT, || keepalive_armed(
            Some(gw.addr().port()),
            client_port
        ))
        .await,
        "no keepalive on the client leg"
    );
    // The upstream leg: the gateway's socket to the upstream's port (only
    // the gateway's side has that remote port).
    assert!(
        eventually(WAIT, || keepalive_armed(None, up_port)).await,
        "no keepalive on the upstream leg"
    );
    // The probe tells them apart: the test client's own socket has none.
    assert!(!keepalive_armed(Some(client_port), gw.addr().port()));
    drop(ws);
}
