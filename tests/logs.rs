//! Audit logs: one line per handshake and per session end, in text or JSON,
//! and never a token.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use serde_json::{json, Value};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_line_per_handshake_and_per_session_end() {
    let up = EchoUpstream::start().await;
    let yaml = format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {}\n",
        head().replace("format: text", "format: json"),
        up.url()
    );
    let gw = Gateway::start(&yaml);
    let t = token("alice", json!({ "jti": "audit-1" }));
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &t).await;
    roundtrip(&mut ws, "hello").await;
    // The id an operator sees in the admin API is the one the lines carry.
    let listed = gw.admin("GET", "/admin/sessions", None).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed: Value = serde_json::from_str(&listed.body).expect("sessions JSON");
    let id = listed[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session id in {listed}"))
        .to_owned();
    drop(ws);
    let refused = ws_connect(
        &gw.ws_url("/echo"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(status_of(refused), 401);
    assert!(gw.wait_for_log("session closed", WAIT).await);
    assert!(gw.wait_for_log("handshake refused", WAIT).await);

    let lines: Vec<Value> = gw
        .logs()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|v| v["message"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} line in {lines:#?}"))
            .clone()
    };
    let ok = find("handshake accepted");
    assert_eq!(ok["route"], "echo");
    assert_eq!(ok["sub"], "alice");
    assert_eq!(ok["jti"], "audit-1");
    assert_eq!(ok["outcome"], "ok");
    assert!(ok["remote"]
        .as_str()
        .is_some_and(|r| r.starts_with("127.0.0.1:")));
    assert!(ok["duration_ms"].is_number());
    let host = format!("127.0.0.1:{}", gw.addr().port());
    let where_ = |line: &Value| {
        (
            line["path"].clone(),
            line["host"].clone(),
            line["upstream"].clone(),
            // A number or a string, depending on the field's type: the text
            // is what an operator matches against the admin API.
            line["session"].to_string().trim_matches('"').to_owned(),
        )
    };
    let expected = (json!("/echo"), json!(host), json!(up.url()), id);
    assert_eq!(where_(&ok), expected, "handshake line: {ok}");

    let refused = find("handshake refused");
    assert_eq!(refused["outcome"], "unauthorized");
    assert_eq!(refused["status"], 401);

    let end = find("session closed");
    assert_eq!(end["route"], "echo");
    assert_eq!(end["msgs_up"], 1);
    assert_eq!(end["bytes_up"], 5);
    assert_eq!(end["msgs_down"], 1);
    assert!(end["duration_ms"].is_number());
    assert!(end["reason"].is_string());
    assert_eq!(where_(&end), expected, "session-end line: {end}");

    let all = gw.logs().join("\n");
    assert!(!all.contains(&t), "a full token reached the log");
}
