//! The checks `wsgate check` shares with `run`'s build: key pairs, the Redis
//! URL, key lengths, cross-site cookies, audiences; and the warnings.

use super::super::{load_str_checked, Checked};
use super::{expect_error, test_env, Fixture, MINIMAL};

fn with_tls(tls: &str) -> String {
    MINIMAL.replace(
        "  - bind: \"127.0.0.1:8080\"\n",
        &format!("  - bind: \"127.0.0.1:8443\"\n    tls: {tls}\n"),
    )
}

fn checked(fx: &Fixture, yaml: &str) -> Checked {
    load_str_checked(yaml, &fx.source(), test_env).unwrap_or_else(|e| panic!("{e}"))
}

/// The warnings' `path: message` lines.
fn warnings(fx: &Fixture, yaml: &str) -> Vec<String> {
    checked(fx, yaml)
        .warnings
        .iter()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect()
}

#[test]
fn a_certificate_must_match_its_key() {
    let fx = Fixture::new();
    let swapped = with_tls("{ cert: certs/server.pem, key: certs/chat.key }");
    expect_error(
        &fx,
        &swapped,
        "listeners[0].tls.key",
        "is not the private key of the certificate",
    );
    let sni = with_tls(
        "{ cert: certs/server.pem, key: certs/server.key, sni: [{ names: [chat.example.com], cert: certs/chat.pem, key: certs/server.key }] }",
    );
    expect_error(
        &fx,
        &sni,
        "listeners[0].tls.sni[0].key",
        "is not the private key of the certificate",
    );
    let fine = with_tls(
        "{ cert: certs/server.pem, key: certs/server.key, sni: [{ names: [chat.example.com], cert: certs/chat.pem, key: certs/chat.key }] }",
    );
    assert!(fx.load(&fine).is_ok());
}

#[test]
fn a_malformed_redis_url_fails_without_showing_the_password() {
    let fx = Fixture::new();
    for url in [
        "redis://:hunter2-pass@127.0.0.1:notaport/0",
        "redis://:hunter2-pass@127.0.0.1:6379/not-a-db",
        "redis://",
    ] {
        let yaml = format!("{MINIMAL}revocation: {{ store: redis, redis_url: \"{url}\" }}\n");
        let errors = expect_error(&fx, &yaml, "revocation.redis_url", "not a usable Redis URL");
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }
    let fine = format!(
        "{MINIMAL}revocation: {{ store: redis, redis_url: \"redis://:pw@127.0.0.1:6379/2\" }}\n"
    );
    assert!(fx.load(&fine).is_ok());
}

#[test]
fn an_hmac_secret_must_be_as_long_as_the_hash() {
    let fx = Fixture::new();
    let with = |algs: &str, secret: &str| {
        MINIMAL
            .replace("[HS256]", algs)
            .replace("${JWT_SECRET}", secret)
    };
    let s31 = "k".repeat(31);
    let errors = expect_error(
        &fx,
        &with("[HS256]", &s31),
        "issuers[0].keys.secret",
        "too short for HS256",
    );
    assert!(!errors.to_string().contains(&s31), "{errors}");
    assert!(fx.load(&with("[HS256]", &"k".repeat(32))).is_ok());
    // The longest hash listed decides.
    expect_error(
        &fx,
        &with("[HS256, HS512]", &"k".repeat(48)),
        "issuers[0].keys.secret",
        "too short for HS512: an HMAC key must be at least as long as the hash, 64 bytes",
    );
    assert!(fx.load(&with("[HS384]", &"k".repeat(48))).is_ok());
}

#[test]
fn an_admin_token_has_at_least_16_characters() {
    let fx = Fixture::new();
    let admin = |token: &str| {
        format!("{MINIMAL}admin: {{ bind: \"127.0.0.1:9090\", token: \"{token}\" }}\n")
    };
    let errors = expect_error(
        &fx,
        &admin("fifteen-chars-x"),
        "admin.token",
        "shorter than 16 characters",
    );
    assert!(!errors.to_string().contains("fifteen"), "{errors}");
    assert!(fx.load(&admin("sixteen-chars-xy")).is_ok());
}

