//! Replicas on one Redis behave as one gateway: two and three real
//! `wsgate` processes, a real `redis-server` (and a Sentinel for failover),
//! real sockets. Each test names the behaviour of the contract it checks
//! ("Replicas").
// Tests measure real (wall) time: the async-code bans of .clippy.toml do
// not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::{Redis, RedisCluster, Sentinel};
use support::{expect_close_within, head, now, roundtrip, token, EchoUpstream, Gateway, WAIT};

const ONE_SECOND: Duration = Duration::from_millis(1000);
/// The contract's bound for a silent node to drop out.
const NODE_GONE: Duration = Duration::from_secs(10);

/// A replica named `node` on `redis_url`; `limits` goes under the route
/// (e.g. `"    limits: {max_sessions_per_subject: 2, scope: cluster}\n"`),
/// `extra` at the top level.
fn replica(up: &EchoUpstream, redis_url: &str, node: &str, limits: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "{}node_id: {node}\nroutes:\n  - id: echo\n    path: /echo\n    upstream: {}\n{limits}\
         revocation:\n  store: redis\n  redis_url: \"{redis_url}\"\n{extra}",
        head(),
        up.url()
    ))
}

/// Waits (bounded) until `gw` has joined the cluster and subscribed to
/// revocations and requests.
async fn joined(gw: &Gateway) {
    for line in [
        "cluster node joined",
        "cluster requests subscribed",
        "connected and caught up",
    ] {
        assert!(
            gw.wait_for_log(line, WAIT).await,
            "no log line with {line:?} within {WAIT:?}; stderr:\n{}",
            gw.logs().join("\n")
        );
    }
}

