//! Whole documents: the contract's example, defaults, `${VAR}`, unknown keys,
//! YAML errors and their positions, the `check` summary.

use std::time::Duration;

use super::super::*;
use super::{expect_error, file_name, test_env, Fixture, MINIMAL};

/// The CONTRACT's example, with two changes it needs to be valid: its issuer
/// pairs a shared `secret` with RS256/ES256 (a secret verifies only HS*), and
/// its `{tenant}` placeholder needs a `{tenant}` path parameter.
const CONTRACT_EXAMPLE: &str = r#"
log: { level: info, format: text }

listeners:                         # at least one
  - bind: "0.0.0.0:8443"
    tls:                           # omit for plaintext
      cert: certs/server.pem       # PEM chain
      key: certs/server.key        # PEM key (PKCS#8, PKCS#1 or SEC1)
      sni:                         # optional extra certs, chosen by server name
        - { names: ["chat.example.com"], cert: certs/chat.pem, key: certs/chat.key }
      client_ca: certs/ca.pem      # optional: require client certificates (mTLS)
  - bind: "127.0.0.1:8080"         # plaintext (sidecar, or behind a TLS load balancer)

admin:                             # optional; no admin listener when absent
  bind: "127.0.0.1:9090"
  token: "${WSGATE_ADMIN_TOKEN}"   # Bearer token for /admin/*; health and metrics need none

issuers:                           # at least one unless every route is `auth: none`
  - id: main
    issuer: "https://id.example.com"   # when set, `iss` must equal it
    audiences: ["chat"]                # when set, `aud` must contain one of them
    algorithms: [HS256]                # accepted `alg`s; required; `none` is never accepted
    keys:                              # exactly one of:
      secret: "${JWT_SECRET}"          #   HS256/384/512 shared secret
    ca: certs/idp-ca.pem               # trust for jwks_url/discovery over https
    leeway: 60s                        # clock skew allowed on exp/nbf (default 60s)
    required_claims: [exp]             # default [exp]

token_sources:                     # where a token is looked for, in order
  - header                         # Authorization: Bearer <jwt>
  - subprotocol                    # Sec-WebSocket-Protocol: bearer, <jwt>
  - query: access_token            # ?access_token=<jwt>
  - cookie: access_token           # Cookie: access_token=<jwt>
  - first_message                  # first text frame {"token": "<jwt>"}

