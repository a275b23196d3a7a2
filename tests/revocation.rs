//! Revocation end to end: the real binary, real sockets, a real
//! `redis-server` for the shared store. Each test names the behaviour of the
//! contract it checks.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common_revocation;

use std::time::Duration;

use common_revocation::{
    closed_within, config, echo_upstream, now, still_open, token, Gateway, Redis, ISS,
};
use serde_json::json;

const ONE_SECOND: Duration = Duration::from_millis(1000);

fn memory_gateway(dir: &tempfile::TempDir, upstream: std::net::SocketAddr) -> Gateway {
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config(upstream, "  store: memory")).expect("write config");
    Gateway::start(&path)
}

#[tokio::test]
async fn revoke_by_jti_closes_the_session_with_4403_and_refuses_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = memory_gateway(&dir, echo_upstream().await);
    let revoked = token("alice", "jti-1", Some(now() - 5), json!({}));
    let other = token("alice", "jti-2", Some(now() - 5), json!({}));
    let mut a = gw.session(&revoked).await;
    let mut b = gw.session(&other).await;

    let (status, body) = gw.revoke(r#"{"jti":"jti-1"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(
        closed_within(&mut a, ONE_SECOND).await,
        (4403, "token revoked".to_owned())
    );
    still_open(&mut b).await;
    assert_eq!(gw.connect(&revoked).await.err(), Some(401));

    let (status, list) = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json list");
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["jti"], "jti-1");
    assert!(entries[0]["keep_until"].as_i64().unwrap_or(0) > now() + 600);
}

#[tokio::test]
async fn revoke_by_sub_covers_tokens_issued_at_or_before_now_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = memory_gateway(&dir, echo_upstream().await);
    let old = token("alice", "a1", Some(now() - 10), json!({}));
    let no_iat = token("alice", "a2", None, json!({}));
    let bob = token("bob", "b1", Some(now() - 10), json!({}));
    let mut s1 = gw.session(&old).await;
    let mut s2 = gw.session(&no_iat).await;
    let mut s3 = gw.session(&bob).await;

    let (status, body) = gw
        .revoke(&json!({"sub": "alice", "iss": ISS}).to_string())
        .await;
    assert_eq!((status, body), (201, json!({"closed": 2})));
    for s in [&mut s1, &mut s2] {
        assert_eq!(
            closed_within(s, ONE_SECOND).await,
            (4403, "token revoked".to_owned())
        );
    }
    still_open(&mut s3).await;
    assert_eq!(gw.connect(&old).await.err(), Some(401));
    assert_eq!(gw.connect(&no_iat).await.err(), Some(401));

    // A login after the revocation is accepted.
    let fresh = token("alice", "a3", Some(now() + 2), json!({}));
    let mut s4 = gw.session(&fresh).await;
    still_open(&mut s4).await;
}

#[tokio::test]
async fn revoke_by_sub_without_iss_covers_every_issuer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = memory_gateway(&dir, echo_upstream().await);
    let t = token("carol", "c1", Some(now() - 10), json!({}));
    let mut s = gw.session(&t).await;
    let (status, body) = gw.revoke(r#"{"sub":"carol"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(closed_within(&mut s, ONE_SECOND).await.0, 4403);
}

#[tokio::test]
async fn revoke_by_claim_closes_only_matching_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = memory_gateway(&dir, echo_upstream().await);
    let t1 = token("dave", "d1", Some(now() - 10), json!({"sid": "s-1"}));
    let t2 = token("dave", "d2", Some(now() - 10), json!({"sid": "s-2"}));
    let mut s1 = gw.session(&t1).await;
    let mut s2 = gw.session(&t2).await;
    let (status, body) = gw.revoke(r#"{"claim":"sid","value":"s-1"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(
        closed_within(&mut s1, ONE_SECOND).await,
        (4403, "token revoked".to_owned())
    );
    still_open(&mut s2).await;
    assert_eq!(gw.connect(&t1).await.err(), Some(401));
}

