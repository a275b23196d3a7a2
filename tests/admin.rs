//! The admin API end to end: bearer token, request validation of
//! `POST /admin/revocations`, the revocation list and `POST /admin/reload`.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use serde_json::json;
use support::{now, read_to_string, revocation_config, roundtrip, token, EchoUpstream, Gateway};

/// A gateway with the memory store and its echo upstream (kept alive).
async fn start() -> (EchoUpstream, Gateway) {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&revocation_config(&up.url(), "  store: memory"));
    (up, gw)
}

#[tokio::test]
async fn admin_endpoints_without_the_bearer_token_get_401() {
    let (_up, gw) = start().await;
    let cases = [
        ("GET", "/admin/revocations", None),
        ("POST", "/admin/revocations", Some(r#"{"jti":"x"}"#)),
        ("POST", "/admin/reload", None),
    ];
    for (method, path, body) in cases {
        for bearer in [None, Some("wrong-token"), Some("")] {
            let r = gw.admin_as(bearer, method, path, body).await;
            assert_eq!(r.status, 401, "{method} {path} with {bearer:?}");
        }
    }
    // Nothing was revoked by the refused calls.
    let r = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    let r = gw.admin_as(None, "GET", "/healthz", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn bad_revocation_requests_get_400_with_a_message() {
    let (_up, gw) = start().await;
    let cases = [
        ("not json", "invalid JSON"),
        (r#"{"jti": 5}"#, "invalid JSON"),
        (r#"{"jti":"a","reason":"x"}"#, "unknown field"),
        ("{}", "expected one of"),
        (r#"{"jti":""}"#, "must not be empty"),
        (r#"{"sub":""}"#, "must not be empty"),
        (r#"{"claim":"sid","value":""}"#, "must not be empty"),
        (r#"{"claim":"sid"}"#, "needs a `value`"),
        (r#"{"jti":"a","sub":"b"}"#, "only one selector"),
        (r#"{"iss":"https://issuer.test"}"#, "only used with `sub`"),
    ];
    for (body, want) in cases {
        let r = gw.admin("POST", "/admin/revocations", Some(body)).await;
        let text = r.body;
        assert_eq!(r.status, 400, "{body} -> {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
        let msg = v["error"].as_str().expect("error message");
        assert!(msg.contains(want), "{body}: {msg:?} lacks {want:?}");
    }
    let r = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!(r.body, "[]");
}

#[tokio::test]
async fn revocation_list_shows_every_entry_in_force() {
    let (_up, gw) = start().await;
    for body in [
        r#"{"jti":"j1"}"#,
        r#"{"sub":"alice","iss":"https://issuer.test"}"#,
        r#"{"claim":"sid","value":"s1"}"#,
    ] {
        assert_eq!(gw.revoke(body).await, (201, json!({"closed": 0})));
    }
    // Repeating one keeps a single entry.
    assert_eq!(gw.revoke(r#"{"jti":"j1"}"#).await.0, 201);
    let r = gw.admin("GET", "/admin/revocations", None).await;
    let text = r.body;
    assert_eq!(r.status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("array");
    assert_eq!(list.len(), 3, "{text}");
    let t = now() as i64;
    for e in &list {
        let revoked_at = e["revoked_at"].as_i64().expect("revoked_at");
        let keep_until = e["keep_until"].as_i64().expect("keep_until");
        assert!((t - 5..=t + 1).contains(&revoked_at), "{e}");
        assert!(keep_until > revoked_at, "{e}");
    }
    assert!(list.iter().any(|e| e["jti"] == "j1"));
    assert!(list
        .iter()
        .any(|e| e["sub"] == "alice" && e["iss"] == "https://issuer.test"));
    assert!(list
        .iter()
        .any(|e| e["claim"] == "sid" && e["value"] == "s1"));
}

#[tokio::test]
async fn reload_with_a_broken_file_is_refused_and_the_old_config_serves() {
    let (_up, gw) = start().await;
    let good = read_to_string(gw.config_path());
    let t = token("rita", json!({"jti": "r1", "iat": now() - 5}));
    let mut live = gw.session("/echo", &t).await;

    gw.rewrite_config("listeners: [ this is not yaml");
    let r = gw.admin("POST", "/admin/reload", None).await;
    let text = r.body;
    assert_eq!(r.status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{text}");

    // A config that parses but names an unknown key is refused as well.
    gw.rewrite_config(&format!("{good}\nunknown_key: 1\n"));
    let r = gw.admin("POST", "/admin/reload", None).await;
    let text = r.body;
    assert_eq!(r.status, 400, "{text}");
    assert!(text.contains("unknown_key"), "{text}");

    // The old config still serves, live sessions and new ones.
    roundtrip(&mut live, "still").await;
    let mut fresh = gw.session("/echo", &t).await;
    roundtrip(&mut fresh, "still").await;

    gw.rewrite_config(&good);
    let r = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    roundtrip(&mut live, "still").await;
}

#[tokio::test]
async fn reload_and_revocations_reject_wrong_methods() {
    let (_up, gw) = start().await;
    let r = gw.admin("GET", "/admin/reload", None).await;
    assert_eq!(r.status, 405);
    let r = gw.admin("DELETE", "/admin/revocations", None).await;
    assert_eq!(r.status, 405);
}

/// The value of one series in a `/metrics` body.
fn series(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// `/metrics` without a token, after real sessions: the contract's names
/// with the live values, the spread over the I/O workers, and every
/// worker's tasks gone once the sessions (and some refused handshakes) end.
#[tokio::test]
async fn metrics_count_live_sessions_messages_and_worker_tasks() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "workers: 2\n{}",
        revocation_config(&up.url(), "  store: memory")
    ));
    // `session` makes one round trip: 1 message each way per session.
    let a = gw.session("/echo", &token("alice", json!({}))).await;
    let b = gw.session("/echo", &token("bob", json!({}))).await;
    // The relay counts a read's frames just after writing them out, so the
    // client can hold its echo a moment before the count moves: wait for it.
    let want = [
        ("wsgate_sessions_active{route=\"echo\"}", 2.0),
        (
            "wsgate_handshakes_total{route=\"echo\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "wsgate_messages_total{route=\"echo\",direction=\"to_upstream\"}",
            2.0,
        ),
        (
            "wsgate_messages_total{route=\"echo\",direction=\"to_client\"}",
            2.0,
        ),
    ];
    let body = scrape_until(&gw, |body| {
        want.iter().all(|(name, v)| series(body, name) == Some(*v))
    })
    .await;
    // Each session is at least one live task on the worker it landed on,
    // and two sessions go to two workers.
    let workers = |body: &str| {
        (
            series(body, "wsgate_worker_tasks{worker=\"0\"}").unwrap_or(-1.0),
            series(body, "wsgate_worker_tasks{worker=\"1\"}").unwrap_or(-1.0),
        )
    };
    let (w0, w1) = workers(&body);
    assert!(w0 >= 1.0 && w1 >= 1.0, "worker tasks {w0}, {w1}");

    // Clients vanish, others are refused: nothing stays behind on a worker.
    drop((a, b));
    for _ in 0..4 {
        assert_eq!(gw.connect("/echo", "not-a-token").await.err(), Some(401));
    }
    scrape_until(&gw, |body| {
        let active = series(body, "wsgate_sessions_active{route=\"echo\"}");
        workers(body) == (0.0, 0.0) && active == Some(0.0)
    })
    .await;
}

/// Scrapes `/metrics` (no token) until `done` holds for the body, and
/// returns that body; fails with the last body after [`support::WAIT`].
async fn scrape_until(gw: &Gateway, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let r = gw.admin_as(None, "GET", "/metrics", None).await;
        assert_eq!(r.status, 200);
        if done(&r.body) {
            return r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not there after {:?}:\n{}",
            support::WAIT,
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