routes:                            # first match in file order wins
  - id: chat
    host: chat.example.com         # optional; exact or "*.example.com"
    path: /t/{tenant}/rooms/{room}
    upstream: ws://127.0.0.1:9001  # shorthand, or the long form
    auth: required
    issuers: [main]
    token_sources: [header]
    require:
      - claim: roles
        any_of: [chat, admin]
      - claim: scope
        all_of: ["chat:read"]
      - claim: rooms
        any_of: ["{room}"]
      - claim: tenant
        equals: "{tenant}"
    origins: ["https://app.example.com"]
    reject: status
    forward:
      headers:
        X-User-Id: "{claims.sub}"
        X-Roles: "{claims.roles}"
      token: strip
    session:
      close_on_expiry: true
      refresh: false
      idle_timeout: 10m
      max_message_size: 16MiB
    limits:
      max_sessions_per_subject: 10
  - id: long-form
    path: /feed/{room}/*
    upstream:
      urls: [ws://10.0.0.1:9001, wss://10.0.0.2:9443]
      balance: least_connections
      connect_timeout: 5s
      ca: certs/upstream-ca.pem
      path: /ws/{room}
    origins: ["https://app.example.com"]   # the global sources include a cookie

revocation:
  store: file                      # memory | file | redis
  path: wsgate-revocations.jsonl   # file store: survives restarts

limits:
  max_sessions: 100000
  handshake_timeout: 10s
  auth_timeout: 10s
  shutdown_grace: 10s
"#;

#[test]
fn contract_example_loads() {
    let fx = Fixture::new();
    let c = fx.load(CONTRACT_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 2);
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.cert, fx.dir.path().join("certs/server.pem"));
    assert_eq!(tls.sni[0].names, ["chat.example.com"]);
    assert!(tls.client_ca.is_some());
    assert_eq!(
        c.admin.as_ref().and_then(|a| a.token.as_deref()),
        Some("admin-token-for-tests")
    );
    assert_eq!(
        c.issuers[0].keys,
        KeySource::Secret("s3cr3t-value-for-tests-0123456789abcdef".into())
    );
    assert_eq!(c.issuers[0].algorithms, [jsonwebtoken::Algorithm::HS256]);
    assert_eq!(
        c.token_sources,
        [
            TokenSource::Header,
            TokenSource::Subprotocol,
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("access_token".into()),
            TokenSource::FirstMessage(FirstMessage::default()),
        ]
    );
    let chat = &c.routes[0];
    assert_eq!(chat.host.as_deref(), Some("chat.example.com"));
    assert_eq!(chat.require.len(), 4);
    assert_eq!(
        chat.require[3].op,
        RuleOp::Equals(serde_json::json!("{tenant}"))
    );
    let names: Vec<&str> = chat
        .forward
        .headers
        .iter()
        .map(|(h, _)| h.as_str())
        .collect();
    assert_eq!(names, ["x-user-id", "x-roles"]);
    assert_eq!(chat.session.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(chat.limits.max_sessions_per_subject, Some(10));
    let long = &c.routes[1].upstream;
    assert_eq!(long.urls.len(), 2);
    assert_eq!(long.urls[1].to_string(), "wss://10.0.0.2:9443");
    assert_eq!(long.balance, Balance::LeastConnections);
    assert_eq!(long.path.as_deref(), Some("/ws/{room}"));
    assert_eq!(
        c.revocation,
        RevocationConfig::File(fx.dir.path().join("wsgate-revocations.jsonl"))
    );
    assert_eq!(
        summary(&c),
        format!(
            "{} OK: 2 listeners (1 TLS), 2 routes, 1 issuer, revocation store file, admin on 127.0.0.1:9090",
            fx.source().display()
        )
    );
}

#[test]
fn defaults_are_applied() {
    let fx = Fixture::new();
    let c = fx.load(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.log,
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text
        }
    );
    assert!(c.admin.is_none() && c.demo.is_none());
    assert_eq!(
        c.token_sources,
        [TokenSource::Header, TokenSource::Subprotocol]
    );
    let issuer = &c.issuers[0];
    assert_eq!(issuer.leeway, DEFAULT_LEEWAY);
    assert_eq!(issuer.required_claims, ["exp"]);
    assert_eq!(issuer.audiences, ["chat"]);
    assert!(issuer.issuer.is_none() && issuer.ca.is_none());
    let r = &c.routes[0];
    assert_eq!(r.auth, AuthMode::Required);
    assert_eq!(r.reject, RejectMode::Status);
    assert_eq!(r.forward.token, TokenForward::Strip);
    assert!(r.forward.headers.is_empty() && r.require.is_empty());
    assert!(
        r.issuers.is_none() && r.token_sources.is_none() && r.origins.is_none() && r.host.is_none()
    );
    assert!(r.session.close_on_expiry && !r.session.refresh);
    assert_eq!(r.session.idle_timeout, None);
    assert_eq!(r.session.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(r.limits.max_sessions_per_subject, None);
    assert_eq!(r.upstream.balance, Balance::RoundRobin);
    assert_eq!(r.upstream.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(r.upstream.urls[0].port, 9001);
    assert_eq!(
        c.revocation,
        RevocationConfig::File(fx.dir.path().join(DEFAULT_REVOCATION_FILE))
    );
    assert_eq!(c.limits.max_sessions, DEFAULT_MAX_SESSIONS);
    assert_eq!(c.limits.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(c.limits.auth_timeout, DEFAULT_AUTH_TIMEOUT);
    assert_eq!(c.limits.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(c.workers, None, "one per core unless set");
}

#[test]
fn workers_is_read() {
    let fx = Fixture::new();
    let c = fx
        .load(&format!("workers: 3\n{MINIMAL}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.workers, Some(3));
}

#[test]
fn public_routes_need_no_issuer_and_demo_echo_is_read() {
    let fx = Fixture::new();
    let yaml = "listeners: [{bind: \"127.0.0.1:8080\"}]\ndemo: { echo: \"127.0.0.1:9001\" }\nroutes:\n  - { id: pub, path: /echo, upstream: ws://127.0.0.1:9001, auth: none }\n";
    let c = fx.load(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.demo.map(|d| d.echo_bind.to_string()),
        Some("127.0.0.1:9001".into())
    );
    assert!(c.issuers.is_empty());
}

#[test]
fn env_expansion_with_default_and_in_lists() {
    let fx = Fixture::new();
    let yaml = MINIMAL.replace(
        "upstream: ws://127.0.0.1:9001",
        "upstream: { urls: [\"ws://${UPSTREAM_HOST}:${UPSTREAM_PORT:-9001}\"] }",
    );
    let c = fx.load(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.routes[0].upstream.urls[0].to_string(),
        "ws://10.1.2.3:9001"
    );
}

#[test]
fn unset_variable_names_variable_field_and_line() {
    let fx = Fixture::new();
    let yaml = format!(
        "{MINIMAL}admin:\n  bind: \"127.0.0.1:9090\"\n  token: \"${{NOT_SET_ANYWHERE}}\"\n"
    );
    let errors = expect_error(&fx, &yaml, "admin.token", "`NOT_SET_ANYWHERE` is not set");
    let line = errors.to_string();
    assert!(
        line.starts_with(&format!("{}:14:3: admin.token: ", fx.source().display())),
        "{line}"
    );
}

#[test]
fn expanded_values_cannot_change_the_document_structure() {
    let fx = Fixture::new();
    let yaml = MINIMAL.replace("${JWT_SECRET}", "${TRICKY}");
    let env = |name: &str| {
        (name == "TRICKY").then(|| "a: b\n# c, [d] and enough bytes for HS256".to_owned())
    };
    let c = load_str(&yaml, &fx.source(), env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.issuers[0].keys,
        KeySource::Secret("a: b\n# c, [d] and enough bytes for HS256".into())
    );
}

#[test]
fn unknown_key_is_rejected_with_path_and_line() {
    let fx = Fixture::new();
    let yaml = format!("{MINIMAL}    requre:\n      - {{ claim: roles, any_of: [admin] }}\n");
    let errors = expect_error(&fx, &yaml, "routes[0].requre", "unknown key `requre`");
    let text = errors.to_string();
    assert!(
        text.contains(":12:5: routes[0].requre: unknown key `requre`; expected one of"),
        "{text}"
    );
    assert!(text.contains("`require`"), "{text}");
}

#[test]
fn wrong_type_names_path_and_line_but_not_the_value() {
    let fx = Fixture::new();
    let yaml = format!("{MINIMAL}    require:\n      - claim: roles\n        any_of: secretish\n");
    let errors = expect_error(
        &fx,
        &yaml,
        "routes[0].require[0].any_of",
        "expected a list, found a string",
    );
    let text = errors.to_string();
    assert!(text.contains(":14:9: "), "{text}");
    assert!(!text.contains("secretish"), "{text}");
    let yaml = MINIMAL.replace("\"${JWT_SECRET}\"", "123456789");
    let errors = expect_error(
        &fx,
        &yaml,
        "issuers[0].keys.secret",
        "put the value in quotes",
    );
    assert!(!errors.to_string().contains("123456789"), "{errors}");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let fx = Fixture::new();
    let errors = fx.load("listeners:\n  - bind: [oops\n").unwrap_err();
    let e = &errors.0[0];
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert!(e.location.is_some(), "{e}");
    assert!(!e.message.contains(" at line "), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let fx = Fixture::new();
    let yaml = MINIMAL
        .replace("127.0.0.1:8080", "nowhere")
        .replace("[HS256]", "[none]")
        .replace("/rooms/{room}", "rooms");
    let errors = fx.load(&yaml).unwrap_err();
    let paths: Vec<String> = errors.iter().map(|e| e.path.to_string()).collect();
    for p in [
        "listeners[0].bind",
        "issuers[0].algorithms[0]",
        "routes[0].path",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} missing from {paths:?}");
    }
    assert!(errors.iter().all(|e| e.location.is_some()), "{errors}");
}

#[test]
fn load_reads_the_file_and_resolves_paths_next_to_it() {
    let fx = Fixture::new();
    let yaml = MINIMAL.replace("listeners:\n  - bind: \"127.0.0.1:8080\"\n", "listeners:\n  - bind: \"127.0.0.1:8443\"\n    tls: { cert: certs/server.pem, key: certs/server.key }\n");
    fx.write(
        "gateway.yaml",
        &yaml.replace("${JWT_SECRET}", "inline-secret-of-at-least-32-bytes"),
    );
    let c = load(&fx.source()).unwrap_or_else(|e| panic!("{e}"));
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert!(tls.key.is_absolute() && tls.key.exists());
    assert_eq!(file_name(&c.source), "gateway.yaml");
    let missing = load(&fx.dir.path().join("absent.yaml")).unwrap_err();
    assert!(
        missing.to_string().contains("cannot read the config file"),
        "{missing}"
    );
    // Only the test's own lookup is used by load_str.
    assert!(test_env("PATH").is_none());
}

#[test]
fn duplicate_keys_and_errors_in_file_order() {
    let fx = Fixture::new();
    let errors = fx.load(&format!("{MINIMAL}routes: []\n")).unwrap_err();
    assert!(errors.0[0].message.contains("duplicate entry"), "{errors}");
    assert!(errors.0[0].location.is_some(), "{errors}");
    let yaml = MINIMAL
        .replace("/rooms/{room}", "rooms")
        .replace("127.0.0.1:8080", "nowhere");
    let errors = fx.load(&yaml).unwrap_err();
    let lines: Vec<usize> = errors
        .iter()
        .filter_map(|e| e.location.map(|l| l.line))
        .collect();
    assert_eq!(lines, [2, 10], "{errors}");
}
