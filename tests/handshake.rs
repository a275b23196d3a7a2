//! The handshake table of the contract, one test per row, plus token
//! sources, forwarded headers, path rewrite and host routing. Every test
//! runs the real binary and checks that it still serves after the bad
//! request.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The shared head plus `routes` (and whatever else follows).
fn cfg(rest: &str) -> String {
    format!("{}{rest}", head())
}

/// One authenticated route `/echo` to `upstream`, with extra route keys.
fn echo_route(upstream: &str, extra: &str) -> String {
    cfg(&format!(
        "routes:\n  - id: echo\n    path: /echo\n    upstream: {upstream}\n{extra}"
    ))
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_matches_404() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let t = token("alice", json!({}));
    let r = ws_connect(&gw.ws_url("/nowhere"), &[("authorization", &bearer(&t))]).await;
    assert_eq!(status_of(r), 404);
    let r = http_request(gw.addr(), &upgrade_request("/echo2", &[]))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(up.count(), 0);
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_400() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        "routes:\n  - id: pub\n    path: /pub/*\n    upstream: {}\n    auth: none\n",
        up.url()
    )));
    for path in [
        "/pub/../pub/x",
        "/pub/./x",
        "/pub/%2e%2e/x",
        "/pub/%2E%2e/x",
        "/pub/%2e/x",
        "/pub/a/..",
        "/pub/.%2E/x",
    ] {
        let r = http_request(gw.addr(), &upgrade_request(path, &[]))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{path}: {r:?}");
        gw.assert_serving().await;
    }
    // The same route with a clean path is fine.
    let (mut ws, _) = ws_connect(&gw.ws_url("/pub/x"), &[]).await.unwrap();
    roundtrip(&mut ws, "hi").await;
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_route_426() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let r = http_request(
        gw.addr(),
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 426, "{r:?}");
    assert!(
        r.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{r:?}"
    );
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrade_400() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let t = token("alice", json!({}));
    let auth = bearer(&t);
    let cases: Vec<(&str, String)> = vec![
        (
            "bad key",
            format!(
                "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: not-a-key\r\nSec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n\r\n"
            ),
        ),
        (
            "duplicate key",
            format!(
                "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\
                 Sec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n\r\n"
            ),
        ),
        (
            "transfer-encoding",
            format!(
                "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Transfer-Encoding: chunked\r\nAuthorization: {auth}\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "missing key",
            format!(
                "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n\r\n"
            ),
        ),
        (
            "POST upgrade",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Content-Length: 0\r\nAuthorization: {auth}\r\n\r\n"
            ),
        ),
    ];
    for (what, req) in cases {
        let r = http_request(gw.addr(), &req).await.unwrap();
        assert_eq!(r.status, 400, "{what}: {r:?}");
        gw.assert_serving().await;
    }
    assert_eq!(up.count(), 0, "no malformed upgrade reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_401() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let resp = refusal(ws_connect(&gw.ws_url("/echo"), &[]).await);
    assert_eq!(resp.status(), 401);
    let www = resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(www.starts_with("Bearer"), "{www}");
    assert!(www.contains(r#"realm="wsgate""#), "{www}");
    assert!(!www.contains("invalid_token"), "{www}");
    assert_eq!(up.count(), 0);
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_token_401() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("alice", json!({})))
    );
    let hs384 = {
        install_crypto();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
            &claims("alice", json!({})),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let cases = vec![
        (
            "bad signature",
            mint(
                "some-other-secret-0123456789abcdef",
                &claims("alice", json!({})),
            ),
        ),
        (
            "expired",
            token("alice", json!({"exp": now() - 120, "iat": now() - 600})),
        ),
        (
            "not yet valid",
            token("alice", json!({"nbf": now() + 3600})),
        ),
        ("wrong aud", token("alice", json!({"aud": "someone-else"}))),
        (
            "wrong iss",
            token("alice", json!({"iss": "https://evil.test"})),
        ),
        ("missing exp", token("alice", json!({"exp": null}))),
        ("alg none", alg_none),
        ("alg not allowed", hs384),
        ("malformed", "abc.def.ghi".to_owned()),
    ];
    for (what, t) in cases {
        let resp =
            refusal(ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await);
        assert_eq!(resp.status(), 401, "{what}");
        let www = resp
            .headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(www.starts_with("Bearer"), "{what}: {www}");
        assert!(www.contains(r#"error="invalid_token""#), "{what}: {www}");
        assert!(www.contains("error_description="), "{what}: {www}");
        gw.assert_serving().await;
    }
    assert_eq!(up.count(), 0);
    // No full token in the logs.
    let t = token("alice", json!({"aud": "nope"}));
    let _ = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
    assert!(gw.wait_for_log("handshake refused", WAIT).await);
    assert!(
        !gw.logs().iter().any(|l| l.contains(&t)),
        "a token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_fails_403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        r#"routes:
  - id: rooms
    path: /rooms/{{room}}
    upstream: {}
    require:
      - claim: roles
        any_of: [chat]
      - claim: rooms
        any_of: ["{{room}}"]
"#,
        up.url()
    )));
    let t = token("alice", json!({"roles": ["chat"], "rooms": ["lobby"]}));
    let r = ws_connect(
        &gw.ws_url("/rooms/secret"),
        &[("authorization", &bearer(&t))],
    )
    .await;
    assert_eq!(status_of(r), 403);
    let t2 = token("bob", json!({"roles": ["viewer"], "rooms": ["lobby"]}));
    let r = ws_connect(
        &gw.ws_url("/rooms/lobby"),
        &[("authorization", &bearer(&t2))],
    )
    .await;
    assert_eq!(status_of(r), 403);
    assert_eq!(up.count(), 0);
    gw.assert_serving().await;
    let mut ws = ws_bearer(&gw.ws_url("/rooms/lobby"), &t).await;
    roundtrip(&mut ws, "in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_not_allowed_403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    origins: [\"https://app.example.com\"]\n",
    ));
    let t = token("alice", json!({}));
    let r = ws_connect(
        &gw.ws_url("/echo"),
        &[
            ("authorization", &bearer(&t)),
            ("origin", "https://evil.example.com"),
        ],
    )
    .await;
    assert_eq!(status_of(r), 403);
    assert_eq!(up.count(), 0);
    gw.assert_serving().await;
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/echo"),
        &[
            ("authorization", &bearer(&t)),
            ("origin", "https://app.example.com"),
        ],
    )
    .await
    .unwrap();
    roundtrip(&mut ws, "ok").await;
    // No Origin header at all is allowed (non-browser client).
    let mut ws2 = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut ws2, "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_subject_limit_429() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    limits:\n      max_sessions_per_subject: 2\n",
    ));
    let t = token("alice", json!({}));
    let mut a = ws_bearer(&gw.ws_url("/echo"), &t).await;
    let mut b = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut a, "a").await;
    roundtrip(&mut b, "b").await;
    let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
    assert_eq!(status_of(r), 429);
    // Another subject is not affected.
    let mut c = ws_bearer(&gw.ws_url("/echo"), &token("bob", json!({}))).await;
    roundtrip(&mut c, "c").await;
    // Closing one frees a slot.
    a.close(None).await.unwrap();
    drop(a);
    let mut ok = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok((mut d, _)) =
            ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await
        {
            roundtrip(&mut d, "d").await;
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot was not freed after a close");
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_503() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}limits:\n  max_sessions: 1\n",
        echo_route(&up.url(), "")
    ));
    let t = token("alice", json!({}));
    let mut a = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut a, "a").await;
    let r = ws_connect(
        &gw.ws_url("/echo"),
        &[("authorization", &bearer(&token("bob", json!({}))))],
    )
    .await;
    assert_eq!(status_of(r), 503);
    gw.assert_serving().await;
    roundtrip(&mut a, "still").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refused_502() {
    let port = closed_port().await;
    let gw = Gateway::start(&echo_route(&format!("ws://{port}"), ""));
    let t = token("alice", json!({}));
    let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
    assert_eq!(status_of(r), 502);
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_502() {
    // A name that cannot resolve: unreachable, not refused.
    let gw = Gateway::start(&echo_route("ws://wsgate-test.invalid:9", ""));
    let t = token("alice", json!({}));
    let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
    assert_eq!(status_of(r), 502);
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_silent_504() {
    let (addr, _task) = silent_upstream().await;
    let gw = Gateway::start(&cfg(&format!(
        "routes:\n  - id: echo\n    path: /echo\n    upstream:\n      urls: [ws://{addr}]\n      connect_timeout: 500ms\n"
    )));
    let t = token("alice", json!({}));
    let started = Instant::now();
    let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
    assert_eq!(status_of(r), 504);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_non_101_status_passed() {
    for status in [403u16, 500] {
        let (addr, _task) = status_upstream(status).await;
        let gw = Gateway::start(&echo_route(&format!("ws://{addr}"), ""));
        let t = token("alice", json!({}));
        let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
        assert_eq!(status_of(r), status);
        gw.assert_serving().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_close_4401_4403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    reject: close\n    origins: [\"https://app.example.com\"]\n    require:\n      - claim: roles\n        any_of: [chat]\n",
    ));
    // Missing token.
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[])
        .await
        .expect("101 with reject: close");
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert_eq!(reason, "missing token");
    // Expired token.
    let t = token("alice", json!({"exp": now() - 120, "roles": ["chat"]}));
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert_eq!(reason, "token expired");
    // Rule fails.
    let t = token("alice", json!({"roles": ["viewer"]}));
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4403);
    assert!(!reason.is_empty());
    // Origin.
    let t = token("alice", json!({"roles": ["chat"]}));
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/echo"),
        &[
            ("authorization", &bearer(&t)),
            ("origin", "https://evil.example.com"),
        ],
    )
    .await
    .unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4403);
    assert_eq!(reason, "origin not allowed");
    assert_eq!(up.count(), 0, "no upstream is contacted for a refusal");
    gw.assert_serving().await;
    let mut ok = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut ok, "fine").await;
}

