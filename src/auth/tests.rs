//! [`Authenticator`] scenarios: every algorithm, confusion and `none`, time and
//! claim rules, issuer choice, the verification cache, and remote key sets
//! against a real local HTTP server.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm::{self, *};
use jsonwebtoken::EncodingKey;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::remote::Tuning;
use super::testutil::{self, claims, issuer, now, sign, Reply, TestServer};
use super::{AuthError, Authenticator};
use crate::config::{IssuerConfig, KeySource};

async fn auth(issuers: &[IssuerConfig]) -> Arc<Authenticator> {
    Authenticator::new(issuers, CancellationToken::new(), None)
        .await
        .unwrap()
}

fn pem_file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn every_algorithm_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let secret = KeySource::Secret("0123456789abcdef0123456789abcdef".into());
    let hs_key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
    for alg in [HS256, HS384, HS512] {
        let a = auth(&[issuer("hs", &[alg], secret.clone())]).await;
        let token = sign(alg, &claims(json!({})), &hs_key, None);
        assert_eq!(
            a.verify(&token, None).await.unwrap().token.sub.as_deref(),
            Some("alice"),
            "{alg:?}"
        );
    }
    let cases: [(&testutil::TestKeys, &[Algorithm]); 4] = [
        (testutil::rsa(), &[RS256, RS384, RS512, PS256, PS384, PS512]),
        (testutil::ec256(), &[ES256]),
        (testutil::ec384(), &[ES384]),
        (testutil::ed25519(), &[EdDSA]),
    ];
    for (i, (keys, algs)) in cases.into_iter().enumerate() {
        let public = pem_file(&dir, &format!("pub{i}.pem"), &keys.public_pem);
        for &alg in algs {
            let a = auth(&[issuer("pk", &[alg], KeySource::PublicKey(public.clone()))]).await;
            let token = sign(alg, &claims(json!({})), &keys.encoding_key(), Some("any"));
            let verified = a.verify(&token, None).await.unwrap();
            assert_eq!(verified.token.issuer_id, "pk");
            assert_eq!(verified.token.fingerprint.len(), 12);
            // One flipped signature byte is refused.
            let mut bad = token.into_bytes();
            let last = bad.len() - 2;
            bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            assert_eq!(
                a.verify(&bad, None).await.unwrap_err(),
                AuthError::BadSignature,
                "{alg:?}"
            );
        }
    }
}

