//! One admission rule, everywhere: a reload re-judges every live session's
//! token (not only its route's rules), a refresh is judged by the rules in
//! force now, and `iat` and `sub` mean the same at the handshake, in
//! revocations, limits and refresh. A refusal after the 101 (a bad
//! `first_message` token) ends the TCP connection within a second.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do not
// apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A second shared secret, for rotations.
const OTHER_SECRET: &str = "another-test-secret-abcdefghijklmnop";

/// A config with the given `issuers:` and `routes:` YAML (already indented).
fn config(issuers: &str, routes: &str) -> String {
    format!("{}routes:\n{routes}", head_with(issuers))
}

/// The test issuer with `keys` (indented under `keys:`) and audiences.
fn issuer(id: &str, keys: &str, audiences: &str) -> String {
    format!(
        "  - id: {id}\n    issuer: \"{ISS}\"\n    audiences: {audiences}\n    algorithms: [HS256]\n    keys:\n      {keys}\n    leeway: 1s\n"
    )
}

fn secret_issuer(secret: &str) -> String {
    issuer(
        "test",
        &format!("secret: \"{secret}\""),
        &format!("[\"{AUD}\"]"),
    )
}

fn echo_route(up: &str, extra: &str) -> String {
    format!("  - id: echo\n    path: /echo\n    upstream: {up}\n{extra}")
}

/// `POST /admin/reload` with `yaml` written first; asserts 200 and returns
/// when the answer arrived.
async fn admin_reload(gw: &Gateway, yaml: &str) -> Instant {
    gw.rewrite_config(yaml);
    let r = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "reload refused: {}", r.body);
    Instant::now()
}

/// After a reload answered at `answered`, the session must close with 4403
/// `access revoked by policy` within a second.
async fn assert_revoked_by_policy(ws: &mut Ws, answered: Instant, case: &str) {
    let close = expect_close_within(ws, Duration::from_secs(5)).await;
    assert_eq!(
        close,
        (4403, "access revoked by policy".to_owned()),
        "{case}"
    );
    let after = answered.elapsed();
    assert!(
        after < Duration::from_secs(1),
        "{case}: closed {after:?} after the answer"
    );
}

/// ES256 with a `kid` header.
fn mint_kid(key: &rcgen::KeyPair, kid: &str, claims: &serde_json::Value) -> String {
    install_crypto();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &ec_key(key)).expect("sign")
}

