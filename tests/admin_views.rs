//! What the admin page reads: the extra fields of `GET /admin/sessions`
//! (live traffic, age, time to expiry), `GET /admin/issuers`,
//! `GET /admin/history`, and the page's own files with their CSP.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do not
// apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use serde_json::{json, Value};
use support::{revocation_config, roundtrip, token, EchoUpstream, Gateway};

async fn start() -> (EchoUpstream, Gateway) {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&revocation_config(&up.url(), "  store: memory"));
    (up, gw)
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).expect("JSON answer")
}

#[tokio::test]
async fn sessions_carry_live_traffic_age_and_time_to_expiry() {
    let (_up, gw) = start().await;
    let mut ws = gw.session("/echo", &token("alice", json!({}))).await;
    roundtrip(&mut ws, "hello, world").await;
    // `session` sent "ping" once; then one more message each way. The relay
    // counts a frame just after passing it on, so the echo may reach the
    // client a moment before its count: poll.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let list = loop {
        let r = gw.admin("GET", "/admin/sessions", None).await;
        assert_eq!(r.status, 200);
        let list = parse(&r.body);
        if list[0]["messages_to_client"] == 2 || tokio::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let s = &list[0];
    assert_eq!(s["messages_to_upstream"], 2, "{s}");
    assert_eq!(s["messages_to_client"], 2, "{s}");
    assert_eq!(s["bytes_to_upstream"], 4 + 12, "{s}");
    assert_eq!(s["bytes_to_client"], 4 + 12, "{s}");
    assert_eq!(s["issuer_id"], "test");
    let age = s["age_seconds"].as_i64().expect("age");
    assert!((0..60).contains(&age), "{s}");
    let left = s["expires_in_seconds"].as_i64().expect("expiry");
    assert!((500..=600).contains(&left), "{s}");
}

#[tokio::test]
async fn issuers_show_their_keys_and_history_counts_outcomes() {
    let (_up, gw) = start().await;
    let r = gw.admin("GET", "/admin/issuers", None).await;
    assert_eq!(r.status, 200);
    let issuers = parse(&r.body);
    assert_eq!(issuers[0]["id"], "test");
    assert_eq!(issuers[0]["source"], "local");
    assert_eq!(issuers[0]["kids"], json!([null]));
    assert!(issuers[0]["loaded_at"].as_i64().is_some());

    let ws = gw.session("/echo", &token("alice", json!({}))).await;
    drop(ws);
    assert_eq!(gw.connect("/echo", "not-a-token").await.err(), Some(401));
    assert_eq!(gw.connect("/nowhere", "x").await.err(), Some(404));
    let sum = |h: &Value, field: &str, key: &str| -> u64 {
        h["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .filter_map(|b| b[field][key].as_u64())
            .sum()
    };
    // The close is counted once the session task has ended: poll for it.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let h = loop {
        let h = parse(&gw.admin("GET", "/admin/history", None).await.body);
        if sum(&h, "closes", "client") == 1 || tokio::time::Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(sum(&h, "closes", "client"), 1, "{h}");
    assert_eq!(h["bucket_seconds"], 10);
    assert_eq!(h["buckets"].as_array().map(Vec::len), Some(36));
    assert_eq!(sum(&h, "handshakes", "ok"), 1, "{h}");
    assert_eq!(sum(&h, "handshakes", "unauthorized"), 1, "{h}");
    assert_eq!(sum(&h, "handshakes", "not_found"), 1, "{h}");
}

#[tokio::test]
async fn the_page_is_served_without_token_under_a_strict_policy() {
    let (_up, gw) = start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/admin.js", "text/javascript"),
        ("/ui/admin.css", "text/css"),
    ] {
        let r = gw.admin_as(None, "GET", path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r
            .header("content-type")
            .is_some_and(|v| v.starts_with(kind)));
        let csp = r.header("content-security-policy").expect("CSP");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(!r.body.contains(support::ADMIN_TOKEN));
    }
    for path in ["/admin/issuers", "/admin/history"] {
        assert_eq!(gw.admin_as(None, "GET", path, None).await.status, 401);
    }
}