#[tokio::test]
async fn hs256_with_the_rsa_public_key_as_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pem = testutil::rsa().public_pem.clone();
    let path = pem_file(&dir, "rsa.pem", &pem);
    let forged = sign(
        HS256,
        &claims(json!({})),
        &EncodingKey::from_secret(pem.as_bytes()),
        None,
    );
    // Even when the issuer lists HS256, an RSA key never serves as a secret.
    for algs in [&[RS256][..], &[RS256, HS256][..]] {
        let a = auth(&[issuer("pk", algs, KeySource::PublicKey(path.clone()))]).await;
        assert_eq!(
            a.verify(&forged, None).await.unwrap_err(),
            AuthError::AlgNotAllowed
        );
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let a = auth(&[issuer("hs", &[HS256], KeySource::Secret("s".into()))]).await;
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let body = b64(&claims(json!({})).to_string());
    let unsigned = format!("{}.{body}.", b64(r#"{"alg":"none"}"#));
    assert_eq!(
        a.verify(&unsigned, None).await.unwrap_err(),
        AuthError::Malformed
    );
    let with_sig = format!("{}.{body}.c2ln", b64(r#"{"alg":"none"}"#));
    assert_eq!(
        a.verify(&with_sig, None).await.unwrap_err(),
        AuthError::AlgNotAllowed
    );
    let hs512 = sign(
        HS512,
        &claims(json!({})),
        &EncodingKey::from_secret(b"s"),
        None,
    );
    assert_eq!(
        a.verify(&hs512, None).await.unwrap_err(),
        AuthError::AlgNotAllowed
    );
}

#[tokio::test]
async fn expiry_not_before_and_leeway() {
    let key = EncodingKey::from_secret(b"s");
    let strict = issuer("hs", &[HS256], KeySource::Secret("s".into()));
    let mut lenient = strict.clone();
    lenient.leeway = Duration::from_secs(60);
    let (strict, lenient) = (auth(&[strict]).await, auth(&[lenient]).await);
    let expired = sign(HS256, &claims(json!({"exp": now() - 10})), &key, None);
    let early = sign(HS256, &claims(json!({"nbf": now() + 30})), &key, None);
    let no_exp = sign(HS256, &json!({"sub": "x"}), &key, None);
    assert_eq!(
        strict.verify(&expired, None).await.unwrap_err(),
        AuthError::Expired
    );
    assert_eq!(
        strict.verify(&early, None).await.unwrap_err(),
        AuthError::NotYetValid
    );
    assert_eq!(
        strict.verify(&no_exp, None).await.unwrap_err(),
        AuthError::MissingClaim("exp".into())
    );
    assert!(lenient.verify(&expired, None).await.is_ok());
    let ok = lenient.verify(&early, None).await.unwrap();
    assert_eq!(ok.token.leeway, Duration::from_secs(60));
}

#[tokio::test]
async fn issuer_audience_and_required_claims() {
    let key = EncodingKey::from_secret(b"s");
    let mut cfg = issuer("main", &[HS256], KeySource::Secret("s".into()));
    cfg.issuer = Some("https://id".into());
    cfg.audiences = vec!["chat".into(), "ops".into()];
    cfg.required_claims = vec!["exp".into(), "tenant".into()];
    let a = auth(&[cfg]).await;
    let t = |extra| sign(HS256, &claims(extra), &key, None);
    let good = json!({"iss": "https://id", "aud": ["x", "ops"], "tenant": "t1"});
    assert!(a.verify(&t(good), None).await.is_ok());
    let cases = [
        (
            json!({"iss": "https://other", "aud": "chat", "tenant": 1}),
            AuthError::WrongIssuer,
        ),
        (json!({"aud": "chat", "tenant": 1}), AuthError::WrongIssuer),
        (
            json!({"iss": "https://id", "aud": "x", "tenant": 1}),
            AuthError::WrongAudience,
        ),
        (
            json!({"iss": "https://id", "tenant": 1}),
            AuthError::MissingClaim("aud".into()),
        ),
        (
            json!({"iss": "https://id", "aud": "chat"}),
            AuthError::MissingClaim("tenant".into()),
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(
            a.verify(&t(extra.clone()), None).await.unwrap_err(),
            want,
            "{extra}"
        );
    }
}

#[tokio::test]
async fn issuer_choice_respects_allowed() {
    let mut named = issuer("named", &[HS256], KeySource::Secret("one".into()));
    named.issuer = Some("https://one".into());
    let open = issuer("open", &[HS256], KeySource::Secret("two".into()));
    let a = auth(&[named, open]).await;
    let one = sign(
        HS256,
        &claims(json!({"iss": "https://one"})),
        &EncodingKey::from_secret(b"one"),
        None,
    );
    let two = sign(
        HS256,
        &claims(json!({"iss": "https://zzz"})),
        &EncodingKey::from_secret(b"two"),
        None,
    );
    let only = |id: &str| vec![id.to_string()];
    assert_eq!(a.verify(&one, None).await.unwrap().token.issuer_id, "named");
    assert_eq!(a.verify(&two, None).await.unwrap().token.issuer_id, "open");
    // Outside `allowed` a token is never accepted, cached or not.
    assert_eq!(
        a.verify(&one, Some(&only("open"))).await.unwrap_err(),
        AuthError::BadSignature
    );
    assert_eq!(
        a.verify(&two, Some(&only("named"))).await.unwrap_err(),
        AuthError::WrongIssuer
    );
    assert_eq!(
        a.verify(&two, Some(&[])).await.unwrap_err(),
        AuthError::WrongIssuer
    );
}

#[tokio::test]
async fn cache_hits_still_check_time() {
    let a = auth(&[issuer("hs", &[HS256], KeySource::Secret("s".into()))]).await;
    let nbf = now() - 5;
    let token = sign(
        HS256,
        &claims(json!({"nbf": nbf})),
        &EncodingKey::from_secret(b"s"),
        None,
    );
    let first = a.verify(&token, None).await.unwrap();
    let second = a.verify(&token, None).await.unwrap();
    assert!(
        Arc::ptr_eq(&first.token, &second.token),
        "second call is a cache hit"
    );
    assert_eq!(a.cache.len(), 1);
    // The library would accept the token now; only the cache path sees this clock.
    assert_eq!(
        a.verify_at(&token, None, now() + 1000).await.unwrap_err(),
        AuthError::Expired
    );
    assert_eq!(a.cache.len(), 0, "an expired entry is dropped");
    a.verify(&token, None).await.unwrap();
    assert_eq!(
        a.verify_at(&token, None, nbf - 10).await.unwrap_err(),
        AuthError::NotYetValid
    );
}

#[tokio::test]
async fn oversized_and_garbage_tokens_are_malformed() {
    let a = auth(&[issuer("hs", &[HS256], KeySource::Secret("s".into()))]).await;
    let long = format!("a.{}.c", "b".repeat(super::MAX_TOKEN_LEN));
    for t in [long.as_str(), "", "abc", "a.b.c", "a.b.c.d", "a b.c.d"] {
        assert_eq!(a.verify(t, None).await.unwrap_err(), AuthError::Malformed);
    }
}

fn quick() -> Tuning {
    Tuning {
        default_ttl: Duration::from_secs(3600),
        min_ttl: Duration::from_secs(3600),
        retry_min: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        fetch_timeout: Duration::from_secs(2),
        ..Tuning::default()
    }
}

fn jwks(keys: &[serde_json::Value]) -> String {
    json!({ "keys": keys }).to_string()
}

async fn remote(server: &TestServer, keys: KeySource) -> (Arc<Authenticator>, CancellationToken) {
    let mut cfg = issuer("idp", &[ES256], keys);
    cfg.issuer = Some(server.url(""));
    cfg.refetch_interval = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let a = Authenticator::with_tuning(&[cfg], stop.clone(), quick(), None)
        .await
        .unwrap();
    (a, stop)
}

#[tokio::test]
async fn unknown_kid_flood_causes_one_refetch() {
    let server = TestServer::start().await;
    let mut slow = Reply::ok(jwks(&[testutil::ec256().jwk("k1")]));
    // A slow provider, so the flood arrives while the refetch is in flight.
    slow.delay = Duration::from_millis(200);
    server.set("/jwks", slow);
    let (a, stop) = remote(&server, KeySource::JwksUrl(server.url("/jwks"))).await;
    assert_eq!(server.hits("/jwks"), 1);
    assert!(a.issuers_without_keys().is_empty());
    tokio::time::sleep(Duration::from_millis(550)).await;

    let key = testutil::ec256().encoding_key();
    let body = claims(json!({"iss": server.url("")}));
    let mut flood = Vec::new();
    for i in 0..50 {
        let (a, token) = (
            a.clone(),
            sign(ES256, &body, &key, Some(&format!("rand-{i}"))),
        );
        flood.push(tokio::spawn(async move { a.verify(&token, None).await }));
    }
    for task in flood {
        assert_eq!(task.await.unwrap().unwrap_err(), AuthError::UnknownKid);
    }
    assert_eq!(server.hits("/jwks"), 2, "one shared, rate-limited refetch");

    // Within the window nothing is fetched; after it, a rotated key is found.
    server.set(
        "/jwks",
        Reply::ok(jwks(&[
            testutil::ec256().jwk("k1"),
            testutil::ec256().jwk("k2"),
        ])),
    );
    let k2 = sign(ES256, &body, &key, Some("k2"));
    assert_eq!(
        a.verify(&k2, None).await.unwrap_err(),
        AuthError::UnknownKid
    );
    assert_eq!(server.hits("/jwks"), 2);
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(a.verify(&k2, None).await.is_ok());
    assert_eq!(server.hits("/jwks"), 3);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), a.tasks().wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn last_good_set_survives_garbage_and_outages() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::ok(jwks(&[testutil::ec256().jwk("k1")])));
    let (a, _stop) = remote(&server, KeySource::JwksUrl(server.url("/jwks"))).await;
    let key = testutil::ec256().encoding_key();
    let body = claims(json!({"iss": server.url("")}));
    let k1 = sign(ES256, &body, &key, Some("k1"));
    let unknown = sign(ES256, &body, &key, Some("k9"));
    let bad_replies = [
        Reply::ok("<html>oops</html>"),
        Reply::ok(r#"{"keys": []}"#),
        Reply {
            status: 500,
            ..Reply::ok("")
        },
    ];
    for (i, reply) in bad_replies.into_iter().enumerate() {
        server.set("/jwks", reply);
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert_eq!(
            a.verify(&unknown, None).await.unwrap_err(),
            AuthError::UnknownKid
        );
        assert_eq!(server.hits("/jwks"), i + 2, "a refetch happened");
        assert!(a.issuers_without_keys().is_empty());
        // A fresh token (not cached) still verifies with the kept key.
        let fresh = sign(
            ES256,
            &claims(json!({"iss": server.url(""), "i": i})),
            &key,
            Some("k1"),
        );
        assert!(a.verify(&fresh, None).await.is_ok());
    }
    assert!(a.verify(&k1, None).await.is_ok());
    // The admin API and the metrics see the kept set and the failures.
    let status = &a.status()[0];
    assert_eq!(status.source, "jwks_url");
    assert_eq!(status.kids, vec![Some("k1".to_owned())]);
    assert_eq!(
        (status.fetches_ok, status.fetches_failed),
        (Some(1), Some(3))
    );
    let fetch = status.fetch.as_ref().unwrap();
    assert!(fetch
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("500")));
    assert!(status.loaded_at.is_some() && fetch.next_refresh.is_some());
}

/// An identity provider with a discovery document pointing at its JWKS,
/// which holds one ES256 key, `d1`.
async fn discovery_server() -> TestServer {
    let server = TestServer::start().await;
    let doc = json!({"issuer": server.url(""), "jwks_uri": server.url("/keys")});
    server.set(
        "/.well-known/openid-configuration",
        Reply::ok(doc.to_string()),
    );
    server.set("/keys", Reply::ok(jwks(&[testutil::ec256().jwk("d1")])));
    server
}

#[tokio::test]
async fn discovery_finds_the_jwks() {
    let server = discovery_server().await;
    let (a, _stop) = remote(&server, KeySource::Discovery).await;
    let token = sign(
        ES256,
        &claims(json!({"iss": server.url("")})),
        &testutil::ec256().encoding_key(),
        Some("d1"),
    );
    assert_eq!(a.verify(&token, None).await.unwrap().token.issuer_id, "idp");
    assert_eq!(server.hits("/.well-known/openid-configuration"), 1);

    let spoofed = json!({"issuer": "https://elsewhere", "jwks_uri": server.url("/keys")});
    server.set(
        "/.well-known/openid-configuration",
        Reply::ok(spoofed.to_string()),
    );
    let (b, _stop) = remote(&server, KeySource::Discovery).await;
    assert_eq!(b.issuers_without_keys(), vec!["idp".to_string()]);
}

#[tokio::test]
async fn provider_down_means_no_keys() {
    let server = TestServer::start().await;
    let (a, _stop) = remote(&server, KeySource::JwksUrl(server.url("/missing"))).await;
    assert_eq!(a.issuers_without_keys(), vec!["idp".to_string()]);
    let token = sign(
        ES256,
        &claims(json!({"iss": server.url("")})),
        &testutil::ec256().encoding_key(),
        None,
    );
    assert_eq!(a.verify(&token, None).await.unwrap_err(), AuthError::NoKeys);
}

#[tokio::test]
async fn https_jwks_trusts_only_the_configured_ca() {
    let (server, ca_pem) = TestServer::start_tls().await;
    server.set("/jwks", Reply::ok(jwks(&[testutil::ec256().jwk("t1")])));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://localhost:{}/jwks", server.addr.port());
    let mut cfg = issuer("tls", &[ES256], KeySource::JwksUrl(url));
    // Without the CA (system roots only) the self-signed server is not trusted.
    let untrusted =
        Authenticator::with_tuning(&[cfg.clone()], CancellationToken::new(), quick(), None)
            .await
            .unwrap();
    assert_eq!(untrusted.issuers_without_keys(), vec!["tls".to_string()]);
    cfg.ca = Some(pem_file(&dir, "ca.pem", &ca_pem));
    let a = Authenticator::with_tuning(&[cfg], CancellationToken::new(), quick(), None)
        .await
        .unwrap();
    assert!(a.issuers_without_keys().is_empty());
    let token = sign(
        ES256,
        &claims(json!({})),
        &testutil::ec256().encoding_key(),
        Some("t1"),
    );
    assert!(a.verify(&token, None).await.is_ok());
}

/// Whether the refresher of issuer `index` (a remote set) was told to stop.
fn refresher_stopped(a: &Authenticator, index: usize) -> bool {
    match &a.issuers[index].keys {
        super::IssuerKeys::Remote(r) => r.stop.is_cancelled(),
        super::IssuerKeys::Local(_) => panic!("issuer {index} has local keys"),
    }
}

/// Waits (bounded) until every refresher `a` started has ended.
async fn refreshers_end(a: &Authenticator) {
    tokio::time::timeout(Duration::from_secs(5), a.tasks().wait())
        .await
        .expect("the replaced refresher ends");
}

fn down() -> Reply {
    Reply {
        status: 500,
        ..Reply::ok("")
    }
}

#[tokio::test]
async fn a_reload_keeps_remote_keys_whose_source_is_unchanged() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::ok(jwks(&[testutil::ec256().jwk("k1")])));
    let (a, stop) = remote(&server, KeySource::JwksUrl(server.url("/jwks"))).await;
    assert_eq!(server.hits("/jwks"), 1);
    let key = testutil::ec256().encoding_key();
    let token = sign(
        ES256,
        &claims(json!({"iss": server.url("")})),
        &key,
        Some("k1"),
    );
    let reload = |cfg: &IssuerConfig, previous: &Arc<Authenticator>| {
        let (cfg, previous, stop) = (cfg.clone(), previous.clone(), stop.clone());
        async move {
            Authenticator::with_tuning(&[cfg], stop, quick(), Some(&previous))
                .await
                .unwrap()
        }
    };

    // The provider goes down; a reload builds a new authenticator from the
    // same settings (one issuer's policy changed: a longer leeway). It holds
    // the very same source: no new refresher, nothing fetched.
    server.set("/jwks", down());
    let mut cfg = issuer("idp", &[ES256], KeySource::JwksUrl(server.url("/jwks")));
    cfg.issuer = Some(server.url(""));
    cfg.refetch_interval = Duration::from_millis(500);
    cfg.leeway = Duration::from_secs(120);
    let b = reload(&cfg, &a).await;
    assert!(b.issuers_without_keys().is_empty());
    assert!(b.tasks().is_empty(), "the running refresher is taken over");
    assert!(!refresher_stopped(&a, 0));
    assert_eq!(server.hits("/jwks"), 1, "the kept set is not fetched again");
    assert_eq!(
        b.verify(&token, None).await.unwrap().token.leeway,
        Duration::from_secs(120)
    );

    // Another refetch interval: a successor serves the same keys under the
    // new setting, continuing the old schedule (an hour away: no fetch), and
    // the first refresher stops.
    cfg.refetch_interval = Duration::from_secs(2);
    let c = reload(&cfg, &b).await;
    assert!(c.issuers_without_keys().is_empty());
    assert_eq!(c.tasks().len(), 1, "one new refresher");
    assert!(refresher_stopped(&b, 0));
    refreshers_end(&a).await;
    assert_eq!(
        server.hits("/jwks"),
        1,
        "the schedule is resumed, not restarted"
    );
    let fresh = sign(
        ES256,
        &claims(json!({"iss": server.url(""), "n": 1})),
        &key,
        Some("k1"),
    );
    assert!(c.verify(&fresh, None).await.is_ok());
    // The fetch history carries over, for the admin API and the metrics.
    assert_eq!(c.status()[0].fetches_ok, Some(1));

    // Another `issuer` string on a `jwks_url` issuer is policy: the source
    // and its refresher stay, and the new string is what tokens must carry.
    cfg.issuer = Some("https://renamed.example".into());
    let d = reload(&cfg, &c).await;
    assert!(d.tasks().is_empty());
    assert!(!refresher_stopped(&c, 0));
    assert!(d.issuers_without_keys().is_empty());
    let renamed = sign(
        ES256,
        &claims(json!({"iss": "https://renamed.example"})),
        &key,
        Some("k1"),
    );
    assert_eq!(
        d.verify(&renamed, None).await.unwrap().token.issuer_id,
        "idp"
    );
    assert_eq!(
        d.verify(&fresh, None).await.unwrap_err(),
        AuthError::WrongIssuer
    );
    assert_eq!(server.hits("/jwks"), 1);

    // A changed key source starts afresh: the keys of the old URL are not
    // the keys the issuer now names, so none while its provider is down.
    cfg.keys = KeySource::JwksUrl(server.url("/other"));
    let e = reload(&cfg, &d).await;
    assert_eq!(e.issuers_without_keys(), vec!["idp".to_string()]);
    assert_eq!(
        e.verify(&renamed, None).await.unwrap_err(),
        AuthError::NoKeys
    );
    // The replaced source's refresher ends with the last authenticator
    // holding it.
    let replaced = c.tasks().clone();
    drop((b, c, d));
    tokio::time::timeout(Duration::from_secs(5), replaced.wait())
        .await
        .expect("the refresher of the old source ends");
    stop.cancel();
}

#[tokio::test]
async fn a_reload_that_changes_the_discovery_issuer_starts_afresh() {
    let server = discovery_server().await;
    let (a, stop) = remote(&server, KeySource::Discovery).await;
    assert!(a.issuers_without_keys().is_empty());
    server.set("/.well-known/openid-configuration", down());
    // For discovery the issuer URL is where the keys come from.
    let mut cfg = issuer("idp", &[ES256], KeySource::Discovery);
    cfg.issuer = Some(server.url("/tenant-2"));
    let b = Authenticator::with_tuning(&[cfg], stop.clone(), quick(), Some(&a))
        .await
        .unwrap();
    assert_eq!(b.issuers_without_keys(), vec!["idp".to_string()]);
    stop.cancel();
}

#[tokio::test]
async fn a_reload_with_another_ca_keeps_the_keys_until_a_fetch_with_it_succeeds() {
    let (server, ca_pem) = TestServer::start_tls().await;
    server.set("/jwks", Reply::ok(jwks(&[testutil::ec256().jwk("t1")])));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://localhost:{}/jwks", server.addr.port());
    let mut cfg = issuer("tls", &[ES256], KeySource::JwksUrl(url));
    cfg.ca = Some(pem_file(&dir, "ca.pem", &ca_pem));
    let stop = CancellationToken::new();
    let build = |cfg: &IssuerConfig, previous: Option<&Arc<Authenticator>>| {
        let (cfg, previous, stop) = (cfg.clone(), previous.cloned(), stop.clone());
        async move {
            Authenticator::with_tuning(&[cfg], stop, quick(), previous.as_deref())
                .await
                .unwrap()
        }
    };
    let a = build(&cfg, None).await;
    assert_eq!(server.hits("/jwks"), 1);
    let token = sign(
        ES256,
        &claims(json!({})),
        &testutil::ec256().encoding_key(),
        Some("t1"),
    );

    // The same certificates at another path: nothing changed.
    cfg.ca = Some(pem_file(&dir, "copy.pem", &ca_pem));
    let b = build(&cfg, Some(&a)).await;
    assert!(b.tasks().is_empty());

    // A CA that does not trust the provider: the keys stay, a fetch with the
    // new CA is tried at once (and fails), the old refresher stops.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    cfg.ca = Some(pem_file(&dir, "stranger.pem", &stranger.cert.pem()));
    let c = build(&cfg, Some(&b)).await;
    assert!(c.issuers_without_keys().is_empty());
    assert!(c.verify(&token, None).await.is_ok());
    refreshers_end(&a).await;
    let failed = tokio::time::timeout(Duration::from_secs(5), async {
        while c.status()[0].fetches_failed != Some(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(failed.is_ok(), "a fetch with the new CA was tried");
    assert_eq!(
        server.hits("/jwks"),
        1,
        "the untrusted server never answered"
    );
    assert!(
        c.issuers_without_keys().is_empty(),
        "a failed fetch keeps the keys"
    );

    // The same file rewritten with the right CA is a change too: the file is
    // read again on every reload, and the fetch with it succeeds at once.
    std::fs::write(cfg.ca.as_ref().unwrap(), &ca_pem).unwrap();
    let d = build(&cfg, Some(&c)).await;
    refreshers_end(&c).await;
    let fetched = tokio::time::timeout(Duration::from_secs(5), async {
        while server.hits("/jwks") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(fetched.is_ok(), "the fixed CA fetched at once");
    assert_eq!(d.status()[0].fetches_ok, Some(2));
    stop.cancel();
}

#[tokio::test]
async fn a_reload_refused_half_way_leaves_the_running_refreshers_alone() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::ok(jwks(&[testutil::ec256().jwk("k1")])));
    let (a, stop) = remote(&server, KeySource::JwksUrl(server.url("/jwks"))).await;
    let mut changed = issuer("idp", &[ES256], KeySource::JwksUrl(server.url("/jwks")));
    changed.refetch_interval = Duration::from_secs(3);
    let broken = issuer(
        "broken",
        &[ES256],
        KeySource::PublicKey("/nonexistent/key.pem".into()),
    );
    let refused =
        Authenticator::with_tuning(&[changed, broken], stop.clone(), quick(), Some(&a)).await;
    assert!(refused.is_err());
    assert!(!refresher_stopped(&a, 0));
    assert_eq!(a.tasks().len(), 1);
    stop.cancel();
}