fn jwks(keys: &[(&str, &rcgen::KeyPair)]) -> Vec<u8> {
    let keys: Vec<_> = keys.iter().map(|(kid, k)| ec_jwk(k, Some(kid))).collect();
    serde_json::to_vec(&json!({ "keys": keys })).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rejudges_every_live_token() {
    let up = EchoUpstream::start().await;
    let route = echo_route(&up.url(), "");
    let base = config(&secret_issuer(SECRET), &route);

    // (case, the config a reload brings in)
    let cases: Vec<(&str, String)> = vec![
        (
            "issuer removed",
            config(
                &issuer("other", &format!("secret: \"{OTHER_SECRET}\""), "[\"x\"]"),
                &route,
            ),
        ),
        (
            "HS secret rotated",
            config(&secret_issuer(OTHER_SECRET), &route),
        ),
        (
            "audience removed",
            config(
                &issuer("test", &format!("secret: \"{SECRET}\""), "[\"another\"]"),
                &route,
            ),
        ),
        (
            "require tightened",
            config(
                &secret_issuer(SECRET),
                &echo_route(
                    &up.url(),
                    "    require:\n      - claim: roles\n        any_of: [admin]\n",
                ),
            ),
        ),
        (
            "route removed",
            config(
                &secret_issuer(SECRET),
                &format!(
                    "  - id: other\n    path: /other\n    upstream: {}\n",
                    up.url()
                ),
            ),
        ),
        (
            "route moved to another path",
            config(
                &secret_issuer(SECRET),
                &format!(
                    "  - id: echo\n    path: /elsewhere\n    upstream: {}\n",
                    up.url()
                ),
            ),
        ),
    ];
    for (case, next) in cases {
        let gw = Gateway::start(&base);
        let mut ws = gw
            .session("/echo", &token("alice", json!({"roles": ["chat"]})))
            .await;
        let answered = admin_reload(&gw, &next).await;
        assert_revoked_by_policy(&mut ws, answered, case).await;
        // The upstream is told the session is going away.
        assert!(
            eventually(WAIT, || up.conns().iter().any(|c| c
                .close
                .as_ref()
                .map(|c| c.0)
                == Some(1001)))
            .await,
            "{case}: upstream not closed with 1001"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_changes_nothing_keeps_the_session_flowing() {
    let up = EchoUpstream::start().await;
    let yaml = config(&secret_issuer(SECRET), &echo_route(&up.url(), ""));
    let gw = Gateway::start(&yaml);
    let mut ws = gw.session("/echo", &token("alice", json!({}))).await;
    // The same file, and the same issuer under a longer leeway: still valid.
    admin_reload(&gw, &yaml).await;
    roundtrip(&mut ws, "after an identical reload").await;
    admin_reload(&gw, &yaml.replace("leeway: 1s", "leeway: 30s")).await;
    for i in 0..20 {
        roundtrip(&mut ws, &format!("frame {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_removes_a_key_from_a_jwks_file_closes_its_sessions() {
    let up = EchoUpstream::start().await;
    let jwks_issuer = issuer("test", "jwks_file: jwks.json", &format!("[\"{AUD}\"]"))
        .replace("[HS256]", "[ES256]");
    let yaml = config(&jwks_issuer, &echo_route(&up.url(), ""));
    let (k1, k2) = (
        rcgen::KeyPair::generate().expect("key"),
        rcgen::KeyPair::generate().expect("key"),
    );
    let gw = Gateway::start_with_files(&yaml, &[("jwks.json", &jwks(&[("k1", &k1), ("k2", &k2)]))]);
    let mut one = gw
        .session("/echo", &mint_kid(&k1, "k1", &claims("alice", json!({}))))
        .await;
    let mut two = gw
        .session("/echo", &mint_kid(&k2, "k2", &claims("bob", json!({}))))
        .await;
    write_file(&gw.dir().join("jwks.json"), &jwks(&[("k2", &k2)]));
    let answered = admin_reload(&gw, &yaml).await;
    assert_revoked_by_policy(&mut one, answered, "key k1 removed").await;
    roundtrip(&mut two, "k2 is still trusted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_with_a_rotated_secret_loses_its_session_even_with_a_long_exp() {
    // The attack: a leaked secret signs a token with a 10-year `exp`; the
    // operator rotates the secret. The forged session must not survive.
    let up = EchoUpstream::start().await;
    let yaml = config(&secret_issuer(SECRET), &echo_route(&up.url(), ""));
    let gw = Gateway::start(&yaml);
    let forged = token("mallory", json!({"exp": now() + 10 * 365 * 86400}));
    let mut ws = gw.session("/echo", &forged).await;
    gw.reload(&config(
        &secret_issuer(OTHER_SECRET),
        &echo_route(&up.url(), ""),
    ))
    .await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4403, "access revoked by policy".to_owned())
    );
    assert_eq!(gw.connect("/echo", &forged).await.err(), Some(401));
}

/// A refused handshake's status and `WWW-Authenticate` header.
fn refused<T: std::fmt::Debug>(r: Result<T, WsError>) -> (u16, String) {
    let resp = refusal(r);
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (resp.status().as_u16(), www)
}

async fn refresh(ws: &mut Ws, token: &str) -> serde_json::Value {
    let msg = json!({"type": "wsgate.refresh", "token": token}).to_string();
    ws.send(Message::text(msg)).await.expect("send refresh");
    serde_json::from_str(&next_text(ws).await).expect("json answer")
}

fn refresh_route(up: &str, require: &str) -> String {
    echo_route(up, &format!("    session:\n      refresh: true\n{require}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_judged_by_the_rules_in_force_now() {
    let up = EchoUpstream::start().await;
    let any = "    require:\n      - claim: roles\n        any_of: [chat, admin]\n";
    let admin_only = "    require:\n      - claim: roles\n        any_of: [admin]\n";
    let gw = Gateway::start(&config(
        &secret_issuer(SECRET),
        &refresh_route(&up.url(), any),
    ));
    let mut ws = gw
        .session(
            "/echo",
            &token("alice", json!({"roles": ["chat", "admin"]})),
        )
        .await;
    gw.reload(&config(
        &secret_issuer(SECRET),
        &refresh_route(&up.url(), admin_only),
    ))
    .await;
    roundtrip(&mut ws, "the session still qualifies").await;
    let chat_only = token("alice", json!({"roles": ["chat"]}));
    assert_eq!(gw.connect("/echo", &chat_only).await.err(), Some(403));
    let answer = refresh(&mut ws, &chat_only).await;
    assert_eq!(answer["type"], "wsgate.refresh_failed", "{answer}");
    assert_eq!(answer["error"], "forbidden");
    let both = token("alice", json!({"roles": ["admin"], "exp": now() + 900}));
    let answer = refresh(&mut ws, &both).await;
    assert_eq!(answer["type"], "wsgate.refreshed", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_subject() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(
        &secret_issuer(SECRET),
        &refresh_route(&up.url(), ""),
    ));

    let mut ws = gw.session("/echo", &token("alice", json!({}))).await;
    let answer = refresh(&mut ws, &token("bob", json!({}))).await;
    assert_eq!(answer["error"], "token is for another subject", "{answer}");
    let answer = refresh(&mut ws, &token("alice", json!({"sub": null}))).await;
    assert_eq!(answer["error"], "token is for another subject", "{answer}");

    // A session opened without `sub` cannot become anyone.
    let mut anon = gw.session("/echo", &token("x", json!({"sub": null}))).await;
    for next in [token("bob", json!({})), token("x", json!({"sub": null}))] {
        let answer = refresh(&mut anon, &next).await;
        assert_eq!(answer["error"], "session has no subject", "{answer}");
    }

    // 12345 and "12345" are one subject; 12346 is another.
    let mut num = gw
        .session("/echo", &token("x", json!({"sub": 12345})))
        .await;
    let answer = refresh(&mut num, &token("12345", json!({"exp": now() + 900}))).await;
    assert_eq!(answer["type"], "wsgate.refreshed", "{answer}");
    let answer = refresh(&mut num, &token("x", json!({"sub": 12346}))).await;
    assert_eq!(answer["error"], "token is for another subject", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_in_the_future_is_not_yet_valid() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&secret_issuer(SECRET), &echo_route(&up.url(), "")));
    let future = token("alice", json!({"iat": now() + 3600}));
    let (status, description) = refused(
        ws_connect(
            &gw.ws_url("/echo"),
            &[("authorization", &format!("Bearer {future}"))],
        )
        .await,
    );
    assert_eq!(status, 401);
    assert!(description.contains("token not yet valid"), "{description}");
    // Within the leeway (1s here) a clock a little ahead is tolerated.
    gw.session("/echo", &token("alice", json!({"iat": now() + 1})))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_sub_is_one_subject_everywhere() {
    let up = EchoUpstream::start().await;
    let route = echo_route(
        &up.url(),
        "    forward:\n      headers:\n        X-User-Id: \"{claims.sub}\"\n    limits:\n      max_sessions_per_subject: 3\n",
    );
    let gw = Gateway::start(&config(&secret_issuer(SECRET), &route));
    let numeric = token("x", json!({"sub": 12345}));
    let text = token("12345", json!({}));
    let mut held = vec![
        gw.session("/echo", &numeric).await,
        gw.session("/echo", &text).await,
        gw.session("/echo", &numeric).await,
    ];
    assert_eq!(up.conn(0).await.header("x-user-id"), Some("12345"));
    // The fourth, whichever form its `sub` takes, is over the limit.
    assert_eq!(gw.connect("/echo", &text).await.err(), Some(429));
    assert_eq!(gw.connect("/echo", &numeric).await.err(), Some(429));
    // A revocation by the subject's text covers both forms.
    let (status, body) = gw.revoke(r#"{"sub": "12345"}"#).await;
    assert_eq!((status, body["closed"].as_u64()), (201, Some(3)), "{body}");
    for ws in &mut held {
        assert_eq!(expect_close(ws).await, (4403, "token revoked".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_of_another_type_is_malformed() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&secret_issuer(SECRET), &echo_route(&up.url(), "")));
    for sub in [
        json!(1.5),
        json!(true),
        json!({"id": 1}),
        json!(["a"]),
        json!(null),
    ] {
        let t = token("x", json!({ "sub": sub.clone() }));
        // `null` in `claims()` removes the claim: build that one by hand.
        let t = if sub.is_null() {
            let mut c = claims("x", json!({}));
            c["sub"] = serde_json::Value::Null;
            mint(SECRET, &c)
        } else {
            t
        };
        let (status, description) = refused(
            ws_connect(
                &gw.ws_url("/echo"),
                &[("authorization", &format!("Bearer {t}"))],
            )
            .await,
        );
        assert_eq!(status, 401, "sub {sub}");
        assert!(
            description.contains("malformed token"),
            "sub {sub}: {description}"
        );
    }
}

/// Reads until the gateway's close frame, answers it when `answer`, then
/// reads to EOF: the close code and reason, and how long the TCP connection
/// stayed open after the close frame arrived. Every read is bounded by the
/// harness's `WAIT`.
async fn close_then_eof(ws: &mut RawWs, answer: bool) -> ((u16, String), Duration) {
    let close = ws.expect_close().await;
    let arrived = Instant::now();
    if answer {
        ws.send_close(close.0, "").await;
    }
    while ws.read_frame().await.is_some() {}
    (close, arrived.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_refusal_closes_tcp_within_a_second() {
    let up = EchoUpstream::start().await;
    let route = echo_route(&up.url(), "    token_sources: [first_message]\n");
    let gw = Gateway::start(&config(&secret_issuer(SECRET), &route));
    // Signed with a secret the issuer does not have.
    let forged = mint(OTHER_SECRET, &claims("mallory", json!({})));
    for answer in [false, true] {
        let mut ws = RawWs::connect(gw.addr(), "/echo", &[]).await;
        ws.send_text(&json!({ "token": forged }).to_string()).await;
        let (close, open) = close_then_eof(&mut ws, answer).await;
        assert_eq!(close, (4401, "invalid signature".to_owned()));
        // A client that answers the close sees EOF at once; one that does
        // not is cut off 1 s after the close (half a second more for a
        // loaded machine).
        let bound = if answer {
            Duration::from_millis(700)
        } else {
            Duration::from_millis(1500)
        };
        assert!(
            open < bound,
            "answer={answer}: TCP open {open:?} after the close"
        );
    }
    assert_eq!(up.count(), 0, "a refused client never reaches the upstream");
}

/// A `jwks_url` key server whose answers after the first can be held back:
/// a handshake or refresh naming a kid it has not served yet waits on the
/// refetch, and so on the test, while a reload comes in.
struct HeldJwks {
    url: String,
    /// Requests seen so far.
    requests: Arc<AtomicUsize>,
    /// Closed until released: held requests wait for a permit.
    release: Arc<tokio::sync::Semaphore>,
}

impl HeldJwks {
    /// Serves `first` at once, then `later` once [`Self::release`] is called.
    async fn start(first: Vec<u8>, later: Vec<u8>) -> HeldJwks {
        Self::holding_from(1, first, later).await
    }

    /// Serves `body` only once [`Self::release`] is called.
    async fn holding(body: Vec<u8>) -> HeldJwks {
        Self::holding_from(0, Vec::new(), body).await
    }

    /// Answers the first `hold_from` requests with `first` at once and the
    /// rest with `later` once released.
    async fn holding_from(hold_from: usize, first: Vec<u8>, later: Vec<u8>) -> HeldJwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (seen, gate) = (Arc::clone(&requests), Arc::clone(&release));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let held = n >= hold_from;
                let body = if held { later.clone() } else { first.clone() };
                let gate = Arc::clone(&gate);
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = conn.read(&mut head).await;
                    if held {
                        let _permit = gate.acquire().await;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        HeldJwks {
            url,
            requests,
            release,
        }
    }

    /// Waits until `n` requests have arrived.
    async fn wait_requests(&self, n: usize) {
        assert!(
            eventually(WAIT, || self.requests.load(Ordering::SeqCst) >= n).await,
            "the gateway never asked for the key set again"
        );
    }

    fn release(&self) {
        self.release
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

/// An ES256 issuer reading its keys from `url`, refetching an unknown kid
/// after 100 ms.
fn remote_issuer(url: &str) -> String {
    format!(
        "  - id: test\n    issuer: \"{ISS}\"\n    audiences: [\"{AUD}\"]\n    algorithms: [ES256]\n    keys:\n      jwks_url: {url}\n    refetch_interval: 100ms\n    leeway: 1s\n"
    )
}

/// The two keys of the held-fetch tests: `k1` is served from the start,
/// `k2` only by the refetch the test holds back.
fn held_keys() -> (rcgen::KeyPair, rcgen::KeyPair) {
    (
        rcgen::KeyPair::generate().expect("key"),
        rcgen::KeyPair::generate().expect("key"),
    )
}

/// A gateway whose issuer fetches from a [`HeldJwks`] serving `k1`, then
/// `k1` and `k2` once released; `routes` builds the routes from the
/// upstream's URL. Returns once the first fetch was answered.
struct HeldFetch {
    up: EchoUpstream,
    k1: rcgen::KeyPair,
    k2: rcgen::KeyPair,
    idp: HeldJwks,
    issuers: String,
    gw: Gateway,
}

impl HeldFetch {
    async fn start(routes: impl Fn(&str) -> String) -> HeldFetch {
        let up = EchoUpstream::start().await;
        let (k1, k2) = held_keys();
        let idp = HeldJwks::start(jwks(&[("k1", &k1)]), jwks(&[("k1", &k1), ("k2", &k2)])).await;
        let issuers = remote_issuer(&idp.url);
        let gw = Gateway::start(&config(&issuers, &routes(&up.url())));
        idp.wait_requests(1).await;
        HeldFetch {
            up,
            k1,
            k2,
            idp,
            issuers,
            gw,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_judged_before_a_reload_is_judged_again_after_it() {
    let HeldFetch {
        up,
        k2,
        idp,
        issuers,
        gw,
        ..
    } = HeldFetch::start(|up| echo_route(up, "")).await;
    // The next fetch may start once `refetch_interval` has passed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = mint_kid(&k2, "k2", &claims("alice", json!({"roles": ["chat"]})));
    let addr = gw.ws_url("/echo");
    let handshake = tokio::spawn(async move {
        let auth = format!("Bearer {token}");
        status_of(ws_connect(&addr, &[("authorization", &auth)]).await)
    });
    // The handshake now waits for k2; a reload tightens the route meanwhile.
    idp.wait_requests(2).await;
    admin_reload(
        &gw,
        &config(
            &issuers,
            &echo_route(
                &up.url(),
                "    require:\n      - claim: roles\n        any_of: [admin]\n",
            ),
        ),
    )
    .await;
    idp.release();
    let status = tokio::time::timeout(WAIT, handshake)
        .await
        .expect("handshake answered")
        .expect("handshake task");
    assert_eq!(status, 403, "admitted by the rules of the old config");
    assert!(up.conns().is_empty(), "the upstream was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_judged_before_a_reload_is_judged_again_after_it() {
    let HeldFetch {
        up,
        k1,
        k2,
        idp,
        issuers,
        gw,
    } = HeldFetch::start(|up| refresh_route(up, "")).await;
    let mut ws = gw
        .session(
            "/echo",
            &mint_kid(&k1, "k1", &claims("alice", json!({"plan": "pro"}))),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new token passes the rules in force when it is judged, not those
    // of the reload that comes in while its key is fetched.
    let next = mint_kid(
        &k2,
        "k2",
        &claims("alice", json!({"plan": "free", "exp": now() + 900})),
    );
    let msg = json!({"type": "wsgate.refresh", "token": next}).to_string();
    ws.send(Message::text(msg)).await.expect("send refresh");
    idp.wait_requests(2).await;
    let answered = admin_reload(
        &gw,
        &config(
            &issuers,
            &refresh_route(
                &up.url(),
                "    require:\n      - claim: plan\n        equals: pro\n",
            ),
        ),
    )
    .await;
    idp.release();
    let answer: serde_json::Value =
        serde_json::from_str(&next_text(&mut ws).await).expect("json answer");
    assert_eq!(answer["type"], "wsgate.refresh_failed", "{answer}");
    assert_revoked_by_policy(&mut ws, answered, "refresh overtaken by a reload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_is_judged_by_the_config_in_force_when_it_arrives() {
    let up = EchoUpstream::start().await;
    let fm_route = |extra: &str| {
        echo_route(
            &up.url(),
            &format!("    token_sources: [first_message]\n{extra}"),
        )
    };
    let base = config(&secret_issuer(SECRET), &fm_route(""));
    // (case, the config a reload brings in while the client holds its 101,
    // the close it then gets for a token the old config accepted)
    let cases = [
        (
            "HS secret rotated",
            config(&secret_issuer(OTHER_SECRET), &fm_route("")),
            4401,
            "invalid signature",
        ),
        (
            "require tightened",
            config(
                &secret_issuer(SECRET),
                &fm_route("    require:\n      - claim: roles\n        any_of: [admin]\n"),
            ),
            4403,
            "forbidden",
        ),
        (
            "route removed",
            config(
                &secret_issuer(SECRET),
                &format!(
                    "  - id: other\n    path: /other\n    upstream: {}\n",
                    up.url()
                ),
            ),
            4403,
            "access revoked by policy",
        ),
        (
            "route no longer reads a first message",
            config(&secret_issuer(SECRET), &echo_route(&up.url(), "")),
            4403,
            "access revoked by policy",
        ),
    ];
    for (case, next, code, reason) in cases {
        let gw = Gateway::start(&base);
        let (mut ws, _) = ws_connect(&gw.ws_url("/echo"), &[])
            .await
            .unwrap_or_else(|e| panic!("{case}: 101 expected: {}", describe(&e)));
        admin_reload(&gw, &next).await;
        let first = json!({"token": token("alice", json!({"roles": ["chat"]}))}).to_string();
        ws.send(Message::text(first))
            .await
            .expect("send first message");
        assert_eq!(
            expect_close(&mut ws).await,
            (code, reason.to_owned()),
            "{case}"
        );
    }
    assert!(up.conns().is_empty(), "the upstream was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_a_reload_cannot_judge_yet_are_judged_when_the_keys_arrive() {
    let up = EchoUpstream::start().await;
    let (k1, k2) = held_keys();
    let old_idp = HeldJwks::start(jwks(&[("k1", &k1)]), Vec::new()).await;
    let gw = Gateway::start(&config(
        &remote_issuer(&old_idp.url),
        &echo_route(&up.url(), ""),
    ));
    let mut ws = gw
        .session("/echo", &mint_kid(&k1, "k1", &claims("alice", json!({}))))
        .await;
    // (the new key source's set, whether it still holds the session's key)
    for (keys, kept) in [
        (jwks(&[("k1", &k1), ("k2", &k2)]), true),
        (jwks(&[("k2", &k2)]), false),
    ] {
        let new_idp = HeldJwks::holding(keys).await;
        // The new source does not answer yet: no verdict, the session stays.
        admin_reload(
            &gw,
            &config(&remote_issuer(&new_idp.url), &echo_route(&up.url(), "")),
        )
        .await;
        roundtrip(&mut ws, "no verdict before the keys arrive").await;
        new_idp.release();
        if kept {
            assert!(
                gw.wait_for_log("sessions judged once their issuers' keys arrived", WAIT)
                    .await,
                "never judged"
            );
            roundtrip(&mut ws, "k1 is in the new set").await;
        } else {
            let close = expect_close_within(&mut ws, WAIT).await;
            assert_eq!(close, (4403, "access revoked by policy".to_owned()));
        }
    }
}
