//! `wsgate token`: mints a JWT that the configured gateway accepts, for trying
//! it out. The CLI parsing lives in `cli.rs`; this is the minting alone.
//!
//! Signing key: `--key private.pem` (RSA PKCS#1/PKCS#8, EC P-256/P-384 PKCS#8,
//! Ed25519 PKCS#8) with the first of the issuer's `algorithms` the key can
//! make; otherwise the issuer's `secret` with its first HS* algorithm.
//!
//! Claims: `iss` (when the issuer sets one), `aud` (its first audience), `sub`,
//! `iat`, `nbf` (= `iat`), `exp` (`iat` + ttl) and a random `jti`. Each
//! `--claim k=v` then sets (or overrides) one claim:
//!
//! - a value with a comma makes an array of strings: `roles=a,b` →
//!   `["a","b"]`; `roles=a,` → `["a"]` (a one-element array);
//! - `true` / `false` become booleans and plain decimal integers (`42`, `-7`,
//!   no leading zero) become numbers; everything else stays a string;
//! - `k:=<json>` takes the value as raw JSON (`tenant:="42"` keeps a string,
//!   `ctx:={"a":1}` an object).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::{Config, IssuerConfig, KeySource};

#[derive(thiserror::Error, Debug)]
pub enum TokenCmdError {
    #[error("no issuer with id `{0}` in the config")]
    UnknownIssuer(String),
    #[error("issuer `{0}` has no `secret`: pass --key private.pem")]
    NeedsKey(String),
    #[error("issuer `{0}` accepts no HS* algorithm for its secret")]
    NoHmacAlgorithm(String),
    #[error("cannot read {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM private key (RSA, EC P-256/P-384 PKCS#8 or Ed25519 PKCS#8)", path.display())]
    UnsupportedKey { path: PathBuf },
    #[error("{}: issuer `{issuer}` accepts none of the algorithms this key can sign with", path.display())]
    NoMatchingAlgorithm { path: PathBuf, issuer: String },
    #[error("--claim `{0}`: expected key=value")]
    BadClaim(String),
    #[error("--claim `{key}`: the value after := is not JSON")]
    BadClaimJson { key: String },
    #[error("ttl too large")]
    BadTtl,
    #[error("signing failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Mints a token for `issuer_id` (see the module doc for keys and claims).
pub fn mint(
    config: &Config,
    issuer_id: &str,
    sub: &str,
    claims: &[(String, String)],
    ttl: Duration,
    key_pem: Option<&Path>,
) -> Result<String, TokenCmdError> {
    let issuer = config
        .issuers
        .iter()
        .find(|i| i.id == issuer_id)
        .ok_or_else(|| TokenCmdError::UnknownIssuer(issuer_id.to_owned()))?;
    mint_for(issuer, sub, claims, ttl, key_pem)
}

/// [`mint`] for one issuer's config.
pub fn mint_for(
    issuer: &IssuerConfig,
    sub: &str,
    claims: &[(String, String)],
    ttl: Duration,
    key_pem: Option<&Path>,
) -> Result<String, TokenCmdError> {
    crate::auth::install_crypto_provider();
    let issuer_id = issuer.id.as_str();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = now
        .checked_add(ttl.as_secs())
        .ok_or(TokenCmdError::BadTtl)?;
    let mut body = Map::new();
    if let Some(iss) = &issuer.issuer {
        body.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = issuer.audiences.first() {
        body.insert("aud".into(), aud.clone().into());
    }
    body.insert("sub".into(), sub.into());
    body.insert("iat".into(), now.into());
    body.insert("nbf".into(), now.into());
    body.insert("exp".into(), exp.into());
    body.insert("jti".into(), random_jti().into());
    for (key, value) in claims {
        let (key, value) = claim_value(key, value)?;
        body.insert(key, value);
    }
    let body = Value::Object(body);

    match key_pem {
        Some(path) => sign_with_pem(path, &issuer.algorithms, issuer_id, &body),
        None => {
            let KeySource::Secret(secret) = &issuer.keys else {
                return Err(TokenCmdError::NeedsKey(issuer_id.to_owned()));
            };
            let alg = issuer
                .algorithms
                .iter()
                .copied()
                .find(|a| a.family() == AlgorithmFamily::Hmac)
                .ok_or_else(|| TokenCmdError::NoHmacAlgorithm(issuer_id.to_owned()))?;
            let key = EncodingKey::from_secret(secret.as_bytes());
            jsonwebtoken::encode(&Header::new(alg), &body, &key).map_err(TokenCmdError::Sign)
        }
    }
}

fn sign_with_pem(
    path: &Path,
    algorithms: &[Algorithm],
    issuer_id: &str,
    body: &Value,
) -> Result<String, TokenCmdError> {
    let pem = std::fs::read(path).map_err(|source| TokenCmdError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    let key = EncodingKey::from_rsa_pem(&pem)
        .or_else(|_| EncodingKey::from_ec_pem(&pem))
        .or_else(|_| EncodingKey::from_ed_pem(&pem))
        .map_err(|_| TokenCmdError::UnsupportedKey {
            path: path.to_path_buf(),
        })?;
    // The family narrows the choice; signing tells the rest (an EC key signs
    // only with its own curve's algorithm, an RSA key may be unusable).
    for &alg in algorithms.iter().filter(|a| a.family() == key.family()) {
        if let Ok(token) = jsonwebtoken::encode(&Header::new(alg), body, &key) {
            return Ok(token);
        }
    }
    Err(TokenCmdError::NoMatchingAlgorithm {
        path: path.to_path_buf(),
        issuer: issuer_id.to_owned(),
    })
}

/// One `--claim` pair → (name, JSON value); see the module doc.
fn claim_value(key: &str, value: &str) -> Result<(String, Value), TokenCmdError> {
    if key.is_empty() {
        return Err(TokenCmdError::BadClaim(key.to_owned()));
    }
    if let Some(name) = key.strip_suffix(':') {
        let parsed = serde_json::from_str(value).map_err(|_| TokenCmdError::BadClaimJson {
            key: name.to_owned(),
        })?;
        return Ok((name.to_owned(), parsed));
    }
    let value = if value.contains(',') {
        Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| Value::String(v.to_owned()))
                .collect(),
        )
    } else {
        scalar(value)
    };
    Ok((key.to_owned(), value))
}

fn scalar(value: &str) -> Value {
    match value {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    let plain_integer = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if plain_integer {
        if let Ok(n) = value.parse::<i64>() {
            return Value::from(n);
        }
    }
    Value::String(value.to_owned())
}

/// Splits `k=v` (or `k:=json`) as given on the command line; for `cli.rs`.
pub fn parse_claim_arg(arg: &str) -> Result<(String, String), TokenCmdError> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| TokenCmdError::BadClaim(arg.to_owned()))?;
    Ok((key.to_owned(), value.to_owned()))
}

