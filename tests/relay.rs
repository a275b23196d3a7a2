//! The relay's frame rules through the real binary: close frames are
//! checked, gateway messages go between messages only, closes finish
//! within a second, and keepalive pings find peers that stopped answering.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do
// not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    // The upstream answers the first frame with a close carrying 1005.
    let (bad, heard) = scripted_upstream(server_frame(0x88, &[0x03, 0xED])).await;
    let gw = Gateway::start(&config(
        &echo.url(),
        "",
        &format!("  - id: bad\n    path: /bad\n    upstream: ws://{bad}\n"),
    ));
    let mut ws = raw_client(&gw, "/bad").await;
    ws.send_text("go").await;
    let (code, _) = ws.expect_close().await;
    assert_eq!(code, 1014);
    assert!(
        eventually(WAIT, || {
            let h = heard.lock().unwrap();
            closes_in(&h.bytes).first().map(|c| c.0) == Some(1002)
        })
        .await,
        "the upstream did not get 1002"
    );
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
