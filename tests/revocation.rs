//! Revocation end to end: the real binary, real sockets, a real
//! `redis-server` for the shared store. Each test names the behaviour of the
//! contract it checks.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::redis::Redis;
use support::{
    expect_close_within, now, revocation_config, roundtrip, token, EchoUpstream, Gateway, ISS, WAIT,
};

const ONE_SECOND: Duration = Duration::from_millis(1000);

fn memory_gateway(upstream: &EchoUpstream) -> Gateway {
    Gateway::start(&revocation_config(&upstream.url(), "  store: memory"))
}

#[tokio::test]
async fn revoke_by_jti_closes_the_session_with_4403_and_refuses_the_token() {
    let up = EchoUpstream::start().await;
    let gw = memory_gateway(&up);
    let revoked = token("alice", json!({"jti": "jti-1", "iat": now() - 5}));
    let other = token("alice", json!({"jti": "jti-2", "iat": now() - 5}));
    let mut a = gw.session("/echo", &revoked).await;
    let mut b = gw.session("/echo", &other).await;

    let (status, body) = gw.revoke(r#"{"jti":"jti-1"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(
        expect_close_within(&mut a, ONE_SECOND).await,
        (4403, "token revoked".to_owned())
    );
    roundtrip(&mut b, "still").await;
    assert_eq!(gw.connect("/echo", &revoked).await.err(), Some(401));

    let r = gw.admin("GET", "/admin/revocations", None).await;
    assert_eq!(r.status, 200);
    let list: serde_json::Value = serde_json::from_str(&r.body).expect("json list");
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["jti"], "jti-1");
    assert!(entries[0]["keep_until"].as_i64().unwrap_or(0) > now() as i64 + 600);
}

#[tokio::test]
async fn revoke_by_sub_covers_tokens_issued_at_or_before_now_only() {
    let up = EchoUpstream::start().await;
    let gw = memory_gateway(&up);
    let old = token("alice", json!({"jti": "a1", "iat": now() - 10}));
    // `null` drops the claim: a token without `iat`.
    let no_iat = token("alice", json!({"jti": "a2", "iat": null}));
    let bob = token("bob", json!({"jti": "b1", "iat": now() - 10}));
    let mut s1 = gw.session("/echo", &old).await;
    let mut s2 = gw.session("/echo", &no_iat).await;
    let mut s3 = gw.session("/echo", &bob).await;

    let (status, body) = gw
        .revoke(&json!({"sub": "alice", "iss": ISS}).to_string())
        .await;
    assert_eq!((status, body), (201, json!({"closed": 2})));
    for s in [&mut s1, &mut s2] {
        assert_eq!(
            expect_close_within(s, ONE_SECOND).await,
            (4403, "token revoked".to_owned())
        );
    }
    roundtrip(&mut s3, "still").await;
    assert_eq!(gw.connect("/echo", &old).await.err(), Some(401));
    assert_eq!(gw.connect("/echo", &no_iat).await.err(), Some(401));

    // A login after the revocation is accepted (issued a second later:
    // within the issuer's 1 s leeway for a clock slightly ahead).
    let fresh = token("alice", json!({"jti": "a3", "iat": now() + 1}));
    let mut s4 = gw.session("/echo", &fresh).await;
    roundtrip(&mut s4, "still").await;
}

