//! The claim rules of one issuer, prepared once: a `jsonwebtoken::Validation`
//! per accepted algorithm (the library insists that every algorithm of a
//! `Validation` belongs to the key's family), `iss`, `aud`, `exp`/`nbf` with the
//! issuer's leeway, and the required claims.
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

use super::keys::VerifyKey;
use super::AuthError;
use crate::config::IssuerConfig;

/// The claims `jsonwebtoken` itself knows how to require.
const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "iss", "aud", "sub"];

/// One issuer's prepared rules.
#[derive(Debug)]
pub struct Policy {
    pub id: String,
    pub issuer: Option<String>,
    pub leeway: Duration,
    validations: Vec<(Algorithm, Validation)>,
    /// Required claims outside [`SPEC_CLAIMS`], checked here.
    other_required: Vec<String>,
}

impl Policy {
    pub fn new(cfg: &IssuerConfig) -> Self {
        let mut spec_required: Vec<&str> = cfg
            .required_claims
            .iter()
            .map(String::as_str)
            .filter(|c| SPEC_CLAIMS.contains(c))
            .collect();
        // The library accepts a token *without* iss/aud even when it checks
        // them; a configured issuer or audience means the claim must be there.
        if cfg.issuer.is_some() {
            spec_required.push("iss");
        }
        if !cfg.audiences.is_empty() {
            spec_required.push("aud");
        }
        let other_required = cfg
            .required_claims
            .iter()
            .filter(|c| !SPEC_CLAIMS.contains(&c.as_str()))
            .cloned()
            .collect();
        let validations = cfg
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = cfg.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_required_spec_claims(&spec_required);
                if let Some(iss) = &cfg.issuer {
                    v.set_issuer(&[iss]);
                }
                if cfg.audiences.is_empty() {
                    // Otherwise the library refuses every token that has an `aud`.
                    v.validate_aud = false;
                } else {
                    v.set_audience(&cfg.audiences);
                }
                (alg, v)
            })
            .collect();
        Self {
            id: cfg.id.clone(),
            issuer: cfg.issuer.clone(),
            leeway: cfg.leeway,
            validations,
            other_required,
        }
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.validations.iter().any(|(a, _)| *a == alg)
    }

    /// Checks the signature with `key`, then every claim rule; returns the claims.
    pub fn verify(&self, token: &str, alg: Algorithm, key: &VerifyKey) -> Result<Value, AuthError> {
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
        for name in &self.other_required {
            if data.claims.get(name).is_none_or(Value::is_null) {
                return Err(AuthError::MissingClaim(name.clone()));
            }
        }
        Ok(data.claims)
    }

    /// The `exp`/`nbf` rules alone, with the same arithmetic as the library:
    /// used on verification-cache hits, which must never skip them.
    pub fn check_times(
        &self,
        exp: Option<i64>,
        nbf: Option<i64>,
        now: i64,
    ) -> Result<(), AuthError> {
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        if exp.is_some_and(|exp| exp.saturating_add(leeway) < now) {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
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

/// A NumericDate claim as whole seconds (the library rounds fractions too).
pub fn numeric_date(claims: &Value, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if v.as_u64().is_some() {
        return Some(i64::MAX);
    }
    v.as_f64()
        .filter(|f| f.is_finite())
        .map(|f| f.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64)
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

    #[test]
    fn numeric_dates() {
        let c = serde_json::json!({"a": 5, "b": 5.6, "c": "5", "d": u64::MAX});
        assert_eq!(numeric_date(&c, "a"), Some(5));
        assert_eq!(numeric_date(&c, "b"), Some(6));
        assert_eq!(numeric_date(&c, "c"), None);
        assert_eq!(numeric_date(&c, "d"), Some(i64::MAX));
        assert_eq!(numeric_date(&c, "e"), None);
    }
}
