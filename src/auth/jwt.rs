//! The rules of one issuer, prepared once: a signature-only
//! `jsonwebtoken::Validation` per accepted algorithm (the library insists that
//! every algorithm of a `Validation` belongs to the key's family), and the
//! issuer's [`ClaimRules`].
//!
//! Also the cheap, *unverified* peeks at a token's header and payload used to
//! choose an issuer and a key. Nothing read by a peek is trusted: the header's
//! `jku`, `x5u`, `x5c` and `jwk` are never looked at, and `crit` (extensions
//! this gateway does not understand) makes the token malformed.

use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::claims::ClaimRules;
use super::keys::VerifyKey;
use super::AuthError;
use crate::config::IssuerConfig;

/// One issuer's prepared rules.
#[derive(Debug)]
pub struct Policy {
    pub id: String,
    pub issuer: Option<String>,
    pub leeway: Duration,
    /// Signature checks only, one per accepted algorithm (the library
    /// insists that every algorithm of a `Validation` fits the key's family).
    validations: Vec<(Algorithm, Validation)>,
    /// Everything about the claims: the one definition in [`super::claims`].
    pub rules: ClaimRules,
}

impl Policy {
    pub fn new(cfg: &IssuerConfig) -> Self {
        let validations = cfg
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                // The claims are judged by `ClaimRules`, which also judges
                // cache hits and live sessions after a reload: the library
                // checking them too would be a second definition.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.validate_aud = false;
                v.required_spec_claims.clear();
                v.leeway = 0;
                (alg, v)
            })
            .collect();
        Self {
            id: cfg.id.clone(),
            issuer: cfg.issuer.clone(),
            leeway: cfg.leeway,
            validations,
            rules: ClaimRules::new(cfg),
        }
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.validations.iter().any(|(a, _)| *a == alg)
    }

    /// Checks the signature with `key`, then every claim rule at `now`;
    /// returns the claims.
    pub fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        key: &VerifyKey,
        now: i64,
    ) -> Result<Value, AuthError> {
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(AuthError::AlgNotAllowed)?;
        // Belt and braces: the key set already filters on kind.
        if !key.accepts(alg) {
            return Err(AuthError::AlgNotAllowed);
        }
        let data = jsonwebtoken::decode::<Value>(token, &key.key, validation)
            .map_err(|e| map_error(e.into_kind()))?;
        self.rules.check(&data.claims, now)?;
        Ok(data.claims)
    }
}

fn map_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        // The key could not be used with this alg (wrong curve, short RSA key).
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(name) => AuthError::MissingClaim(name),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::AlgNotAllowed,
        // `ErrorKind` is non-exhaustive: anything else is a token we cannot read.
        _ => AuthError::Malformed,
    }
}

/// The parts of the header used before verification.
#[derive(Debug)]
pub struct HeaderPeek {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// A compact JWS: three non-empty base64url parts. Checked before any decoding.
pub fn looks_like_jws(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

fn decode_part(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)
}

/// Reads `alg` and `kid`. `alg: none` and unknown algorithms are refused here.
pub fn peek_header(token: &str) -> Result<HeaderPeek, AuthError> {
    #[derive(Deserialize)]
    struct Raw {
        alg: String,
        kid: Option<String>,
        crit: Option<Value>,
    }
    let part = token.split('.').next().ok_or(AuthError::Malformed)?;
    let raw: Raw = serde_json::from_slice(&decode_part(part)?).map_err(|_| AuthError::Malformed)?;
    if raw.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    let alg = Algorithm::from_str(&raw.alg).map_err(|_| AuthError::AlgNotAllowed)?;
    Ok(HeaderPeek { alg, kid: raw.kid })
}

/// The unverified `iss`, to choose among issuers. `None` when absent or not a string.
pub fn peek_iss(token: &str) -> Result<Option<String>, AuthError> {
    #[derive(Deserialize)]
    struct Raw {
        iss: Option<Value>,
    }
    let part = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
    let raw: Raw = serde_json::from_slice(&decode_part(part)?).map_err(|_| AuthError::Malformed)?;
    Ok(match raw.iss {
        Some(Value::String(s)) => Some(s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn shape() {
        assert!(looks_like_jws("a.b.c"));
        assert!(!looks_like_jws("a.b"));
        assert!(!looks_like_jws("a..c"));
        assert!(!looks_like_jws("a.b.c.d"));
        assert!(!looks_like_jws("a.b+.c"));
    }

    #[test]
    fn none_alg_and_crit_refused() {
        let t = format!("{}.{}.sig", enc(r#"{"alg":"none"}"#), enc("{}"));
        assert_eq!(peek_header(&t).unwrap_err(), AuthError::AlgNotAllowed);
        let t = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"HS256","crit":["b64"]}"#),
            enc("{}")
        );
        assert_eq!(peek_header(&t).unwrap_err(), AuthError::Malformed);
        let t = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"ES256","kid":"k1","jku":"https://evil"}"#),
            enc("{}")
        );
        let h = peek_header(&t).unwrap();
        assert_eq!((h.alg, h.kid.as_deref()), (Algorithm::ES256, Some("k1")));
    }

    #[test]
    fn iss_peek() {
        let t = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"HS256"}"#),
            enc(r#"{"iss":"a"}"#)
        );
        assert_eq!(peek_iss(&t).unwrap().as_deref(), Some("a"));
        let t = format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), enc(r#"{"iss":5}"#));
        assert_eq!(peek_iss(&t).unwrap(), None);
        let t = format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), "bm90IGpzb24");
        assert_eq!(peek_iss(&t).unwrap_err(), AuthError::Malformed);
    }
}