#[test]
fn a_cookie_source_needs_origins() {
    let fx = Fixture::new();
    let global = format!("token_sources: [header, {{cookie: session}}]\n{MINIMAL}");
    expect_error(&fx, &global, "routes[0]", "the global `token_sources`");
    let own = MINIMAL.replace(
        "    upstream: ws://127.0.0.1:9001\n",
        "    upstream: ws://127.0.0.1:9001\n    token_sources: [header, {cookie: session}]\n",
    );
    expect_error(
        &fx,
        &own,
        "routes[0].token_sources[1]",
        "cross-site WebSocket hijacking",
    );
    let allowed = own.replace(
        "    token_sources:",
        "    origins: [\"https://app.example.com\"]\n    token_sources:",
    );
    assert!(fx.load(&allowed).is_ok());
    // A route that overrides the global list without a cookie is fine, and
    // so is a public route.
    let overridden = global.replace(
        "    upstream: ws://127.0.0.1:9001\n",
        "    upstream: ws://127.0.0.1:9001\n    token_sources: [header]\n",
    ) + "  - { id: pub, path: /pub, upstream: ws://127.0.0.1:9001, auth: none }\n";
    assert!(fx.load(&overridden).is_ok());
}

#[test]
fn an_issuer_needs_audiences() {
    let fx = Fixture::new();
    let without = MINIMAL.replace("    audiences: [chat]\n", "");
    expect_error(&fx, &without, "issuers[0].audiences", "missing");
    let empty = MINIMAL.replace("audiences: [chat]", "audiences: []");
    expect_error(&fx, &empty, "issuers[0].audiences", "empty");
}

#[test]
fn a_jwks_file_without_a_usable_key_fails_as_at_startup() {
    let fx = Fixture::new();
    fx.write(
        "keys/enc-only.json",
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"enc",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    );
    let yaml = MINIMAL.replace("[HS256]", "[ES256]").replace(
        "{ secret: \"${JWT_SECRET}\" }",
        "{ jwks_file: keys/enc-only.json }",
    );
    expect_error(
        &fx,
        &yaml,
        "issuers[0].keys.jwks_file",
        "no usable signing key",
    );
}

#[test]
fn several_problems_are_reported_together() {
    let fx = Fixture::new();
    let yaml = format!(
        "{}admin: {{ bind: \"127.0.0.1:9090\", token: short }}\n",
        MINIMAL
            .replace("${JWT_SECRET}", "short-secret")
            .replace("    audiences: [chat]\n", "")
    );
    let errors = fx.load(&yaml).expect_err("invalid");
    let paths: Vec<String> = errors.iter().map(|e| e.path.to_string()).collect();
    for p in [
        "issuers[0].keys.secret",
        "issuers[0].audiences",
        "admin.token",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} missing from {paths:?}");
    }
}

#[test]
fn risky_settings_are_warnings() {
    let fx = Fixture::new();
    assert!(
        warnings(&fx, MINIMAL).is_empty(),
        "{:?}",
        warnings(&fx, MINIMAL)
    );
    let yaml = format!(
        "token_sources: [header, {{query: access_token}}]\n{}admin: {{ bind: \"0.0.0.0:9090\", token: \"admin-token-for-tests\" }}\nrevocation: {{ store: memory }}\n",
        MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080")
    );
    let found = warnings(&fx, &yaml);
    for needle in [
        "admin.bind: the admin listener has no TLS",
        "listeners[0].bind: a plaintext listener reachable from other machines",
        "token_sources[1]: a token in the query string",
        "revocation.store: revocations are kept in memory only",
    ] {
        assert!(
            found.iter().any(|w| w.starts_with(needle)),
            "{needle} missing from {found:#?}"
        );
    }
    let c = checked(&fx, &yaml);
    assert!(
        c.warnings.iter().all(|w| w.location.is_some()),
        "{:?}",
        c.warnings
    );
}
