//! Admission limits for connections that are not (yet) sessions, against
//! the real binary: `limits.max_pending`, first-message waiters counted
//! toward `max_sessions`, the per-route `limits.max_sessions`, and memory
//! given back after a flood of pending connections.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do not
// apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the gateway closes `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    match tokio::time::timeout(within, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// A connection that has sent part of an upgrade request head (`pad`
/// bytes of one header, no end): pending until `handshake_timeout`.
async fn half_head(addr: SocketAddr, pad: usize) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "GET /echo HTTP/1.1\r\nHost: gw\r\nX-Pad: {}",
        "a".repeat(pad)
    );
    s.write_all(head.as_bytes()).await?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_closes_new_connections_at_once() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {}\n\
         limits:\n  max_pending: 20\n  handshake_timeout: 60s\n",
        head(),
        up.url()
    ));
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_head(gw.addr(), 10).await.expect("connect"));
    }
    // Accepted in order: the 21st finds every place taken.
    let mut extra = TcpStream::connect(gw.addr()).await.expect("connect");
    assert!(
        closed_within(&mut extra, Duration::from_secs(10)).await,
        "21st pending connection not closed"
    );
    // Sessions already established are not pending: the limit is about
    // connections that are not yet sessions.
    drop(held.pop());
    let mut ws = None;
    let deadline = Instant::now() + WAIT;
    while ws.is_none() && Instant::now() < deadline {
        let url = gw.ws_url("/echo");
        let auth = format!("Bearer {}", token("alice", json!({})));
        match ws_connect(&url, &[("authorization", &auth)]).await {
            Ok((w, _)) => ws = Some(w),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut ws = ws.expect("a freed place admits a new connection");
    roundtrip(&mut ws, "admitted").await;
    // Still 19 half heads pending and one session: one more place.
    let mut one_more = half_head(gw.addr(), 10).await.expect("connect");
    assert!(!closed_within(&mut one_more, Duration::from_millis(500)).await);
    let mut beyond = TcpStream::connect(gw.addr()).await.expect("connect");
    assert!(closed_within(&mut beyond, Duration::from_secs(10)).await);
    roundtrip(&mut ws, "still served").await;
}

fn first_message_config(upstream: &str, limits: &str) -> String {
    format!(
        "{}routes:\n  - id: fm\n    path: /fm\n    upstream: {upstream}\n    token_sources: [first_message]\n\
         \x20 - id: echo\n    path: /echo\n    upstream: {upstream}\n\
         limits:\n{limits}",
        head()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_waiters_count_toward_max_sessions() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&first_message_config(
        &up.url(),
        "  max_sessions: 3\n  auth_timeout: 60s\n",
    ));
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let (ws, _) = ws_connect(&gw.ws_url("/fm"), &[]).await.expect("101");
        waiters.push(ws);
    }
    // Three anonymous connections hold every slot: neither a fourth nor an
    // authenticated client on another route gets in.
    assert_eq!(status_of(ws_connect(&gw.ws_url("/fm"), &[]).await), 503);
    assert_eq!(
        gw.connect("/echo", &token("alice", json!({})))
            .await
            .map(|_| ()),
        Err(503)
    );
    // A waiter that authenticates keeps its slot as a session.
    let mut first = waiters.remove(0);
    first
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"token": token("bob", json!({}))}).to_string(),
        ))
        .await
        .unwrap();
    roundtrip(&mut first, "authenticated").await;
    assert_eq!(status_of(ws_connect(&gw.ws_url("/fm"), &[]).await), 503);
    // A waiter that leaves frees its slot.
    drop(waiters.pop());
    let mut admitted = None;
    let deadline = Instant::now() + WAIT;
    while admitted.is_none() && Instant::now() < deadline {
        match gw.connect("/echo", &token("alice", json!({}))).await {
            Ok(ws) => admitted = Some(ws),
            Err(503) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("refused with {other}"),
        }
    }
    roundtrip(&mut admitted.expect("slot freed"), "in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_max_sessions_503_while_another_route_admits() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - id: capped\n    path: /capped\n    upstream: {u}\n    auth: none\n    limits: {{ max_sessions: 2 }}\n\
         \x20 - id: echo\n    path: /echo\n    upstream: {u}\n",
        head(),
        u = up.url()
    ));
    let (mut a, _) = ws_connect(&gw.ws_url("/capped"), &[]).await.expect("first");
    let (b, _) = ws_connect(&gw.ws_url("/capped"), &[])
        .await
        .expect("second");
    roundtrip(&mut a, "a").await;
    assert_eq!(status_of(ws_connect(&gw.ws_url("/capped"), &[]).await), 503);
    // Anonymous clients filling their route leave the others alone.
    let mut other = gw.session("/echo", &token("alice", json!({}))).await;
    roundtrip(&mut other, "other route").await;
    drop(b);
    let deadline = Instant::now() + WAIT;
    loop {
        match ws_connect(&gw.ws_url("/capped"), &[]).await {
            Ok((mut ws, _)) => {
                roundtrip(&mut ws, "again").await;
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(status_of::<()>(Err(e)), 503);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slot never freed: {}", describe(&e)),
        }
    }
}

/// Opens `n` connections that each send a 60 KiB partial head; returns the
/// ones still open.
async fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        tasks.push(tokio::spawn(half_head(addr, 60 * 1024)));
    }
    let mut open = Vec::new();
    for t in tasks {
        if let Ok(Ok(s)) = t.await {
            open.push(s);
        }
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_pending_heads_is_capped_and_memory_is_given_back() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {}\n\
         limits:\n  max_pending: 1024\n  handshake_timeout: 60s\n",
        head(),
        up.url()
    ));
    let mut ws = gw.session("/echo", &token("alice", json!({}))).await;
    let before = gw.rss_kib();

    let mut peak = before;
    for round in 0..2 {
        let conns = flood(gw.addr(), 3000).await;
        // Let the gateway read what it was sent, then sample.
        let settle = Instant::now() + Duration::from_secs(2);
        while Instant::now() < settle {
            peak = peak.max(gw.rss_kib());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("round {round}: {} connections still open", conns.len());
        drop(conns);
        roundtrip(&mut ws, "served during the flood").await;
    }
    // Memory comes back once the connections are gone.
    let mut after = gw.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(15);
    while after > before + 16 * 1024 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = gw.rss_kib();
    }
    eprintln!(
        "rss before {} MiB, peak {} MiB, after {} MiB",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    // 1024 pending heads of up to 64 KiB each, with room for allocator slack.
    assert!(
        peak < before + 160 * 1024,
        "peak {peak} KiB over base {before} KiB"
    );
    assert!(
        after < before + 16 * 1024,
        "rss after the flood {after} KiB, base {before} KiB"
    );
    roundtrip(&mut ws, "served after the flood").await;
}
