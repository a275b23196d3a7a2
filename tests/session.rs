//! The session table of the contract: what each side sees once the
//! WebSocket is up.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn cfg(rest: &str) -> String {
    format!("{}{rest}", head())
}

/// One authenticated route `/echo` to `upstream`, with extra route keys.
fn echo_route(upstream: &str, extra: &str) -> String {
    cfg(&format!(
        "routes:\n  - id: echo\n    path: /echo\n    upstream: {upstream}\n{extra}"
    ))
}

async fn connect(gw: &Gateway, sub: &str) -> Ws {
    ws_bearer(&gw.ws_url("/echo"), &token(sub, json!({}))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_unchanged_both_ways() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let mut ws = connect(&gw, "alice").await;

    ws.send(Message::text("héllo ✓")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "héllo ✓");

    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(bin.clone())).await.unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Binary(b)) => assert_eq!(&b[..], &bin[..]),
        other => panic!("expected binary, got {other:?}"),
    }

    ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no pong");
        match next_msg(&mut ws).await {
            Some(Message::Pong(p)) => {
                assert_eq!(&p[..], b"p1");
                break;
            }
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    }
    let c = up.conn(0).await;
    assert!(
        eventually(WAIT, || up.conns()[0]
            .received
            .iter()
            .any(|m| matches!(m, Message::Ping(p) if &p[..] == b"p1")))
        .await,
        "upstream never saw the ping: {:?}",
        c.received
    );
    // An empty text message too.
    ws.send(Message::text("")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_passed_to_upstream() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let mut ws = connect(&gw, "alice").await;
    roundtrip(&mut ws, "x").await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "client bye".into(),
    })))
    .await
    .unwrap();
    assert_eq!(up.close_of(0).await, (4000, "client bye".to_owned()));
    // The close handshake completes towards the client.
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_close_passed_to_client() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let mut ws = connect(&gw, "alice").await;
    ws.send(Message::text("graceful 4001 upstream bye"))
        .await
        .unwrap();
    assert_eq!(
        expect_close(&mut ws).await,
        (4001, "upstream bye".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_lost_without_close_1014() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    // A raw client: tungstenite reports a received 1014 as 1002.
    let auth = format!("Bearer {}", token("alice", json!({})));
    let mut ws = RawWs::connect(gw.addr(), "/echo", &[("Authorization", &auth)]).await;
    ws.send_text("x").await;
    assert_eq!(ws.next_text().await, "x");
    ws.send_text("close").await;
    let (code, _) = ws.expect_close().await;
    assert_eq!(code, 1014);
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_too_big_1009() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    session:\n      max_message_size: 1KiB\n",
    ));
    let mut ws = connect(&gw, "alice").await;
    roundtrip(&mut ws, &"a".repeat(1000)).await;
    ws.send(Message::binary(vec![1u8; 4096])).await.unwrap();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1009);
    assert_eq!(up.close_of(0).await.0, 1001);
    // The oversized message never reached the upstream.
    assert!(!up.conns()[0]
        .received
        .iter()
        .any(|m| matches!(m, Message::Binary(b) if b.len() == 4096)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_1001() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    session:\n      idle_timeout: 1500ms\n",
    ));
    let mut ws = connect(&gw, "alice").await;
    // Traffic keeps it alive past the timeout.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        roundtrip(&mut ws, "tick").await;
    }
    let quiet = Instant::now();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1001);
    assert!(
        quiet.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        quiet.elapsed()
    );
    assert_eq!(up.close_of(0).await.0, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_4401() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let exp = now() + 3;
    let t = token("alice", json!({ "exp": exp }));
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut ws, "x").await;
    let (code, reason) = expect_close(&mut ws).await;
    let closed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
    assert!(
        closed_at >= exp as f64,
        "closed at {closed_at}, before exp {exp}"
    );
    // leeway 1s + 1s, plus slack for a loaded machine.
    assert!(
        closed_at <= exp as f64 + 4.0,
        "closed at {closed_at}, exp {exp}"
    );
    assert_eq!(up.close_of(0).await.0, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_expiry_false_keeps_the_session_past_exp() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    session:\n      close_on_expiry: false\n",
    ));
    let exp = now() + 2;
    let t = token("alice", json!({ "exp": exp }));
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &t).await;
    // Wait until well past exp (and the 1 s leeway), then prove the session lives.
    while now() < exp + 3 {
        roundtrip(&mut ws, "still here").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    roundtrip(&mut ws, "after exp").await;
    // The token itself is expired now: a new handshake with it is refused.
    let r = ws_connect(
        &gw.ws_url("/echo"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(status_of(r), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_kill_4403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let mut a = connect(&gw, "alice").await;
    let mut b = connect(&gw, "bob").await;
    roundtrip(&mut a, "a").await;
    roundtrip(&mut b, "b").await;
    let r = gw.admin("GET", "/admin/sessions", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2, "{list}");
    let alice = arr.iter().find(|s| s["sub"] == "alice").unwrap();
    for k in [
        "id",
        "route",
        "iss",
        "sub",
        "remote_addr",
        "connected_at",
        "expires_at",
    ] {
        assert!(alice.get(k).is_some(), "{k} missing in {alice}");
    }
    assert_eq!(alice["route"], "echo");
    assert_eq!(alice["iss"], ISS);
    let id = match &alice["id"] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let r = gw
        .admin("DELETE", &format!("/admin/sessions/{id}"), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        expect_close(&mut a).await,
        (4403, "session terminated".to_owned())
    );
    assert!(
        eventually(WAIT, || up
            .conns()
            .iter()
            .any(|c| c.close.as_ref().is_some_and(|c| c.0 == 1001)))
        .await,
        "upstream did not get 1001"
    );
    roundtrip(&mut b, "bob lives").await;
    let r = gw
        .admin("DELETE", &format!("/admin/sessions/{id}"), None)
        .await;
    assert_eq!(r.status, 404);
    // No token: 401.
    let r = http_request(
        gw.admin.unwrap(),
        "GET /admin/sessions HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_1001_and_exits() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}limits:\n  shutdown_grace: 3s\n",
        echo_route(&up.url(), "")
    ));
    let mut a = connect(&gw, "alice").await;
    let mut b = connect(&gw, "bob").await;
    roundtrip(&mut a, "a").await;
    roundtrip(&mut b, "b").await;
    let started = Instant::now();
    gw.sigterm();
    assert_eq!(expect_close(&mut a).await.0, 1001);
    assert_eq!(expect_close(&mut b).await.0, 1001);
    assert_eq!(up.close_of(0).await.0, 1001);
    assert_eq!(up.close_of(1).await.0, 1001);
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some(), "did not exit");
    assert!(
        started.elapsed() < Duration::from_secs(3) + Duration::from_millis(1500),
        "exit took {:?}",
        started.elapsed()
    );
    assert!(status.unwrap().success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_grace_when_peers_stall() {
    // The client never answers the close: the gateway must still exit by
    // shutdown_grace.
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}limits:\n  shutdown_grace: 2s\n",
        echo_route(&up.url(), "")
    ));
    let mut a = connect(&gw, "alice").await;
    roundtrip(&mut a, "a").await;
    let started = Instant::now();
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some(), "did not exit");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    drop(a);
}

