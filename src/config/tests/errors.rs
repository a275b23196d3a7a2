//! One case per validation error class: a change to [`MINIMAL`], and the path
//! and message fragment the error must carry.

use super::{expect_error, Fixture, MINIMAL};

/// (replace this, with this, expected path, expected message fragment)
type Case = (&'static str, &'static str, &'static str, &'static str);

const ROUTE: &str = "    upstream: ws://127.0.0.1:9001\n";
const KEYS: &str = "    keys: { secret: \"${JWT_SECRET}\" }\n";
const ALGS: &str = "    algorithms: [HS256]\n";

const CASES: &[Case] = &[
    // listeners, admin, log
    (
        "listeners:\n  - bind: \"127.0.0.1:8080\"\n",
        "",
        "listeners",
        "at least one listener",
    ),
    (
        "\"127.0.0.1:8080\"",
        "\"localhost:8080\"",
        "listeners[0].bind",
        "not an IP address and port",
    ),
    (
        "listeners:\n",
        "admin: { bind: \"127.0.0.1:8080\" }\nlisteners:\n",
        "admin.bind",
        "already used by listeners[0].bind",
    ),
    (
        "listeners:\n",
        "admin: { bind: \"127.0.0.1:9090\", token: \"\" }\nlisteners:\n",
        "admin.token",
        "empty",
    ),
    (
        "listeners:\n",
        "log: { format: yaml }\nlisteners:\n",
        "log.format",
        "expected one of `text`, `json`",
    ),
    (
        "listeners:\n",
        "log: { level: \"info,,=[\" }\nlisteners:\n",
        "log.level",
        "not a log filter",
    ),
    // issuers
    (
        "issuers:\n  - id: main\n",
        "routes_x: 1\nissuers:\n  - id: main\n",
        "routes_x",
        "unknown key",
    ),
    (
        ALGS,
        "",
        "issuers[0].algorithms",
        "missing; list the algorithms",
    ),
    (
        ALGS,
        "    algorithms: []\n",
        "issuers[0].algorithms",
        "empty",
    ),
    (
        ALGS,
        "    algorithms: [none]\n",
        "issuers[0].algorithms[0]",
        "`none` is never accepted",
    ),
    (
        ALGS,
        "    algorithms: [hs256]\n",
        "issuers[0].algorithms[0]",
        "write `HS256`",
    ),
    (
        ALGS,
        "    algorithms: [XS1]\n",
        "issuers[0].algorithms[0]",
        "unknown algorithm; expected one of HS256",
    ),
    (
        ALGS,
        "    algorithms: [HS256, RS256]\n",
        "issuers[0].keys.secret",
        "only verifies HS256/384/512",
    ),
    (KEYS, "    keys: {}\n", "issuers[0].keys", "exactly one of"),
    (
        KEYS,
        "    keys: { secret: x, jwks_url: \"https://a/j\" }\n",
        "issuers[0].keys",
        "found secret, jwks_url",
    ),
    (
        KEYS,
        "    keys: { public_key: keys/ec-pub.pem }\n",
        "issuers[0].keys",
        "HS256/384/512 need `secret`",
    ),
    (
        KEYS,
        "    keys: { discovery: true }\n",
        "issuers[0].keys",
        "HS256/384/512 need `secret`",
    ),
    (
        KEYS,
        "    keys: { secret: \"${EMPTY:-}\" }\n",
        "issuers[0].keys.secret",
        "empty secret",
    ),
    (
        "  - id: main\n    algorithms",
        "  - id: main\n    leeway: 5 minutes\n    algorithms",
        "issuers[0].leeway",
        "invalid duration",
    ),
    (
        "routes:\n",
        "  - { id: main, algorithms: [HS512], keys: { secret: x } }\nroutes:\n",
        "issuers[1].id",
        "used twice",
    ),
    // routes
    (
        ROUTE,
        "    upstream: ws://h\n  - { id: chat, path: /b, upstream: \"ws://h\" }\n",
        "routes[1].id",
        "used twice",
    ),
    (
        "    path: /rooms/{room}\n",
        "    path: rooms\n",
        "routes[0].path",
        "must start with `/`",
    ),
    (
        "    path: /rooms/{room}\n",
        "    path: /a/*/b\n",
        "routes[0].path",
        "as a whole last segment",
    ),
    (
        "    path: /rooms/{room}\n",
        "    path: /r-{room}\n",
        "routes[0].path",
        "whole segment",
    ),
    (
        "    path: /rooms/{room}\n",
        "    path: /{a}/{a}\n",
        "routes[0].path",
        "uses the parameter `{a}` twice",
    ),
    (
        "    path: /rooms/{room}\n",
        "    path: /x\n    host: \"a.*.com\"\n",
        "routes[0].host",
        "as its first label",
    ),
    (ROUTE, "", "routes[0].upstream", "missing"),
    (
        ROUTE,
        "    upstream: http://127.0.0.1:9001\n",
        "routes[0].upstream",
        "write ws:// instead of http://",
    ),
    (
        ROUTE,
        "    upstream: { urls: [] }\n",
        "routes[0].upstream.urls",
        "empty",
    ),
    (
        ROUTE,
        "    upstream: { urls: [\"ws://h:70000\"] }\n",
        "routes[0].upstream.urls[0]",
        "port",
    ),
    (
        ROUTE,
        "    upstream: { urls: [\"ws://h\"], balance: random }\n",
        "routes[0].upstream.balance",
        "`round_robin`, `least_connections`",
    ),
    (
        ROUTE,
        "    upstream: { urls: [\"ws://h\"], path: \"/ws/{nope}\" }\n",
        "routes[0].upstream.path",
        "`{nope}` is not a path parameter",
    ),
    (
        ROUTE,
        "    upstream: { urls: [\"ws://h\"], path: ws }\n",
        "routes[0].upstream.path",
        "must start with `/`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    auth: maybe\n",
        "routes[0].auth",
        "`required`, `none`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    reject: drop\n",
        "routes[0].reject",
        "`status`, `close`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    issuers: [other]\n",
        "routes[0].issuers[0]",
        "no issuer has id `other`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    issuers: []\n",
        "routes[0].issuers",
        "accepts no token",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    auth: none\n    require: [{claim: a, any_of: [b]}]\n",
        "routes[0].require",
        "no effect with `auth: none`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    token_sources: [header, bogus]\n",
        "routes[0].token_sources[1]",
        "unknown token source",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    token_sources: [query]\n",
        "routes[0].token_sources[0]",
        "needs a parameter name",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    token_sources: [{query: a, cookie: b}]\n",
        "routes[0].token_sources[0]",
        "exactly one of `query",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    token_sources: [header, header]\n",
        "routes[0].token_sources[1]",
        "listed twice",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    require: [{claim: roles}]\n",
        "routes[0].require[0]",
        "exactly one of `any_of`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    require: [{claim: roles, any_of: [a], equals: b}]\n",
        "routes[0].require[0]",
        "exactly one of `any_of`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    require: [{any_of: [a]}]\n",
        "routes[0].require[0].claim",
        "missing",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    require: [{claim: rooms, any_of: [\"{nope}\"]}]\n",
        "routes[0].require[0].any_of[0]",
        "`{nope}` is not a path parameter of this route (it has: room)",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    require: [{claim: t, equals: [1]}]\n",
        "routes[0].require[0].equals",
        "string, number or boolean",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    require: [{claim: t, all_of: []}]\n",
        "routes[0].require[0].all_of",
        "can never hold",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    origins: [\"https://app.example.com/\"]\n",
        "routes[0].origins[0]",
        "no path or trailing `/`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { \"Bad Header\": x } }\n",
        "routes[0].forward.headers.Bad Header",
        "not a valid HTTP header name",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { Connection: x } }\n",
        "routes[0].forward.headers.Connection",
        "cannot be set",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { Sec-WebSocket-Protocol: x } }\n",
        "routes[0].forward.headers.Sec-WebSocket-Protocol",
        "cannot be set",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { X-A: \"{sub}\" } }\n",
        "routes[0].forward.headers.X-A",
        "use `{claims.NAME}`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { X-A: \"{claims.sub\" } }\n",
        "routes[0].forward.headers.X-A",
        "is never closed",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { X-A: \"{{claims.sub}}\" } }\n",
        "routes[0].forward.headers.X-A",
        "doubled brace",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { headers: { X-A: a, x-a: b } }\n",
        "routes[0].forward.headers.x-a",
        "listed twice",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    forward: { token: drop }\n",
        "routes[0].forward.token",
        "`strip`, `keep`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    session: { max_message_size: 16M }\n",
        "routes[0].session.max_message_size",
        "unknown unit `M`",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    session: { idle_timeout: 10 }\n",
        "routes[0].session.idle_timeout",
        "missing its unit",
    ),
    (
        ROUTE,
        "    upstream: ws://h\n    limits: { max_sessions_per_subject: 0 }\n",
        "routes[0].limits.max_sessions_per_subject",
        "from 1",
    ),
    // revocation, limits
    (
        "listeners:\n",
        "revocation: { store: disk }\nlisteners:\n",
        "revocation.store",
        "`memory`, `file`, `redis`",
    ),
    (
        "listeners:\n",
        "revocation: { store: redis }\nlisteners:\n",
        "revocation.redis_url",
        "missing",
    ),
    (
        "listeners:\n",
        "revocation: { store: redis, redis_url: \"http://r\" }\nlisteners:\n",
        "revocation.redis_url",
        "redis:// or rediss://",
    ),
    (
        "listeners:\n",
        "revocation: { store: memory, path: x.jsonl }\nlisteners:\n",
        "revocation.path",
        "only used by `store: file`",
    ),
    (
        "listeners:\n",
        "revocation: { path: no/such/dir/r.jsonl }\nlisteners:\n",
        "revocation.path",
        "does not exist",
    ),
    (
        "listeners:\n",
        "limits: { max_sessions: 0 }\nlisteners:\n",
        "limits.max_sessions",
        "at least 1",
    ),
    (
        "listeners:\n",
        "limits: { handshake_timeout: 0s }\nlisteners:\n",
        "limits.handshake_timeout",
        "longer than 0",
    ),
    (
        "listeners:\n",
        "limits: { auth_timeout: soon }\nlisteners:\n",
        "limits.auth_timeout",
        "invalid duration",
    ),
    (
        "listeners:\n",
        "workers: 0\nlisteners:\n",
        "workers",
        "between 1 and 1024",
    ),
];

#[test]
fn each_error_class_is_reported_with_its_path() {
    let fx = Fixture::new();
    for (from, to, path, needle) in CASES {
        assert!(MINIMAL.contains(from), "case does not apply: {from:?}");
        let yaml = MINIMAL.replacen(from, to, 1);
        let errors = expect_error(&fx, &yaml, path, needle);
        for e in errors.iter() {
            assert!(
                // A missing top-level key has no node to point at.
                e.location.is_some() || e.path.segments().len() <= 1,
                "no position for {e}"
            );
            assert!(!e.message.contains("s3cr3t"), "secret in message: {e}");
        }
    }
}

#[test]
fn a_route_requiring_auth_needs_an_issuer() {
    let fx = Fixture::new();
    let yaml = "listeners: [{bind: \"127.0.0.1:8080\"}]\nroutes: [{id: a, path: /a, upstream: \"ws://h\"}]\n";
    expect_error(&fx, yaml, "issuers", "at least one issuer is needed");
}

#[test]
fn discovery_needs_an_issuer_url_and_jwks_url_needs_https() {
    let fx = Fixture::new();
    let es = MINIMAL.replace(ALGS, "    algorithms: [ES256]\n");
    let disc = es.replace(KEYS, "    keys: { discovery: true }\n");
    expect_error(
        &fx,
        &disc,
        "issuers[0].keys.discovery",
        "discovery needs the issuer's `issuer:` URL",
    );
    let disc_http = disc.replace(
        "  - id: main\n",
        "  - id: main\n    issuer: \"http://id.example.com\"\n",
    );
    expect_error(
        &fx,
        &disc_http,
        "issuers[0].keys.discovery",
        "only for loopback hosts",
    );
    let url = es.replace(
        KEYS,
        "    keys: { jwks_url: \"http://id.example.com/jwks\" }\n",
    );
    expect_error(
        &fx,
        &url,
        "issuers[0].keys.jwks_url",
        "only for loopback hosts",
    );
    let local = es.replace(
        KEYS,
        "    keys: { jwks_url: \"http://127.0.0.1:8081/jwks\" }\n",
    );
    assert!(fx.load(&local).is_ok());
    let secret_for_es = es.clone();
    expect_error(
        &fx,
        &secret_for_es,
        "issuers[0].keys.secret",
        "only verifies HS256/384/512",
    );
}