#[tokio::test]
async fn revoke_by_sub_without_iss_covers_every_issuer() {
    let up = EchoUpstream::start().await;
    let gw = memory_gateway(&up);
    let t = token("carol", json!({"jti": "c1", "iat": now() - 10}));
    let mut s = gw.session("/echo", &t).await;
    let (status, body) = gw.revoke(r#"{"sub":"carol"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(expect_close_within(&mut s, ONE_SECOND).await.0, 4403);
}

#[tokio::test]
async fn revoke_by_claim_closes_only_matching_sessions() {
    let up = EchoUpstream::start().await;
    let gw = memory_gateway(&up);
    let t1 = token(
        "dave",
        json!({"jti": "d1", "iat": now() - 10, "sid": "s-1"}),
    );
    let t2 = token(
        "dave",
        json!({"jti": "d2", "iat": now() - 10, "sid": "s-2"}),
    );
    let mut s1 = gw.session("/echo", &t1).await;
    let mut s2 = gw.session("/echo", &t2).await;
    let (status, body) = gw.revoke(r#"{"claim":"sid","value":"s-1"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(
        expect_close_within(&mut s1, ONE_SECOND).await,
        (4403, "token revoked".to_owned())
    );
    roundtrip(&mut s2, "still").await;
    assert_eq!(gw.connect("/echo", &t1).await.err(), Some(401));
}

#[tokio::test]
async fn file_store_survives_a_restart_and_a_torn_last_line() {
    let up = EchoUpstream::start().await;
    let t = token("erin", json!({"jti": "e1", "iat": now() - 10}));
    let mut gw = Gateway::start(&revocation_config(
        &up.url(),
        "  store: file\n  path: revocations.jsonl",
    ));
    let mut s = gw.session("/echo", &t).await;
    assert_eq!(gw.revoke(r#"{"jti":"e1"}"#).await.0, 201);
    assert_eq!(expect_close_within(&mut s, ONE_SECOND).await.0, 4403);
    gw.stop();

    // A crash in the middle of the next append leaves a torn line.
    let file = gw.dir().join("revocations.jsonl");
    let mut text = std::fs::read_to_string(&file).expect("revocation file");
    assert_eq!(text.lines().count(), 1);
    text.push_str(r#"{"kind":"jti","jti":"e2","revok"#);
    std::fs::write(&file, text).expect("tear");

    gw.restart();
    assert_eq!(gw.connect("/echo", &t).await.err(), Some(401));
    assert!(gw.logged("torn"), "the torn line is reported");
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
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&revocation_config(
        &up.url(),
        "  store: file\n  path: revocations.jsonl",
    ));
    let t = token("frank", json!({"jti": "f1", "iat": now() - 10}));
    let mut s = gw.session("/echo", &t).await;
    // A folder where the file should be: no process can append to it.
    std::fs::create_dir(gw.dir().join("revocations.jsonl")).expect("mkdir");
    let (status, body) = gw.revoke(r#"{"jti":"f1"}"#).await;
    assert_eq!(status, 503, "{body}");
    let msg = body["error"].as_str().expect("error message");
    assert!(
        msg.contains("revocations.jsonl") && msg.contains("not be stored"),
        "{msg}"
    );
    assert_eq!(body["closed"], 1);
    assert_eq!(expect_close_within(&mut s, ONE_SECOND).await.0, 4403);
    assert_eq!(gw.connect("/echo", &t).await.err(), Some(401));
}

/// A replica on the shared Redis store, in its own folder.
fn redis_gateway(upstream: &EchoUpstream, redis: &Redis) -> Gateway {
    let section = format!("  store: redis\n  redis_url: \"{}\"", redis.url());
    Gateway::start(&revocation_config(&upstream.url(), &section))
}

/// Waits (bounded) until `gw` reports its Redis store connected.
async fn caught_up(gw: &Gateway) {
    for line in ["connected and caught up", "cluster node joined"] {
        assert!(
            gw.wait_for_log(line, WAIT).await,
            "no log line with {line:?} within {WAIT:?}"
        );
    }
}

#[tokio::test]
async fn redis_revocation_on_one_replica_closes_the_session_on_the_other() {
    let redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let gw1 = redis_gateway(&up, &redis);
    let mut gw2 = redis_gateway(&up, &redis);
    caught_up(&gw2).await;
    let t = token("gina", json!({"jti": "g1", "iat": now() - 10}));
    let mut s = gw2.session("/echo", &t).await;

    // `closed` counts the whole cluster: gw2 closed the session.
    let (status, body) = gw1.revoke(r#"{"sub":"gina"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(
        expect_close_within(&mut s, ONE_SECOND).await,
        (4403, "token revoked".to_owned())
    );
    assert_eq!(gw2.connect("/echo", &t).await.err(), Some(401));
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
    gw2.restart();
    assert_eq!(gw2.connect("/echo", &t).await.err(), Some(401));
}

#[tokio::test]
async fn redis_outage_keeps_enforcing_and_catches_up_on_reconnect() {
    let mut redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let gw1 = redis_gateway(&up, &redis);
    let gw2 = redis_gateway(&up, &redis);
    caught_up(&gw2).await;
    let before = token("hank", json!({"jti": "h1", "iat": now() - 10}));
    let during = token("hank", json!({"jti": "h2", "iat": now() - 10}));
    assert_eq!(gw1.revoke(r#"{"jti":"h1"}"#).await.0, 201);
    let deadline = std::time::Instant::now() + ONE_SECOND;
    while gw2.connect("/echo", &before).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "gw2 never learned h1");
    }

    redis.stop();
    assert!(
        gw2.wait_for_log("redis revocation store unreachable", WAIT)
            .await,
        "no log line with \"redis revocation store unreachable\" within {WAIT:?}"
    );
    // What gw2 knows stays enforced, sessions keep working.
    assert_eq!(gw2.connect("/echo", &before).await.err(), Some(401));
    let mut s = gw2.session("/echo", &during).await;
    // Made while Redis is down: enforced on gw1, reported as not stored.
    let (status, body) = gw1.revoke(r#"{"jti":"h2"}"#).await;
    assert_eq!(status, 503, "{body}");
    roundtrip(&mut s, "still").await;

    // Redis comes back empty (no persistence); gw1 writes back what it knows
    // and gw2 catches up: the session opened during the outage is closed.
    redis.restart().await;
    let (code, reason) = expect_close_within(&mut s, WAIT).await;
    assert_eq!((code, reason.as_str()), (4403, "token revoked"));
    assert_eq!(gw2.connect("/echo", &during).await.err(), Some(401));
    assert_eq!(gw2.connect("/echo", &before).await.err(), Some(401));
}

#[tokio::test]
async fn redis_subscriber_cut_off_catches_up_what_it_missed() {
    let redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let gw1 = redis_gateway(&up, &redis);
    let gw2 = redis_gateway(&up, &redis);
    caught_up(&gw2).await;
    let t = token("ivy", json!({"jti": "i1", "iat": now() - 10}));
    let mut s = gw2.session("/echo", &t).await;
    // Cut every subscription, then revoke at once: gw2 may miss the push and
    // must find the entry when it re-subscribes.
    let killed = redis.command("CLIENT KILL TYPE pubsub").await;
    assert!(killed.starts_with(':'), "{killed}");
    assert_eq!(gw1.revoke(r#"{"jti":"i1"}"#).await.0, 201);
    let (code, _) = expect_close_within(&mut s, Duration::from_secs(5)).await;
    assert_eq!(code, 4403);
}