fn roles_route(upstream: &str, roles: &str) -> String {
    echo_route(
        upstream,
        &format!("    require:\n      - claim: roles\n        any_of: {roles}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_revokes_by_policy_4403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&roles_route(&up.url(), "[chat, admin]"));
    let mut alice = ws_bearer(
        &gw.ws_url("/echo"),
        &token("alice", json!({"roles": ["chat"]})),
    )
    .await;
    let mut bob = ws_bearer(
        &gw.ws_url("/echo"),
        &token("bob", json!({"roles": ["admin"]})),
    )
    .await;
    roundtrip(&mut alice, "a").await;
    roundtrip(&mut bob, "b").await;
    gw.reload(&roles_route(&up.url(), "[admin]")).await;
    assert_eq!(
        expect_close(&mut alice).await,
        (4403, "access revoked by policy".to_owned())
    );
    roundtrip(&mut bob, "bob continues").await;
    assert!(eventually(WAIT, || up.closed() == 1).await);
    let closed: Vec<_> = up.conns().into_iter().filter_map(|c| c.close).collect();
    assert_eq!(closed[0].0, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removing_route_4403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let mut a = connect(&gw, "alice").await;
    roundtrip(&mut a, "a").await;
    gw.reload(&cfg(&format!(
        "routes:\n  - id: other\n    path: /other\n    upstream: {}\n",
        up.url()
    )))
    .await;
    assert_eq!(
        expect_close(&mut a).await,
        (4403, "access revoked by policy".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_expiry() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    session:\n      refresh: true\n",
    ));
    let t = token("alice", json!({"exp": now() + 4}));
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut ws, "x").await;

    // Another subject: refused, old expiry stands.
    let other = token("bob", json!({"exp": now() + 600}));
    ws.send(Message::text(
        json!({"type": "wsgate.refresh", "token": other}).to_string(),
    ))
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(reply["type"], "wsgate.refresh_failed", "{reply}");
    assert!(reply["error"].is_string(), "{reply}");

    let new_exp = now() + 600;
    let fresh = token("alice", json!({"exp": new_exp}));
    ws.send(Message::text(
        json!({"type": "wsgate.refresh", "token": fresh}).to_string(),
    ))
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(reply["type"], "wsgate.refreshed", "{reply}");
    assert_eq!(reply["exp"], json!(new_exp), "{reply}");

    // Past the old expiry (+ leeway), the session is still alive.
    tokio::time::sleep(Duration::from_secs(7)).await;
    roundtrip(&mut ws, "still here").await;
    // Refresh messages are the gateway's, never forwarded.
    assert!(!up.conns()[0]
        .received
        .iter()
        .any(|m| m.to_text().is_ok_and(|s| s.contains("wsgate.refresh"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_and_skips_refusing_url() {
    let a = EchoUpstream::start().await;
    let b = EchoUpstream::start().await;
    let dead = closed_port().await;
    let gw = Gateway::start(&cfg(&format!(
        r#"routes:
  - id: echo
    path: /echo
    upstream:
      urls: [ws://{dead}, {}, {}]
      balance: round_robin
      connect_timeout: 2s
"#,
        a.url(),
        b.url()
    )));
    let mut sessions = Vec::new();
    for i in 0..6 {
        let mut ws = connect(&gw, &format!("user{i}")).await;
        roundtrip(&mut ws, "x").await;
        sessions.push(ws);
    }
    assert_eq!(a.count() + b.count(), 6);
    assert!(
        a.count() >= 2 && b.count() >= 2,
        "a={} b={}",
        a.count(),
        b.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_idle_upstream() {
    let a = EchoUpstream::start().await;
    let b = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        "routes:\n  - id: echo\n    path: /echo\n    upstream:\n      urls: [{}, {}]\n      balance: least_connections\n",
        a.url(),
        b.url()
    )));
    let mut sessions = Vec::new();
    for i in 0..4 {
        let mut ws = connect(&gw, &format!("user{i}")).await;
        roundtrip(&mut ws, "x").await;
        sessions.push(ws);
    }
    assert_eq!((a.count(), b.count()), (2, 2));
    drop(sessions);
}

/// `workers: N` runs N I/O threads; sessions spread over them all relay, and
/// one client vanishing leaves the sessions beside it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_relay_on_the_configured_workers() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!("workers: 3\n{}", echo_route(&up.url(), "")));
    assert_eq!(gw.threads_named("wsgate-io-"), 3);
    assert!(gw.logged("workers=3"), "{:?}", gw.logs());
    let mut sessions = Vec::new();
    for i in 0..6 {
        sessions.push(connect(&gw, &format!("user{i}")).await);
    }
    for (i, ws) in sessions.iter_mut().enumerate() {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(ws).await, format!("m{i}"));
    }
    drop(sessions.remove(0));
    for (i, ws) in sessions.iter_mut().enumerate() {
        ws.send(Message::text(format!("again {i}"))).await.unwrap();
        assert_eq!(next_text(ws).await, format!("again {i}"));
    }
    assert!(
        gw.wait_for_log("session closed", WAIT).await,
        "{:?}",
        gw.logs()
    );
}

/// `balance: hash` on a claim: every session of one key reaches one
/// upstream, whether its token came in a header or in the first message
/// (both paths build the upstream request, and its key, the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_hash_keeps_one_claim_on_one_upstream_on_either_token_path() {
    let a = EchoUpstream::start().await;
    let b = EchoUpstream::start().await;
    let upstream = format!(
        "\n      urls: [{}, {}]\n      balance: hash\n      hash_key: {{claim: room}}",
        a.url(),
        b.url()
    );
    let gw = Gateway::start(&cfg(&format!(
        "routes:\n  - id: header\n    path: /echo\n    upstream: {upstream}\n  - id: first\n    path: /first\n    token_sources: [first_message]\n    upstream: {upstream}\n"
    )));
    // Which upstream took the session just opened (each counts its own).
    let took = |before: (usize, usize)| match (a.count() - before.0, b.count() - before.1) {
        (1, 0) => "a",
        (0, 1) => "b",
        other => panic!("one new upstream connection expected, got {other:?}"),
    };
    let mut by_room = std::collections::HashMap::new();
    for room in 0..8 {
        let t = token("alice", json!({ "room": format!("room-{room}") }));
        for path in ["/echo", "/first"] {
            let before = (a.count(), b.count());
            let mut ws = if path == "/echo" {
                ws_bearer(&gw.ws_url(path), &t).await
            } else {
                let (mut ws, _) = ws_connect(&gw.ws_url(path), &[])
                    .await
                    .expect("101 before the first message");
                ws.send(Message::text(json!({ "token": t }).to_string()))
                    .await
                    .expect("send the first message");
                ws
            };
            roundtrip(&mut ws, "x").await;
            let name = took(before);
            let first = by_room.entry(room).or_insert(name);
            assert_eq!(
                *first, name,
                "room {room} moved to another upstream on {path}"
            );
        }
    }
    let used: std::collections::HashSet<_> = by_room.values().collect();
    assert_eq!(
        used.len(),
        2,
        "eight keys all hashed to one upstream: {by_room:?}"
    );
}