fn random_jti() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{testutil, Authenticator};
    use jsonwebtoken::Algorithm::*;
    use tokio_util::sync::CancellationToken;

    fn pairs(list: &[&str]) -> Vec<(String, String)> {
        list.iter().map(|a| parse_claim_arg(a).unwrap()).collect()
    }

    async fn verify(issuer: &IssuerConfig, token: &str) -> Result<Value, crate::auth::AuthError> {
        let auth = Authenticator::new(std::slice::from_ref(issuer), CancellationToken::new(), None)
            .await
            .unwrap();
        auth.verify(token, None).await.map(|v| v.claims)
    }

    #[tokio::test]
    async fn hs_token_with_claims_verifies() {
        let mut issuer =
            testutil::issuer("main", &[RS256, HS384], KeySource::Secret("s3cret".into()));
        issuer.issuer = Some("https://id.example.com".into());
        issuer.audiences = vec!["chat".into(), "other".into()];
        let claims = pairs(&[
            "roles=a,b",
            "one=x,",
            "n=42",
            "zero=007",
            "ok=true",
            "s:=\"42\"",
            "o:={\"a\":1}",
        ]);
        let token = mint_for(&issuer, "alice", &claims, Duration::from_secs(600), None).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, HS384);
        let c = verify(&issuer, &token).await.unwrap();
        assert_eq!(c["iss"], "https://id.example.com");
        assert_eq!(c["aud"], "chat");
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["roles"], serde_json::json!(["a", "b"]));
        assert_eq!(c["one"], serde_json::json!(["x"]));
        assert_eq!(
            (c["n"].clone(), c["zero"].clone(), c["ok"].clone()),
            (42.into(), "007".into(), true.into())
        );
        assert_eq!(
            (c["s"].clone(), c["o"]["a"].clone()),
            ("42".into(), 1.into())
        );
        let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
        assert_eq!(exp - iat, 600);
        assert_eq!(c["jti"].as_str().unwrap().len(), 32);
    }

    #[tokio::test]
    async fn pem_keys_pick_the_matching_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (testutil::rsa(), PS384),
            (testutil::ec256(), ES256),
            (testutil::ec384(), ES384),
            (testutil::ed25519(), EdDSA),
        ];
        for (i, (keys, alg)) in cases.into_iter().enumerate() {
            let private = dir.path().join(format!("k{i}.pem"));
            let public = dir.path().join(format!("p{i}.pem"));
            std::fs::write(&private, &keys.private_pem).unwrap();
            std::fs::write(&public, &keys.public_pem).unwrap();
            // The issuer lists other families (and the other curve) first.
            let algs = [HS256, ES384, PS384, ES256, EdDSA];
            let issuer = testutil::issuer("pk", &algs, KeySource::PublicKey(public));
            let token =
                mint_for(&issuer, "bob", &[], Duration::from_secs(60), Some(&private)).unwrap();
            assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, alg);
            assert_eq!(verify(&issuer, &token).await.unwrap()["sub"], "bob");
        }
    }

    #[test]
    fn errors() {
        let issuer = testutil::issuer("pk", &[RS256], KeySource::JwksUrl("https://x/jwks".into()));
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint_for(&issuer, "a", &[], ttl, None),
            Err(TokenCmdError::NeedsKey(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let ec = dir.path().join("ec.pem");
        std::fs::write(&ec, &testutil::ec256().private_pem).unwrap();
        assert!(matches!(
            mint_for(&issuer, "a", &[], ttl, Some(&ec)),
            Err(TokenCmdError::NoMatchingAlgorithm { .. })
        ));
        std::fs::write(&ec, "junk").unwrap();
        assert!(matches!(
            mint_for(&issuer, "a", &[], ttl, Some(&ec)),
            Err(TokenCmdError::UnsupportedKey { .. })
        ));
        let hs = testutil::issuer("hs", &[RS256], KeySource::Secret("x".into()));
        assert!(matches!(
            mint_for(&hs, "a", &[], ttl, None),
            Err(TokenCmdError::NoHmacAlgorithm(_))
        ));
        assert!(parse_claim_arg("novalue").is_err());
        assert!(matches!(
            claim_value("k:", "{"),
            Err(TokenCmdError::BadClaimJson { .. })
        ));
    }
}
