//! JWT header/claims handling in `Authenticator::verify`.
//!
//! Two issuers from a config loaded with `load_str`: `main` (HS256, `iss`
//! `https://id.test`, audience `chat`, required `exp` and `sub`) and `other`
//! (HS384, no iss/aud). Input, by its first byte:
//! - `0..=63`: the rest is the token, as is;
//! - otherwise: the rest is `header JSON \0 payload JSON`, encoded base64url
//!   and signed with `main`'s secret (HS256) or, for odd bytes, `other`'s
//!   (HS384), so verification gets past the signature to the claim checks.
//!   Bit 6 set: the header JSON is used as is; clear: it is replaced by
//!   `{"alg":"HS256"|"HS384","typ":"JWT"}` and only the payload is fuzzed.
//!
//! Oracles: no panic; an accepted token carries an `alg` the issuer lists,
//! its claims pass that issuer's checks (iss/aud/exp/sub for `main`), and the
//! returned claims are the token's payload.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::runtime::Runtime;
use wsgate::auth::Authenticator;

const MAIN_SECRET: &str = "fuzz-main-secret-0123456789abcdef0123";
const OTHER_SECRET: &str = "fuzz-other-secret-0123456789abcdef0123456789";

const CONFIG: &str = r#"
listeners: [{bind: "127.0.0.1:0"}]
issuers:
  - id: main
    issuer: "https://id.test"
    audiences: [chat]
    algorithms: [HS256]
    keys: {secret: "fuzz-main-secret-0123456789abcdef0123"}
    leeway: 60s
    required_claims: [exp, sub]
  - id: other
    algorithms: [HS384]
    keys: {secret: "fuzz-other-secret-0123456789abcdef0123456789"}
routes:
  - {id: r, path: /ws, upstream: "ws://127.0.0.1:9"}
"#;

struct Env {
    rt: Runtime,
    auth: Arc<Authenticator>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cfg = wsgate::config::load_str(CONFIG, Path::new("/nonexistent/fuzz.yaml"), |_| None)
            .expect("fuzz config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let auth = rt
            .block_on(Authenticator::new(
                &cfg.issuers,
                tokio_util::sync::CancellationToken::new(),
            ))
            .expect("authenticator");
        Env { rt, auth }
    })
}

fn sign(header: &[u8], payload: &[u8], hs384: bool) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = if hs384 {
        let mut m = Hmac::<sha2::Sha384>::new_from_slice(OTHER_SECRET.as_bytes()).unwrap();
        m.update(input.as_bytes());
        m.finalize().into_bytes().to_vec()
    } else {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(MAIN_SECRET.as_bytes()).unwrap();
        m.update(input.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn part(token: &str, i: usize) -> Option<Value> {
    let p = token.split('.').nth(i)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let token = if sel < 64 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let hs384 = sel & 1 == 1;
        let (header, payload) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&b""[..], rest),
        };
        let fixed: &[u8] = if hs384 {
            br#"{"alg":"HS384","typ":"JWT"}"#
        } else {
            br#"{"alg":"HS256","typ":"JWT"}"#
        };
        let header = if sel & 0x40 != 0 && !header.is_empty() { header } else { fixed };
        sign(header, payload, hs384)
    };

    let e = env();
    let allowed_main = ["main".to_owned()];
    for allowed in [None, Some(&allowed_main[..])] {
        let result = e.rt.block_on(e.auth.verify(&token, allowed));
        let Ok(v) = result else {
            continue;
        };
        let header = part(&token, 0).expect("accepted token has a JSON header");
        let payload = part(&token, 1).expect("accepted token has a JSON payload");
        assert_eq!(v.claims, payload, "claims differ from the payload");
        let alg = header.get("alg").and_then(Value::as_str);
        let t = now();
        match v.issuer_id.as_str() {
            "main" => {
                assert_eq!(alg, Some("HS256"));
                assert_eq!(v.iss.as_deref(), Some("https://id.test"));
                assert_eq!(payload.get("iss").and_then(Value::as_str), Some("https://id.test"));
                let aud_ok = match payload.get("aud") {
                    Some(Value::String(s)) => s == "chat",
                    Some(Value::Array(a)) => a.iter().any(|x| x == "chat"),
                    _ => false,
                };
                assert!(aud_ok, "aud {:?} accepted", payload.get("aud"));
                assert!(payload.get("sub").is_some(), "no sub accepted");
            }
            "other" => {
                assert!(allowed.is_none(), "issuer `other` accepted when only `main` allowed");
                assert_eq!(alg, Some("HS384"));
            }
            id => panic!("unknown issuer {id}"),
        }
        let exp = v.exp.expect("exp is required");
        assert!(exp + 61 >= t, "expired token accepted: exp {exp}, now {t}");
        if let Some(nbf) = wsgate::auth::jwt::numeric_date(&payload, "nbf") {
            assert!(nbf - 61 <= t, "token not yet valid accepted: nbf {nbf}");
        }
    }
});