#[tokio::test]
async fn file_store_survives_a_restart_and_a_torn_last_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = echo_upstream().await;
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        config(upstream, "  store: file\n  path: revocations.jsonl"),
    )
    .expect("config");
    let t = token("erin", "e1", Some(now() - 10), json!({}));
    let mut gw = Gateway::start(&cfg);
    let mut s = gw.session(&t).await;
    assert_eq!(gw.revoke(r#"{"jti":"e1"}"#).await.0, 201);
    assert_eq!(closed_within(&mut s, ONE_SECOND).await.0, 4403);
    gw.stop();

    // A crash in the middle of the next append leaves a torn line.
    let file = dir.path().join("revocations.jsonl");
    let mut text = std::fs::read_to_string(&file).expect("revocation file");
    assert_eq!(text.lines().count(), 1);
    text.push_str(r#"{"kind":"jti","jti":"e2","revok"#);
    std::fs::write(&file, text).expect("tear");

    let gw = Gateway::start(&cfg);
    assert_eq!(gw.connect(&t).await.err(), Some(401));
    assert!(gw.log_contains("torn"), "the torn line is reported");
    // The next entry lands on its own line and the file stays readable.
    assert_eq!(gw.revoke(r#"{"jti":"e3"}"#).await.0, 201);
    let text = std::fs::read_to_string(&file).expect("revocation file");
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in lines {
        serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON");
    }
}

#[tokio::test]
async fn file_store_unwritable_fails_the_admin_call_but_enforces_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = echo_upstream().await;
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        config(upstream, "  store: file\n  path: revocations.jsonl"),
    )
    .expect("config");
    let gw = Gateway::start(&cfg);
    let t = token("frank", "f1", Some(now() - 10), json!({}));
    let mut s = gw.session(&t).await;
    // A folder where the file should be: no process can append to it.
    std::fs::create_dir(dir.path().join("revocations.jsonl")).expect("mkdir");
    let (status, body) = gw.revoke(r#"{"jti":"f1"}"#).await;
    assert_eq!(status, 503, "{body}");
    let msg = body["error"].as_str().expect("error message");
    assert!(
        msg.contains("revocations.jsonl") && msg.contains("not be stored"),
        "{msg}"
    );
    assert_eq!(body["closed"], 1);
    assert_eq!(closed_within(&mut s, ONE_SECOND).await.0, 4403);
    assert_eq!(gw.connect(&t).await.err(), Some(401));
}

fn redis_gateway(
    dir: &tempfile::TempDir,
    name: &str,
    upstream: std::net::SocketAddr,
    redis: &Redis,
) -> Gateway {
    let path = dir.path().join(format!("{name}.yaml"));
    let section = format!("  store: redis\n  redis_url: \"{}\"", redis.url());
    std::fs::write(&path, config(upstream, &section)).expect("config");
    Gateway::start(&path)
}

#[tokio::test]
async fn redis_revocation_on_one_replica_closes_the_session_on_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start().await;
    let upstream = echo_upstream().await;
    let gw1 = redis_gateway(&dir, "one", upstream, &redis);
    let mut gw2 = redis_gateway(&dir, "two", upstream, &redis);
    gw2.wait_log("connected and caught up", common_revocation::WAIT)
        .await;
    let t = token("gina", "g1", Some(now() - 10), json!({}));
    let mut s = gw2.session(&t).await;

    let (status, body) = gw1.revoke(r#"{"sub":"gina"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 0})));
    assert_eq!(
        closed_within(&mut s, ONE_SECOND).await,
        (4403, "token revoked".to_owned())
    );
    assert_eq!(gw2.connect(&t).await.err(), Some(401));
    // Stored with a TTL, indexed for catch-up.
    let keys = redis.command("KEYS wsgate:revocation:*").await;
    let key = keys.lines().nth(2).expect("one revocation key");
    let ttl: i64 = redis.command(&format!("TTL {key}")).await[1..]
        .trim()
        .parse()
        .expect("ttl");
    assert!(ttl > 600, "ttl {ttl}");
    assert!(redis
        .command("ZCARD wsgate:revocations")
        .await
        .starts_with(":1"));

    // A restarted replica loads the entries from Redis before serving.
    gw2.stop();
    let path = gw2.config.clone();
    let gw2 = Gateway::start(&path);
    assert_eq!(gw2.connect(&t).await.err(), Some(401));
}

#[tokio::test]
async fn redis_outage_keeps_enforcing_and_catches_up_on_reconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = Redis::start().await;
    let upstream = echo_upstream().await;
    let gw1 = redis_gateway(&dir, "one", upstream, &redis);
    let gw2 = redis_gateway(&dir, "two", upstream, &redis);
    gw2.wait_log("connected and caught up", common_revocation::WAIT)
        .await;
    let before = token("hank", "h1", Some(now() - 10), json!({}));
    let during = token("hank", "h2", Some(now() - 10), json!({}));
    assert_eq!(gw1.revoke(r#"{"jti":"h1"}"#).await.0, 201);
    let deadline = std::time::Instant::now() + ONE_SECOND;
    while gw2.connect(&before).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "gw2 never learned h1");
    }

    redis.stop();
    gw2.wait_log(
        "redis revocation store unreachable",
        common_revocation::WAIT,
    )
    .await;
    // What gw2 knows stays enforced, sessions keep working.
    assert_eq!(gw2.connect(&before).await.err(), Some(401));
    let mut s = gw2.session(&during).await;
    // Made while Redis is down: enforced on gw1, reported as not stored.
    let (status, body) = gw1.revoke(r#"{"jti":"h2"}"#).await;
    assert_eq!(status, 503, "{body}");
    still_open(&mut s).await;

    // Redis comes back empty (no persistence); gw1 writes back what it knows
    // and gw2 catches up: the session opened during the outage is closed.
    redis.restart().await;
    let (code, reason) = closed_within(&mut s, common_revocation::WAIT).await;
    assert_eq!((code, reason.as_str()), (4403, "token revoked"));
    assert_eq!(gw2.connect(&during).await.err(), Some(401));
    assert_eq!(gw2.connect(&before).await.err(), Some(401));
}

#[tokio::test]
async fn redis_subscriber_cut_off_catches_up_what_it_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start().await;
    let upstream = echo_upstream().await;
    let gw1 = redis_gateway(&dir, "one", upstream, &redis);
    let gw2 = redis_gateway(&dir, "two", upstream, &redis);
    gw2.wait_log("connected and caught up", common_revocation::WAIT)
        .await;
    let t = token("ivy", "i1", Some(now() - 10), json!({}));
    let mut s = gw2.session(&t).await;
    // Cut every subscription, then revoke at once: gw2 may miss the push and
    // must find the entry when it re-subscribes.
    let killed = redis.command("CLIENT KILL TYPE pubsub").await;
    assert!(killed.starts_with(':'), "{killed}");
    assert_eq!(gw1.revoke(r#"{"jti":"i1"}"#).await.0, 201);
    let (code, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert_eq!(code, 4403);
}
