//! The trust boundary: what the upstream receives must be what the gateway
//! checked, read the way real upstream frameworks read it. Header names
//! folded by CGI/WSGI, the request's authority, every token carrier, and
//! claim values that would be read as something else.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use serde_json::json;
use support::*;

fn config(routes: &str) -> String {
    format!("{}routes:\n{routes}", head())
}

/// A route to `up` with identity headers and the given extra keys.
fn identity_route(up: &str, extra: &str) -> String {
    format!(
        "  - id: echo\n    path: /echo\n    upstream: {up}\n    forward:\n      headers:\n        X-User-Id: \"{{claims.sub}}\"\n        X-Roles: \"{{claims.roles}}\"\n{extra}"
    )
}

/// A raw upgrade request with exactly these header lines (no implied Host).
fn raw_upgrade(target: &str, lines: &[(&str, &str)]) -> String {
    let mut r = format!(
        "GET {target} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in lines {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_spelled_with_underscores_never_reach_the_upstream() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&identity_route(&up.url(), "")));
    let t = token("alice", json!({"roles": ["chat"]}));
    let auth = format!("Bearer {t}");
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/echo"),
        &[
            ("authorization", &auth),
            ("X_User_Id", "admin"),
            ("x_roles", "admin"),
            ("X_Forwarded_For", "10.6.6.6"),
            ("X_REAL_IP", "10.6.6.6"),
            ("x-real-ip", "10.6.6.6"),
            ("Forwarded", "for=10.6.6.6"),
            ("X-Keep-Me", "yes"),
        ],
    )
    .await
    .expect("session");
    roundtrip(&mut ws, "x").await;
    let conn = up.conn(0).await;
    for (name, _) in &conn.headers {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        if [
            "x-user-id",
            "x-roles",
            "x-forwarded-for",
            "x-real-ip",
            "forwarded",
        ]
        .contains(&folded.as_str())
        {
            assert!(
                !name.contains('_'),
                "client header {name} reached the upstream"
            );
        }
    }
    assert_eq!(conn.header_all("x-user-id"), ["alice"]);
    assert_eq!(conn.header_all("x-roles"), ["chat"]);
    assert_eq!(conn.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert!(conn.header("x-real-ip").is_none());
    assert!(conn.header("forwarded").is_none());
    assert_eq!(conn.header("x-keep-me"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_named_in_connection_are_hop_by_hop() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&identity_route(&up.url(), "")));
    let t = token("alice", json!({}));
    let req = raw_upgrade(
        "/echo",
        &[
            ("Host", "localhost"),
            ("Authorization", &format!("Bearer {t}")),
            ("Connection", "Upgrade, X-Internal-Secret"),
            ("X-Internal-Secret", "s3cret"),
        ],
    );
    let resp = http_request(gw.addr(), &req).await.expect("request");
    assert_eq!(resp.status, 101);
    let conn = up.conn(0).await;
    assert!(
        conn.header("x-internal-secret").is_none(),
        "{:?}",
        conn.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_be_single_and_agree_with_the_target() {
    let up = EchoUpstream::start().await;
    let routes = format!(
        "  - id: chat\n    host: chat.test\n    path: /echo\n    upstream: {up}\n    auth: none\n  - id: other\n    path: /echo\n    upstream: {up}\n    auth: none\n",
        up = up.url()
    );
    let gw = Gateway::start(&config(&routes));
    let status = |req: String| {
        let addr = gw.addr();
        async move { http_request(addr, &req).await.expect("request").status }
    };
    assert_eq!(
        status(raw_upgrade(
            "/echo",
            &[("Host", "chat.test"), ("Host", "evil.test")]
        ))
        .await,
        400
    );
    assert_eq!(status(raw_upgrade("/echo", &[])).await, 400);
    assert_eq!(status(raw_upgrade("/echo", &[("Host", "")])).await, 400);
    assert_eq!(
        status(raw_upgrade(
            "http://chat.test/echo",
            &[("Host", "evil.test")]
        ))
        .await,
        400
    );

    // The absolute form is routed by its own authority, which the upstream is told.
    assert_eq!(
        status(raw_upgrade(
            "http://chat.test/echo",
            &[("Host", "CHAT.test:80")]
        ))
        .await,
        101
    );
    assert_eq!(status(raw_upgrade("http://chat.test/echo", &[])).await, 101);
    assert_eq!(
        status(raw_upgrade("/echo", &[("Host", "chat.test")])).await,
        101
    );
    assert!(eventually(WAIT, || up.count() == 3).await);
    for c in up.conns() {
        let fwd = c
            .header("x-forwarded-host")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert_eq!(fwd, "chat.test", "{:?}", c.headers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_removes_every_carrier_and_keep_only_the_verified_one() {
    let up = EchoUpstream::start().await;
    let sources = "    token_sources: [header, {query: access_token}, {cookie: access_token}]\n    origins: [\"https://app.test\"]\n";
    let gw = Gateway::start(&config(&format!(
        "  - id: strip\n    path: /strip\n    upstream: {up}\n{sources}  - id: keep\n    path: /keep\n    upstream: {up}\n{sources}    forward:\n      token: keep\n",
        up = up.url()
    )));
    let good = token("alice", json!({}));
    let stale = token("bob", json!({"exp": now() - 3600}));
    let auth = format!("Bearer {good}");
    let cookie = format!("access_token={stale}; theme=dark");
    for path in ["/strip", "/keep"] {
        let url = gw.ws_url(&format!("{path}?access_token={stale}&room=1"));
        let (mut ws, _) = ws_connect(&url, &[("authorization", &auth), ("cookie", &cookie)])
            .await
            .expect("session");
        roundtrip(&mut ws, "x").await;
    }
    let strip = up.conn(0).await;
    assert!(!strip.target.contains("access_token"), "{}", strip.target);
    assert!(strip.header("authorization").is_none());
    assert_eq!(strip.header("cookie"), Some("theme=dark"));
    let keep = up.conn(1).await;
    assert!(!keep.target.contains(&stale), "{}", keep.target);
    assert_eq!(keep.header_all("authorization"), [auth.as_str()]);
    assert_eq!(keep.header("cookie"), Some("theme=dark"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_removes_a_second_authorization_header() {
    let up = EchoUpstream::start().await;
    // Two `Authorization` headers give no token; the query's is verified.
    let sources = "    token_sources: [header, {query: access_token}]\n    forward:\n      headers:\n        X-User-Id: \"{claims.sub}\"\n";
    let gw = Gateway::start(&config(&format!(
        "  - id: strip\n    path: /strip\n    upstream: {up}\n{sources}  - id: keep\n    path: /keep\n    upstream: {up}\n{sources}      token: keep\n",
        up = up.url()
    )));
    let good = token("alice", json!({}));
    let other = token("bob", json!({}));
    let (first, second) = (format!("Bearer {other}"), format!("Bearer {good}"));
    for path in ["/strip", "/keep"] {
        let target = format!("{path}?access_token={good}");
        let auth = [
            ("authorization", first.as_str()),
            ("authorization", second.as_str()),
        ];
        let mut ws = RawWs::connect(gw.addr(), &target, &auth).await;
        ws.send_text("x").await;
        assert_eq!(ws.next_text().await, "x");
    }
    let strip = up.conn(0).await;
    let keep = up.conn(1).await;
    for conn in [&strip, &keep] {
        assert!(conn.header("authorization").is_none(), "{:?}", conn.headers);
        assert!(!conn.headers.iter().any(|(_, v)| v.contains(&other)));
        assert_eq!(conn.header_all("x-user-id"), ["alice"]);
    }
    assert_eq!(strip.target, "/strip");
    assert_eq!(keep.target, format!("/keep?access_token={good}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_route_never_forwards_the_bearer_offer() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&format!(
        "  - id: fm\n    path: /fm\n    upstream: {}\n    token_sources: [first_message]\n",
        up.url()
    )));
    let t = token("alice", json!({}));
    let offer = format!("bearer, {t}, chat.v1");
    let (mut ws, _) = ws_connect(&gw.ws_url("/fm"), &[("sec-websocket-protocol", &offer)])
        .await
        .expect("101");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"token": t}).to_string(),
    ))
    .await
    .expect("auth message");
    roundtrip(&mut ws, "after auth").await;
    let conn = up.conn(0).await;
    assert_eq!(conn.protocols, ["chat.v1"]);
    assert!(!conn.headers.iter().any(|(_, v)| v.contains(&t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_values_that_do_not_round_trip_are_refused() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&identity_route(&up.url(), "")));
    for (case, roles) in [
        ("padded", json!(" admin ")),
        ("comma inside an element", json!(["user,admin"])),
        ("padded element", json!(["user", " admin"])),
        ("line break", json!("admin\r\nX-Evil: 1")),
    ] {
        let t = token("alice", json!({ "roles": roles }));
        assert_eq!(gw.connect("/echo", &t).await.err(), Some(403), "{case}");
    }
    let t = token("alice", json!({"roles": ["user", "admin"]}));
    gw.session("/echo", &t).await;
    assert_eq!(up.conn(0).await.header("x-roles"), Some("user,admin"));
    assert_eq!(up.count(), 1, "a refused claim never reached the upstream");
}
