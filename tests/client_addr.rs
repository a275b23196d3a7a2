//! The real client behind load balancers, against the real binary: PROXY
//! protocol v1 and v2 headers on a `proxy_protocol` listener (and refusals
//! when one is missing or malformed), and `X-Forwarded-For` believed only
//! from `trusted_proxies`. The client shows in `/admin/sessions`, in the
//! handshake log line and in the upstream's `X-Forwarded-For`.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Two listeners (the first with `proxy_protocol`, the second without),
/// one `/echo` route, and `trusted_proxies`.
fn config(upstream: &str, trusted: &str) -> String {
    head().replacen(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n",
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n  - bind: \"127.0.0.1:0\"\n",
        1,
    ) + &format!(
        "trusted_proxies: {trusted}\nroutes:\n  - id: echo\n    path: /echo\n    upstream: {upstream}\n"
    )
}

/// Sends `prefix` then an authenticated upgrade request with `extra`
/// headers; returns the open connection once the 101 has arrived.
async fn upgrade(addr: SocketAddr, prefix: &[u8], extra: &[(&str, &str)]) -> TcpStream {
    let auth = format!("Bearer {}", token("alice", json!({})));
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(prefix).await.unwrap();
    s.write_all(upgrade_request("/echo", &headers).as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut s).await.expect("a response");
    assert_eq!(r.status, 101, "{r:?}");
    s
}

/// The `remote_addr` of the only session listed.
async fn session_remote(gw: &Gateway) -> String {
    let r = gw.admin("GET", "/admin/sessions", None).await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v[0]["remote_addr"].as_str().unwrap_or_default().to_owned()
}

/// The `X-Forwarded-For` the upstream received on its latest connection.
async fn upstream_xff(up: &EchoUpstream) -> String {
    assert!(eventually(WAIT, || !up.conns().is_empty()).await);
    let conns = up.conns();
    let last = conns.last().unwrap();
    last.header("x-forwarded-for")
        .unwrap_or_default()
        .to_owned()
}

/// Whether the gateway closes `s` without answering.
async fn refused(mut s: TcpStream) -> bool {
    let mut buf = Vec::new();
    match tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

fn v2_ipv4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&src);
    b.extend_from_slice(&[127, 0, 0, 1]);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&8080u16.to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_gives_the_client_address() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "[]"));
    let _s = upgrade(
        gw.listeners[0],
        b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 8080\r\n",
        &[],
    )
    .await;
    assert_eq!(session_remote(&gw).await, "192.0.2.10:40000");
    assert_eq!(upstream_xff(&up).await, "192.0.2.10");
    assert!(gw.wait_for_log("remote=192.0.2.10:40000", WAIT).await);
    // The handshake line names the path, host, upstream and the session id
    // that /admin/sessions lists.
    let r = gw.admin("GET", "/admin/sessions", None).await;
    let id = serde_json::from_str::<Value>(&r.body).unwrap()[0]["id"].to_string();
    let line = gw
        .logs()
        .into_iter()
        .find(|l| l.contains("handshake accepted"))
        .expect("handshake line");
    for needle in [
        "/echo",
        "localhost",
        &format!("session={}", id.trim_matches('"')),
        &up.url(),
    ] {
        assert!(line.contains(needle), "{needle} not in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_gives_the_client_address() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "[]"));
    let _s = upgrade(gw.listeners[0], &v2_ipv4([198, 51, 100, 20], 5555), &[]).await;
    assert_eq!(session_remote(&gw).await, "198.51.100.20:5555");
    assert_eq!(upstream_xff(&up).await, "198.51.100.20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_proxy_header_is_refused() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "[]"));
    let addr = gw.listeners[0];
    for prefix in [
        &b""[..],
        b"PROXY TCP4 192.0.2.10 127.0.0.1 40000\r\n",
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x03abc",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(prefix).await.unwrap();
        let _ = s
            .write_all(upgrade_request("/echo", &[("Authorization", "Bearer x")]).as_bytes())
            .await;
        assert!(refused(s).await, "{:?}", String::from_utf8_lossy(prefix));
    }
    assert!(up.conns().is_empty());
    // The listener without proxy_protocol takes plain requests.
    let url = format!("ws://{}/echo", gw.listeners[1]);
    let mut ws = ws_bearer(&url, &token("alice", json!({}))).await;
    roundtrip(&mut ws, "plain listener").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_from_a_trusted_peer_is_believed_and_appended_to() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "[\"127.0.0.0/8\", \"10.0.0.0/8\"]"));
    let _s = upgrade(
        gw.listeners[1],
        b"",
        &[("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.1.1")],
    )
    .await;
    assert_eq!(session_remote(&gw).await, "198.51.100.7:0");
    assert_eq!(
        upstream_xff(&up).await,
        "6.6.6.6, 198.51.100.7, 10.1.1.1, 127.0.0.1"
    );
    assert!(gw.wait_for_log("remote=198.51.100.7", WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_from_an_untrusted_peer_is_replaced() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "[\"10.0.0.0/8\"]"));
    let _s = upgrade(gw.listeners[1], b"", &[("X-Forwarded-For", "198.51.100.7")]).await;
    let remote = session_remote(&gw).await;
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
    assert_eq!(upstream_xff(&up).await, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_from_a_trusted_balancer_then_its_xff() {
    // A layer-4 balancer in 10/8 relays for an HTTP proxy that set XFF.
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "[\"10.0.0.0/8\"]"));
    let _s = upgrade(
        gw.listeners[0],
        b"PROXY TCP4 10.9.9.9 127.0.0.1 1234 8080\r\n",
        &[("X-Forwarded-For", "203.0.113.5")],
    )
    .await;
    assert_eq!(session_remote(&gw).await, "203.0.113.5:0");
    assert_eq!(upstream_xff(&up).await, "203.0.113.5, 10.9.9.9");
}