async fn sessions(gw: &Gateway) -> Vec<Value> {
    let r = gw.admin("GET", "/admin/sessions", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    match serde_json::from_str(&r.body) {
        Ok(Value::Array(items)) => items,
        other => panic!("not a JSON array: {other:?}"),
    }
}

fn nodes_of(list: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = list
        .iter()
        .filter_map(|s| s["node"].as_str().map(str::to_owned))
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn any_node_lists_and_kills_the_sessions_of_every_node() {
    let redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let gws: Vec<Gateway> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| replica(&up, &redis.url(), n, "", ""))
        .collect();
    for gw in &gws {
        joined(gw).await;
    }
    let mut held = Vec::new();
    for (i, gw) in gws.iter().enumerate() {
        let t = token("ann", json!({"jti": format!("ann-{i}"), "iat": now() - 5}));
        held.push(gw.session("/echo", &t).await);
    }

    // Every node answers with all three sessions, each with its node.
    for gw in &gws {
        let list = sessions(gw).await;
        assert_eq!(nodes_of(&list), ["n1", "n2", "n3"], "{list:?}");
        for s in &list {
            let id = s["id"].as_str().expect("string id");
            let node = s["node"].as_str().expect("node");
            assert!(id.starts_with(&format!("{node}:")), "{id}");
            assert_eq!(s["sub"], "ann");
            assert_eq!(s["route"], "echo");
        }
    }

    // Filters are applied on each node.
    let filtered = |q: &'static str| {
        let gw = &gws[0];
        async move {
            let r = gw.admin("GET", &format!("/admin/sessions?{q}"), None).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let list: Vec<Value> = serde_json::from_str(&r.body).expect("json array");
            nodes_of(&list)
        }
    };
    assert_eq!(filtered("node=n2").await, ["n2"]);
    assert_eq!(filtered("sub=ann&route=echo").await, ["n1", "n2", "n3"]);
    assert_eq!(filtered("sub=nobody").await, Vec::<String>::new());

    // A DELETE on n1 closes the session on n3, within 1 s.
    let list = sessions(&gws[0]).await;
    let on_n3 = list
        .iter()
        .find(|s| s["node"] == "n3")
        .and_then(|s| s["id"].as_str())
        .expect("a session on n3")
        .to_owned();
    let r = gws[0]
        .admin("DELETE", &format!("/admin/sessions/{on_n3}"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        expect_close_within(&mut held[2], ONE_SECOND).await,
        (4403, "session terminated".to_owned())
    );
    roundtrip(&mut held[1], "still").await;
    let r = gws[1]
        .admin("DELETE", &format!("/admin/sessions/{on_n3}"), None)
        .await;
    assert_eq!(r.status, 404, "a closed session is unknown: {}", r.body);
    let r = gws[1].admin("DELETE", "/admin/sessions/n9:1", None).await;
    assert_eq!(r.status, 404, "an unknown node: {}", r.body);

    // A revocation made on n3 counts what n1 and n2 closed.
    let (status, body) = gws[2].revoke(r#"{"sub":"ann"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 2})));
    for s in &mut held[..2] {
        assert_eq!(
            expect_close_within(s, ONE_SECOND).await,
            (4403, "token revoked".to_owned())
        );
    }
}

const LIMIT_2: &str = "    limits: {max_sessions_per_subject: 2, scope: cluster}\n";

#[tokio::test]
async fn a_cluster_limit_holds_across_nodes_under_concurrent_handshakes() {
    let redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let limits = "    limits: {max_sessions_per_subject: 3, scope: cluster}\n";
    let gw1 = replica(&up, &redis.url(), "a1", limits, "");
    let gw2 = replica(&up, &redis.url(), "a2", limits, "");
    joined(&gw1).await;
    joined(&gw2).await;

    let tokens: Vec<String> = (0..12)
        .map(|i| token("bo", json!({"jti": format!("bo-{i}"), "iat": now() - 5})))
        .collect();
    let attempts = tokens.iter().enumerate().map(|(i, t)| {
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        gw.connect("/echo", t)
    });
    let results = futures_util::future::join_all(attempts).await;
    let refused: Vec<u16> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .copied()
        .collect();
    let mut open: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(open.len(), 3, "refused: {refused:?}");
    assert!(refused.iter().all(|s| *s == 429), "{refused:?}");

    // Another subject is not affected; a closed session gives its place back.
    let other = token("cy", json!({"jti": "cy-1", "iat": now() - 5}));
    gw2.session("/echo", &other).await;
    let mut first = open.remove(0);
    first.close(None).await.expect("close");
    let next = token("bo", json!({"jti": "bo-next", "iat": now() - 5}));
    let mut admitted = None;
    let deadline = Instant::now() + WAIT;
    while admitted.is_none() {
        match gw2.connect("/echo", &next).await {
            Ok(ws) => admitted = Some(ws),
            Err(429) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("refused with {s} after a place was given back"),
        }
    }
    assert_eq!(gw1.connect("/echo", &next).await.err(), Some(429));
}

#[tokio::test]
async fn a_node_killed_with_sigkill_leaves_the_view_and_the_counts() {
    let redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let gw1 = replica(&up, &redis.url(), "k1", LIMIT_2, "");
    let gw2 = replica(&up, &redis.url(), "k2", LIMIT_2, "");
    joined(&gw1).await;
    joined(&gw2).await;
    let t = |i: u32| token("dee", json!({"jti": format!("dee-{i}"), "iat": now() - 5}));
    let _s1 = gw2.session("/echo", &t(1)).await;
    let _s2 = gw2.session("/echo", &t(2)).await;
    assert_eq!(gw1.connect("/echo", &t(3)).await.err(), Some(429));
    assert_eq!(nodes_of(&sessions(&gw1).await), ["k2", "k2"]);

    gw2.stop(); // SIGKILL: no goodbye, no release.
    let killed = Instant::now();
    let mut admitted = None;
    while admitted.is_none() {
        assert!(killed.elapsed() < NODE_GONE, "k2's places still count");
        match gw1.connect("/echo", &t(3)).await {
            Ok(ws) => admitted = Some(ws),
            Err(429) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(s) => panic!("refused with {s}"),
        }
    }
    let deadline = killed + NODE_GONE;
    loop {
        let list = sessions(&gw1).await;
        if nodes_of(&list) == ["k1"] {
            break;
        }
        assert!(Instant::now() < deadline, "k2 still listed: {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gw1.try_exit().is_none());
}

/// A Redis that answers garbage never takes a replica down; with
/// `on_redis_down: closed` `/readyz` says Redis is missing and cluster
/// limits refuse with 503; with the default (`open`) they count per node.
#[tokio::test]
async fn a_redis_answering_garbage_degrades_but_never_stops_a_replica() {
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = garbage.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = garbage.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(b"%%\x00garbage\r\n?? 12\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let url = format!("redis://127.0.0.1:{port}/0");
    let up = EchoUpstream::start().await;
    let strict = replica(
        &up,
        &url,
        "g1",
        LIMIT_2,
        "cluster: {on_redis_down: closed}\n",
    );
    let lenient = replica(&up, &url, "g2", LIMIT_2, "");
    let t = |i: u32| token("eve", json!({"jti": format!("eve-{i}"), "iat": now() - 5}));

    for gw in [&strict, &lenient] {
        assert!(
            gw.wait_for_log("redis unreachable", WAIT).await,
            "degradation not logged"
        );
    }
    let ready = strict.admin("GET", "/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("redis unreachable"), "{}", ready.body);
    assert_eq!(strict.connect("/echo", &t(1)).await.err(), Some(503));

    assert_eq!(lenient.admin("GET", "/readyz", None).await.status, 200);
    let _a = lenient.session("/echo", &t(2)).await;
    let _b = lenient.session("/echo", &t(3)).await;
    assert_eq!(
        lenient.connect("/echo", &t(4)).await.err(),
        Some(429),
        "the node count still holds"
    );
    // The admin API answers with what this node knows.
    let list = sessions(&lenient).await;
    assert_eq!(nodes_of(&list), ["g2", "g2"]);
    for gw in [&strict, &lenient] {
        assert!(gw.try_exit().is_none());
        assert_eq!(gw.admin("GET", "/healthz", None).await.status, 200);
    }
    server.abort();
}

/// Waits (bounded) until the replica on `replica` has synced with its primary.
async fn synced(replica: &Redis) {
    replica
        .wait_reply(
            "INFO replication",
            "master_link_status:up",
            Instant::now() + WAIT,
        )
        .await;
}

#[tokio::test]
async fn a_sentinel_failover_under_live_sessions_loses_no_revocation() {
    let mut primary = Redis::start().await;
    let replica_server = Redis::start_replica_of(primary.port).await;
    synced(&replica_server).await;
    let sentinel = Sentinel::start(primary.port).await;
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/{}/0",
        sentinel.port,
        Sentinel::MASTER
    );
    let up = EchoUpstream::start().await;
    let gw1 = replica(&up, &url, "s1", "", "");
    let gw2 = replica(&up, &url, "s2", "", "");
    joined(&gw1).await;
    joined(&gw2).await;
    let t = |sub: &str| token(sub, json!({"jti": format!("{sub}-1"), "iat": now() - 5}));
    let mut before = gw2.session("/echo", &t("fay")).await;
    let mut during = gw2.session("/echo", &t("gus")).await;
    let mut after = gw2.session("/echo", &t("hal")).await;

    let (status, body) = gw1.revoke(r#"{"sub":"fay"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(expect_close_within(&mut before, ONE_SECOND).await.0, 4403);

    // The primary dies; a revocation made now is enforced where it was made
    // at once, and everywhere once the sentinel has promoted the replica.
    primary.stop();
    let (status, body) = gw1.revoke(r#"{"sub":"gus"}"#).await;
    assert!(status == 201 || status == 503, "{status} {body}");
    assert_eq!(gw1.connect("/echo", &t("gus")).await.err(), Some(401));
    let (code, reason) = expect_close_within(&mut during, WAIT).await;
    assert_eq!((code, reason.as_str()), (4403, "token revoked"));
    assert_eq!(
        sentinel.primary_port().await,
        Some(replica_server.port),
        "the replica was promoted"
    );
    roundtrip(&mut after, "still").await;

    // After the failover both replicas are subscribed on the new primary:
    // a revocation reaches the other node within 1 s and is counted.
    for gw in [&gw1, &gw2] {
        for line in ["connected and caught up", "cluster requests subscribed"] {
            assert!(
                gw.wait_for_log_count(line, 2, WAIT).await,
                "not resubscribed ({line:?}); stderr:\n{}",
                gw.logs().join("\n")
            );
        }
    }
    let (status, body) = gw1.revoke(r#"{"sub":"hal"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(expect_close_within(&mut after, ONE_SECOND).await.0, 4403);
    // Closed sessions leave the list once their close handshake is over.
    let deadline = Instant::now() + WAIT;
    loop {
        let list = sessions(&gw1).await;
        if list.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `reuse_port: true`: two processes listen on one port; when one is gone
/// the other still takes every connection (a restart without downtime).
#[tokio::test]
async fn two_processes_share_a_port_with_reuse_port() {
    let up = EchoUpstream::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let yaml = head().replace(
        "  - bind: \"127.0.0.1:0\"\n",
        &format!("  - bind: \"127.0.0.1:{port}\"\n    reuse_port: true\n"),
    ) + &format!(
        "routes:\n  - id: echo\n    path: /echo\n    upstream: {}\nrevocation: {{store: memory}}\n",
        up.url()
    );
    let old = Gateway::start(&yaml);
    let new = Gateway::start(&yaml);
    assert_eq!(old.addr(), new.addr());
    let t = token("ike", json!({"iat": now() - 5}));
    let mut s = old.session("/echo", &t).await;
    // Old process drains (here: killed); the new one keeps the port open.
    drop(s.close(None).await);
    old.stop();
    for _ in 0..20 {
        new.session("/echo", &t).await;
    }
}

/// `redis+cluster://`: the same behaviour on a three-shard Redis Cluster
/// (keys spread over shards, PUBLISH reaching every node).
#[tokio::test]
async fn replicas_on_a_redis_cluster_share_sessions_revocations_and_limits() {
    let redis = RedisCluster::start().await;
    let up = EchoUpstream::start().await;
    let gw1 = replica(&up, &redis.url(), "c1", LIMIT_2, "");
    let gw2 = replica(&up, &redis.url(), "c2", LIMIT_2, "");
    joined(&gw1).await;
    joined(&gw2).await;
    let t = |i: u32| token("kim", json!({"jti": format!("kim-{i}"), "iat": now() - 5}));
    let mut s1 = gw1.session("/echo", &t(1)).await;
    let mut s2 = gw2.session("/echo", &t(2)).await;
    assert_eq!(gw1.connect("/echo", &t(3)).await.err(), Some(429));
    assert_eq!(nodes_of(&sessions(&gw2).await), ["c1", "c2"]);

    let (status, body) = gw1.revoke(r#"{"jti":"kim-2"}"#).await;
    assert_eq!((status, body), (201, json!({"closed": 1})));
    assert_eq!(expect_close_within(&mut s2, ONE_SECOND).await.0, 4403);
    roundtrip(&mut s1, "still").await;
    // A replica started now reads the entry from the shards.
    let gw3 = replica(&up, &redis.url(), "c3", LIMIT_2, "");
    joined(&gw3).await;
    assert_eq!(gw3.connect("/echo", &t(2)).await.err(), Some(401));
}

/// A node stopped with SIGTERM leaves at once: no lease to wait out.
#[tokio::test]
async fn a_node_stopped_gracefully_leaves_at_once() {
    let redis = Redis::start().await;
    let up = EchoUpstream::start().await;
    let gw1 = replica(&up, &redis.url(), "t1", LIMIT_2, "");
    let gw2 = replica(&up, &redis.url(), "t2", LIMIT_2, "");
    joined(&gw1).await;
    joined(&gw2).await;
    let t = |i: u32| token("lou", json!({"jti": format!("lou-{i}"), "iat": now() - 5}));
    let mut s1 = gw2.session("/echo", &t(1)).await;
    let _s2 = gw2.session("/echo", &t(2)).await;
    assert_eq!(gw1.connect("/echo", &t(3)).await.err(), Some(429));

    gw2.sigterm();
    assert_eq!(expect_close_within(&mut s1, WAIT).await.0, 1001);
    assert!(gw2.wait_exit(WAIT).await.is_some(), "t2 did not exit");
    assert_eq!(nodes_of(&sessions(&gw1).await), Vec::<String>::new());
    let _s3 = gw1.session("/echo", &t(3)).await;
    let _s4 = gw1.session("/echo", &t(4)).await;
}
