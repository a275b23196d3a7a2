//! The admin API end to end: bearer token, request validation of
//! `POST /admin/revocations`, the revocation list and `POST /admin/reload`.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common_revocation;

use common_revocation::{config, echo_upstream, http, now, still_open, token, Gateway, ADMIN};
use serde_json::json;

async fn start() -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config(echo_upstream().await, "  store: memory")).expect("config");
    let gw = Gateway::start(&path);
    (dir, gw)
}

#[tokio::test]
async fn admin_endpoints_without_the_bearer_token_get_401() {
    let (_dir, gw) = start().await;
    let cases = [
        ("GET", "/admin/revocations", None),
        ("POST", "/admin/revocations", Some(r#"{"jti":"x"}"#)),
        ("POST", "/admin/reload", None),
    ];
    for (method, path, body) in cases {
        for bearer in [None, Some("wrong-token"), Some("")] {
            let (status, _) = http(gw.admin, method, path, bearer, body).await;
            assert_eq!(status, 401, "{method} {path} with {bearer:?}");
        }
    }
    // Nothing was revoked by the refused calls.
    let (status, list) = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!((status, list.as_str()), (200, "[]"));
    let (status, _) = http(gw.admin, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_revocation_requests_get_400_with_a_message() {
    let (_dir, gw) = start().await;
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
        let (status, text) = gw.admin("POST", "/admin/revocations", Some(body)).await;
        assert_eq!(status, 400, "{body} -> {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
        let msg = v["error"].as_str().expect("error message");
        assert!(msg.contains(want), "{body}: {msg:?} lacks {want:?}");
    }
    let (_, list) = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!(list, "[]");
}

#[tokio::test]
async fn revocation_list_shows_every_entry_in_force() {
    let (_dir, gw) = start().await;
    for body in [
        r#"{"jti":"j1"}"#,
        r#"{"sub":"alice","iss":"https://issuer.test"}"#,
        r#"{"claim":"sid","value":"s1"}"#,
    ] {
        assert_eq!(gw.revoke(body).await, (201, json!({"closed": 0})));
    }
    // Repeating one keeps a single entry.
    assert_eq!(gw.revoke(r#"{"jti":"j1"}"#).await.0, 201);
    let (status, text) = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!(status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("array");
    assert_eq!(list.len(), 3, "{text}");
    let t = now();
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
    let (dir, gw) = start().await;
    let path = dir.path().join("gateway.yaml");
    let good = std::fs::read_to_string(&path).expect("config");
    let t = token("rita", "r1", Some(now() - 5), json!({}));
    let mut live = gw.session(&t).await;

    std::fs::write(&path, "listeners: [ this is not yaml").expect("break");
    let (status, text) = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{text}");

    // A config that parses but names an unknown key is refused as well.
    std::fs::write(&path, format!("{good}\nunknown_key: 1\n")).expect("typo");
    let (status, text) = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown_key"), "{text}");

    // The old config still serves, live sessions and new ones.
    still_open(&mut live).await;
    let mut fresh = gw.session(&t).await;
    still_open(&mut fresh).await;

    std::fs::write(&path, &good).expect("restore");
    let (status, text) = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(status, 200, "{text}");
    still_open(&mut live).await;
}

#[tokio::test]
async fn reload_and_revocations_reject_wrong_methods() {
    let (_dir, gw) = start().await;
    let (status, _) = http(gw.admin, "GET", "/admin/reload", Some(ADMIN), None).await;
    assert_eq!(status, 405);
    let (status, _) = http(gw.admin, "DELETE", "/admin/revocations", Some(ADMIN), None).await;
    assert_eq!(status, 405);
}
