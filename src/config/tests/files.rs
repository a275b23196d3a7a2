//! Files named by the config must exist and parse.

use super::super::KeySource;
use super::{expect_error, Fixture, MINIMAL};

fn with_tls(tls: &str) -> String {
    MINIMAL.replace(
        "  - bind: \"127.0.0.1:8080\"\n",
        &format!("  - bind: \"127.0.0.1:8443\"\n    tls: {tls}\n"),
    )
}

fn with_keys(algorithms: &str, keys: &str) -> String {
    MINIMAL
        .replace("[HS256]", algorithms)
        .replace("{ secret: \"${JWT_SECRET}\" }", keys)
}

#[test]
fn tls_files_must_exist_and_parse() {
    let fx = Fixture::new();
    fx.write("certs/garbage.pem", "not pem at all\n");
    let ok = with_tls("{ cert: certs/server.pem, key: certs/server.key }");
    assert!(fx.load(&ok).is_ok());
    let missing = with_tls("{ cert: certs/nope.pem, key: certs/server.key }");
    let errors = expect_error(&fx, &missing, "listeners[0].tls.cert", "cannot read");
    assert!(errors.to_string().contains("nope.pem"), "{errors}");
    let swapped = with_tls("{ cert: certs/server.key, key: certs/server.pem }");
    expect_error(
        &fx,
        &swapped,
        "listeners[0].tls.cert",
        "holds no certificate",
    );
    expect_error(
        &fx,
        &swapped,
        "listeners[0].tls.key",
        "holds no private key",
    );
    let garbage_ca =
        with_tls("{ cert: certs/server.pem, key: certs/server.key, client_ca: certs/garbage.pem }");
    expect_error(
        &fx,
        &garbage_ca,
        "listeners[0].tls.client_ca",
        "holds no certificate",
    );
    let no_key = with_tls("{ cert: certs/server.pem }");
    expect_error(&fx, &no_key, "listeners[0].tls.key", "missing");
    let sni = with_tls(
        "{ cert: certs/server.pem, key: certs/server.key, sni: [{ names: [\"Chat.Example.com\"], cert: certs/chat.pem, key: certs/missing.key }] }",
    );
    expect_error(&fx, &sni, "listeners[0].tls.sni[0].key", "cannot read");
}

#[test]
fn public_key_must_match_the_algorithm_family() {
    let fx = Fixture::new();
    let ec = with_keys("[ES256]", "{ public_key: keys/ec-pub.pem }");
    let c = fx.load(&ec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.issuers[0].keys,
        KeySource::PublicKey(fx.dir.path().join("keys/ec-pub.pem"))
    );
    let ed = with_keys("[EdDSA]", "{ public_key: keys/ed-pub.pem }");
    assert!(fx.load(&ed).is_ok());
    let wrong = with_keys("[EdDSA]", "{ public_key: keys/ec-pub.pem }");
    expect_error(
        &fx,
        &wrong,
        "issuers[0].keys.public_key",
        "not a PEM Ed25519 public key",
    );
    let rsa = with_keys("[RS256]", "{ public_key: keys/ec-pub.pem }");
    expect_error(
        &fx,
        &rsa,
        "issuers[0].keys.public_key",
        "not a PEM RSA public key",
    );
    let mixed = with_keys("[RS256, ES256]", "{ public_key: keys/ec-pub.pem }");
    expect_error(
        &fx,
        &mixed,
        "issuers[0].keys.public_key",
        "one PEM key fits one algorithm family",
    );
}

#[test]
fn jwks_file_must_be_a_key_set() {
    let fx = Fixture::new();
    fx.write(
        "keys/bad.json",
        "{\"keys\": [ {\"kty\": \"EC\", \"x\": \"secret-ish\"",
    );
    fx.write("keys/empty.json", "{\"keys\": []}");
    let ok = with_keys("[ES256, RS256]", "{ jwks_file: keys/jwks.json }");
    assert!(fx.load(&ok).is_ok());
    let bad = with_keys("[ES256]", "{ jwks_file: keys/bad.json }");
    let errors = expect_error(
        &fx,
        &bad,
        "issuers[0].keys.jwks_file",
        "is not a JWKS document",
    );
    assert!(!errors.to_string().contains("secret-ish"), "{errors}");
    let empty = with_keys("[ES256]", "{ jwks_file: keys/empty.json }");
    expect_error(
        &fx,
        &empty,
        "issuers[0].keys.jwks_file",
        "empty `keys` array",
    );
}

#[test]
fn trust_anchor_files_are_checked() {
    let fx = Fixture::new();
    let issuer_ca = MINIMAL.replace("  - id: main\n", "  - id: main\n    ca: certs/absent.pem\n");
    expect_error(&fx, &issuer_ca, "issuers[0].ca", "cannot read");
    let upstream_ca = MINIMAL.replace(
        "upstream: ws://127.0.0.1:9001",
        "upstream: { urls: [\"wss://h\"], ca: certs/absent.pem }",
    );
    expect_error(&fx, &upstream_ca, "routes[0].upstream.ca", "cannot read");
    let fine = MINIMAL.replace(
        "upstream: ws://127.0.0.1:9001",
        "upstream: { urls: [\"wss://h\"], ca: certs/upstream-ca.pem }",
    );
    assert!(fx.load(&fine).is_ok());
}

#[test]
fn damaged_pem_is_an_error_that_does_not_quote_the_file() {
    let fx = Fixture::new();
    let server = std::fs::read_to_string(fx.dir.path().join("certs/server.pem")).expect("pem");
    // A chain cut off in the middle of its block: its END line is missing.
    let cut = &server[..server.len() / 2];
    fx.write("certs/cut.pem", cut);
    let errors = expect_error(
        &fx,
        &with_tls("{ cert: certs/cut.pem, key: certs/server.key }"),
        "listeners[0].tls.cert",
        "no matching `-----END` line",
    );
    let body_line = cut.lines().nth(1).expect("a base64 line");
    assert!(!errors.to_string().contains(body_line), "{errors}");
}
