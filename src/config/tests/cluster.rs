//! Replica settings: `node_id`, `cluster:`, `limits.scope`, `reuse_port`
//! and the `redis_url` forms.

use super::{expect_error, Fixture, MINIMAL};
use crate::config::{LimitScope, RedisDown};

#[test]
fn replica_settings_load() {
    let fx = Fixture::new();
    let yaml = MINIMAL.replace(
        "    upstream: ws://127.0.0.1:9001\n",
        "    upstream: ws://127.0.0.1:9001\n    limits: {max_sessions_per_subject: 2, scope: cluster}\n",
    ) + "node_id: gw-1\n\
         cluster: {on_redis_down: closed}\n\
         revocation: {store: redis, redis_url: \"redis+sentinel://127.0.0.1:26379/main\"}\n";
    let yaml = yaml.replace(
        "bind: \"127.0.0.1:8080\"",
        "bind: \"127.0.0.1:8080\"\n    reuse_port: true",
    );
    let c = fx.load(&yaml).expect("loads");
    assert_eq!(c.node_id.as_deref(), Some("gw-1"));
    assert!(c.listeners[0].reuse_port);
    assert_eq!(c.cluster.on_redis_down, RedisDown::Closed);
    assert_eq!(c.routes[0].limits.scope, LimitScope::Cluster);
    assert_eq!(c.routes[0].limits.max_sessions_per_subject, Some(2));
}

#[test]
fn replica_settings_errors() {
    let fx = Fixture::new();
    let scoped = MINIMAL.replace(
        "    upstream: ws://127.0.0.1:9001\n",
        "    upstream: ws://127.0.0.1:9001\n    limits: {max_sessions_per_subject: 2, scope: cluster}\n",
    );
    expect_error(
        &fx,
        &scoped,
        "routes[0].limits.scope",
        "`scope: cluster` counts in the shared Redis",
    );
    let bad_scope = scoped.replace("scope: cluster", "scope: planet");
    expect_error(
        &fx,
        &bad_scope,
        "routes[0].limits.scope",
        "`node`, `cluster`",
    );
    expect_error(
        &fx,
        &format!("{MINIMAL}node_id: \"a:b\"\n"),
        "node_id",
        "letters, digits",
    );
    expect_error(
        &fx,
        &format!("{MINIMAL}cluster: {{on_redis_down: open}}\n"),
        "cluster",
        "store: redis",
    );
    expect_error(
        &fx,
        &format!("{MINIMAL}revocation: {{store: redis, redis_url: \"redis+sentinel://h:1\"}}\n"),
        "revocation.redis_url",
        "name the primary",
    );
}