// ---------------------------------------------------------------------------
// Token sources
// ---------------------------------------------------------------------------

fn sources_route(upstream: &str, sources: &str, extra: &str) -> String {
    echo_route(upstream, &format!("    token_sources: {sources}\n{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_header_is_stripped() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&sources_route(&up.url(), "[header]", ""));
    let t = token("alice", json!({}));
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    assert!(c.header("authorization").is_none(), "{:?}", c.headers);
    assert!(!c.headers.iter().any(|(_, v)| v.contains(&t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_subprotocol_upstream_selects_none() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&sources_route(&up.url(), "[subprotocol]", ""));
    let t = token("alice", json!({}));
    let offer = format!("bearer, {t}, chat.v1");
    let (mut ws, resp) = ws_connect(&gw.ws_url("/echo"), &[("sec-websocket-protocol", &offer)])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "bearer"
    );
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    assert_eq!(c.protocols, vec!["chat.v1".to_owned()]);
    assert!(
        !c.headers.iter().any(|(_, v)| v.contains(&t)),
        "JWT forwarded: {:?}",
        c.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_subprotocol_upstream_choice_answered() {
    let up = EchoUpstream::selecting(upstream::Select::This("chat.v2".into())).await;
    let gw = Gateway::start(&sources_route(&up.url(), "[subprotocol]", ""));
    let t = token("alice", json!({}));
    let offer = format!("bearer, {t}, chat.v1, chat.v2");
    let (mut ws, resp) = ws_connect(&gw.ws_url("/echo"), &[("sec-websocket-protocol", &offer)])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "chat.v2"
    );
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    assert_eq!(
        c.protocols,
        vec!["chat.v1".to_owned(), "chat.v2".to_owned()]
    );
    assert!(!c.headers.iter().any(|(_, v)| v.contains(&t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_query_is_stripped() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&sources_route(&up.url(), "[{query: access_token}]", ""));
    let t = token("alice", json!({}));
    let (mut ws, _) = ws_connect(
        &gw.ws_url(&format!("/echo?room=a&access_token={t}&x=1")),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{}", describe(&e)));
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    assert_eq!(c.target, "/echo?room=a&x=1");
    // Header-only clients are refused on a query-only route.
    let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &bearer(&t))]).await;
    assert_eq!(status_of(r), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_cookie_is_stripped() {
    let up = EchoUpstream::start().await;
    // A cookie source needs `origins`; this client sends no Origin header.
    let gw = Gateway::start(&sources_route(
        &up.url(),
        "[{cookie: access_token}]",
        "    origins: [\"https://app.example.com\"]\n",
    ));
    let t = token("alice", json!({}));
    let cookie = format!("theme=dark; access_token={t}; lang=en");
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[("cookie", &cookie)])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    let cookies = c.header_all("cookie").join("; ");
    assert!(!cookies.contains(&t), "{cookies}");
    assert!(!cookies.contains("access_token"), "{cookies}");
    assert!(cookies.contains("theme=dark"), "{cookies}");
    assert!(cookies.contains("lang=en"), "{cookies}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_first_message() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}limits:\n  auth_timeout: 1s\n",
        sources_route(&up.url(), "[first_message]", "")
    ));
    let t = token("alice", json!({}));

    // Valid: 101 with the first offered protocol, then auth, then echo.
    let (mut ws, resp) = ws_connect(
        &gw.ws_url("/echo"),
        &[("sec-websocket-protocol", "jwt, v1.jwt")],
    )
    .await
    .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "jwt");
    ws.send(Message::text(json!({ "jwt": t }).to_string()))
        .await
        .unwrap();
    roundtrip(&mut ws, "after auth").await;
    let c = up.conn(0).await;
    assert_eq!(c.protocols, vec!["jwt".to_owned(), "v1.jwt".to_owned()]);
    assert!(
        !c.received
            .iter()
            .any(|m| m.to_text().is_ok_and(|s| s.contains(&t))),
        "the auth message was forwarded: {:?}",
        c.received
    );

    // Timeout: 4408, never before auth_timeout.
    let started = Instant::now();
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[]).await.unwrap();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 4408);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Bad token: 4401.
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[]).await.unwrap();
    let bad = token("alice", json!({"aud": "other"}));
    ws.send(Message::text(json!({ "token": bad }).to_string()))
        .await
        .unwrap();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert_eq!(
        up.count(),
        1,
        "refused first_message sessions never reach the upstream"
    );
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_forbidden_4403() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&sources_route(
        &up.url(),
        "[first_message]",
        "    require:\n      - claim: roles\n        any_of: [chat]\n",
    ));
    let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[]).await.unwrap();
    let t = token("alice", json!({"roles": ["viewer"]}));
    ws.send(Message::text(json!({ "token": t }).to_string()))
        .await
        .unwrap();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 4403);
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------
// What the upstream request carries
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_headers_from_claims_client_copy_dropped() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(
        &up.url(),
        "    forward:\n      headers:\n        X-User-Id: \"{claims.sub}\"\n        X-Roles: \"{claims.roles}\"\n",
    ));
    let t = token("alice", json!({"roles": ["chat", "admin"]}));
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/echo"),
        &[
            ("authorization", &bearer(&t)),
            ("x-user-id", "mallory"),
            ("x-app", "kept"),
        ],
    )
    .await
    .unwrap();
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    assert_eq!(c.header_all("x-user-id"), vec!["alice"]);
    assert_eq!(c.header("x-roles"), Some("chat,admin"));
    assert_eq!(c.header("x-app"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_headers() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let t = token("alice", json!({}));
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/echo"),
        &[
            ("authorization", &bearer(&t)),
            ("host", "chat.example.com:8443"),
            ("x-forwarded-host", "spoofed.example.com"),
        ],
    )
    .await
    .unwrap();
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    let xff = c.header_all("x-forwarded-for").join(",");
    assert!(xff.trim().ends_with("127.0.0.1"), "{xff}");
    assert_eq!(c.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        c.header_all("x-forwarded-host"),
        vec!["chat.example.com:8443"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rewrite_with_params() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        r#"routes:
  - id: rooms
    path: /rooms/{{room}}/live
    upstream:
      urls: [{}]
      path: /internal/ws/{{room}}
"#,
        up.url()
    )));
    let t = token("alice", json!({}));
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/rooms/lobby/live?since=5"),
        &[("authorization", &bearer(&t))],
    )
    .await
    .unwrap();
    roundtrip(&mut ws, "x").await;
    let c = up.conn(0).await;
    assert_eq!(c.target, "/internal/ws/lobby?since=5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_path_forwarded_by_default() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        "routes:\n  - id: p\n    path: /api/*\n    upstream: {}\n",
        up.url()
    )));
    let t = token("alice", json!({}));
    let mut ws = ws_bearer(&gw.ws_url("/api/v1/stream?q=1"), &t).await;
    roundtrip(&mut ws, "x").await;
    assert_eq!(up.conn(0).await.target, "/api/v1/stream?q=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routing() {
    let exact = EchoUpstream::start().await;
    let wild = EchoUpstream::start().await;
    let fallback = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        r#"routes:
  - id: exact
    host: chat.example.com
    path: /ws
    upstream: {}
    auth: none
  - id: wild
    host: "*.example.com"
    path: /ws
    upstream: {}
    auth: none
  - id: other
    path: /ws
    upstream: {}
    auth: none
"#,
        exact.url(),
        wild.url(),
        fallback.url()
    )));
    let cases = [
        ("chat.example.com", &exact),
        ("CHAT.Example.COM:8443", &exact),
        ("eu.example.com", &wild),
        ("a.b.example.com", &wild),
        ("Eu.Example.Com:80", &wild),
        ("example.org", &fallback),
        ("localhost", &fallback),
    ];
    for (host, up) in cases {
        let before = up.count();
        let (mut ws, _) = ws_connect(&gw.ws_url("/ws"), &[("host", host)])
            .await
            .unwrap_or_else(|e| panic!("{host}: {}", describe(&e)));
        roundtrip(&mut ws, host).await;
        assert_eq!(up.count(), before + 1, "{host} went elsewhere");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_too_large_431() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&echo_route(&up.url(), ""));
    let big = "a".repeat(1024 * 1024);
    let req = upgrade_request("/echo", &[("x-big", &big)]);
    match http_request(gw.addr(), &req).await {
        Ok(r) => assert_eq!(r.status, 431, "{:?}", r.status),
        // Closing the connection is acceptable too; crashing is not.
        Err(e) => eprintln!("connection closed on a huge head: {e}"),
    }
    let many: Vec<(String, String)> = (0..300)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = http_request(gw.addr(), &upgrade_request("/echo", &many_ref)).await;
    if let Ok(r) = r {
        assert_eq!(r.status, 431, "too many headers");
    }
    gw.assert_serving().await;
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &token("alice", json!({}))).await;
    roundtrip(&mut ws, "alive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_needs_no_token() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&cfg(&format!(
        "routes:\n  - id: pub\n    path: /pub\n    upstream: {}\n    auth: none\n",
        up.url()
    )));
    let (mut ws, _) = ws_connect(&gw.ws_url("/pub"), &[]).await.unwrap();
    roundtrip(&mut ws, "x").await;
}
