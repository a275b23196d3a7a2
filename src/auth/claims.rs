//! What a token's claims must satisfy, defined once.
//!
//! The signature proves who wrote the claims; [`ClaimRules::check`] decides
//! whether they are acceptable now: `exp`, `nbf`, `iat` (with the issuer's
//! leeway), `iss`, `aud`, the type of `sub`, and the required claims. The
//! same function judges a freshly verified token, a verification-cache hit
//! and a live session's token after a reload, so those can never disagree.
//! `jsonwebtoken` is used for the signature alone (see [`super::jwt`]).
//!
//! Also [`lookup_claim`], the one way rules, header templates and
//! revocations find a claim by its dotted path.

use std::time::Duration;

use serde_json::Value;

use super::AuthError;
use crate::config::IssuerConfig;

/// A verified token's claims as compact JSON text. A session holds its
/// token for its whole life, and the parsed map costs several times the
/// text (a B-tree node per object, a heap string per key and value: about
/// 0.8 KiB for an ordinary token against ~0.2 KiB of text). The claims are
/// parsed where they are read: at admission (once, for the rules and the
/// identity headers), by a reload's re-check, by a revocation by claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims(Box<str>);

impl Claims {
    pub fn new(value: &Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }

    /// The parsed claims. The text was written by [`Claims::new`] from a
    /// parsed value, so it parses back; `Null` (no claims) if it ever did not.
    pub fn parse(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// Claims that [`ClaimRules::check`] validates itself when present.
const TIME_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

/// One issuer's claim rules.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    /// When set, `iss` must be this string.
    pub issuer: Option<String>,
    /// When non-empty, `aud` must name one of these.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    /// Present and not `null`.
    pub required: Vec<String>,
}

impl ClaimRules {
    pub fn new(cfg: &IssuerConfig) -> Self {
        let mut required = cfg.required_claims.clone();
        // A configured issuer or audience means the claim must be there:
        // a token without `aud` is not "for any audience".
        for (configured, name) in [
            (cfg.issuer.is_some(), "iss"),
            (!cfg.audiences.is_empty(), "aud"),
        ] {
            if configured && !required.iter().any(|r| r == name) {
                required.push(name.to_owned());
            }
        }
        Self {
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            leeway: cfg.leeway,
            required,
        }
    }

    /// Checks every rule at unix time `now`. The order decides which error a
    /// token with several faults reports: shape, then presence, then time,
    /// then who it is from and for.
    pub fn check(&self, claims: &Value, now: i64) -> Result<(), AuthError> {
        let object = claims.as_object().ok_or(AuthError::Malformed)?;
        let mut times = [None; 3];
        for (slot, name) in times.iter_mut().zip(TIME_CLAIMS) {
            *slot = match object.get(name) {
                None => None,
                Some(v) => Some(numeric_date(v).ok_or(AuthError::Malformed)?),
            };
        }
        let [exp, nbf, iat] = times;
        if let Some(sub) = object.get("sub") {
            subject_text(sub).ok_or(AuthError::Malformed)?;
        }
        if let Some(missing) = self
            .required
            .iter()
            .find(|name| object.get(name.as_str()).is_none_or(Value::is_null))
        {
            return Err(AuthError::MissingClaim(missing.clone()));
        }
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        if exp.is_some_and(|exp| exp.saturating_add(leeway) < now) {
            return Err(AuthError::Expired);
        }
        // A token issued in the future would outlive every revocation by
        // subject made before that moment (they cover tokens issued before).
        let not_yet = |t: Option<i64>| t.is_some_and(|t| t > now.saturating_add(leeway));
        if not_yet(nbf) || not_yet(iat) {
            return Err(AuthError::NotYetValid);
        }
        if let Some(want) = &self.issuer {
            if object.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        if !self.audiences.is_empty() {
            let ok = match object.get("aud") {
                Some(Value::String(a)) => self.audiences.contains(a),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|w| w == a)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number, fractions rounded, clamped
/// to `i64`. Anything else (a string, `null`) is not a date.
pub fn numeric_date(v: &Value) -> Option<i64> {
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

/// The text of a `sub`: a string as it is, an integer as its decimal string
/// (so `12345` and `"12345"` are one subject everywhere: headers,
/// revocation, limits, refresh). Any other type has no text.
pub fn subject_text(sub: &Value) -> Option<String> {
    match sub {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Bounds the work of one lookup: a dotted path can be split many ways.
const LOOKUP_BUDGET: u32 = 64;

/// Finds a claim by dotted path (`realm_access.roles`). A key that itself
/// contains dots is found too: at each level the longest key matching a
/// prefix of the path is tried first. `None` when absent; a present `null`
/// is returned as such.
pub fn lookup_claim<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    let mut budget = LOOKUP_BUDGET;
    lookup_in(claims, path, &mut budget)
}

fn lookup_in<'v>(value: &'v Value, path: &str, budget: &mut u32) -> Option<&'v Value> {
    let object = value.as_object()?;
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    if let Some(found) = object.get(path) {
        return Some(found);
    }
    for (dot, _) in path.rmatch_indices('.') {
        if let Some(child) = object.get(&path[..dot]) {
            if let Some(found) = lookup_in(child, &path[dot + 1..], budget) {
                return Some(found);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: Some("https://id".into()),
            audiences: vec!["chat".into()],
            leeway: Duration::from_secs(60),
            required: vec!["exp".into(), "iss".into(), "aud".into()],
        }
    }

    const NOW: i64 = 1_000_000;

    fn good() -> Value {
        json!({"iss": "https://id", "aud": ["x", "chat"], "exp": NOW + 10, "sub": "u"})
    }

    fn with(k: &str, v: Value) -> Value {
        let mut c = good();
        c[k] = v;
        c
    }

    #[test]
    fn a_good_token_passes() {
        assert_eq!(rules().check(&good(), NOW), Ok(()));
        assert_eq!(rules().check(&with("sub", json!(12345)), NOW), Ok(()));
        assert_eq!(rules().check(&with("aud", json!("chat")), NOW), Ok(()));
    }

    #[test]
    fn time_claims_with_leeway() {
        let r = rules();
        assert_eq!(r.check(&with("exp", json!(NOW - 59)), NOW), Ok(()));
        assert_eq!(
            r.check(&with("exp", json!(NOW - 61)), NOW),
            Err(AuthError::Expired)
        );
        assert_eq!(r.check(&with("nbf", json!(NOW + 60)), NOW), Ok(()));
        assert_eq!(
            r.check(&with("nbf", json!(NOW + 61)), NOW),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(r.check(&with("iat", json!(NOW + 60)), NOW), Ok(()));
        assert_eq!(
            r.check(&with("iat", json!(NOW + 3600)), NOW),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            r.check(&with("exp", json!("soon")), NOW),
            Err(AuthError::Malformed)
        );
        assert_eq!(r.check(&with("exp", json!(NOW as f64 + 0.4)), NOW), Ok(()));
    }

    #[test]
    fn subject_must_be_a_string_or_an_integer() {
        for bad in [
            json!(1.5),
            json!(true),
            json!(null),
            json!(["a"]),
            json!({}),
        ] {
            assert_eq!(
                rules().check(&with("sub", bad.clone()), NOW),
                Err(AuthError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(subject_text(&json!(12345)).as_deref(), Some("12345"));
        assert_eq!(subject_text(&json!("12345")).as_deref(), Some("12345"));
        assert_eq!(subject_text(&json!(-7)).as_deref(), Some("-7"));
        assert_eq!(subject_text(&json!(1.0)), None);
    }

    #[test]
    fn issuer_audience_and_presence() {
        let r = rules();
        assert_eq!(
            r.check(&with("iss", json!("https://other")), NOW),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            r.check(&with("aud", json!(["x"])), NOW),
            Err(AuthError::WrongAudience)
        );
        let mut c = good();
        c.as_object_mut().map(|o| o.remove("aud"));
        assert_eq!(r.check(&c, NOW), Err(AuthError::MissingClaim("aud".into())));
        assert_eq!(
            r.check(&with("exp", json!(null)), NOW),
            Err(AuthError::Malformed)
        );
        assert_eq!(r.check(&json!("x"), NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn lookup_by_dotted_path() {
        let c = json!({"a.b": "whole", "a": {"b": {"c": 2}}, "roles": ["x"]});
        assert_eq!(lookup_claim(&c, "a.b"), Some(&json!("whole")));
        assert_eq!(lookup_claim(&c, "a.b.c"), Some(&json!(2)));
        assert_eq!(lookup_claim(&c, "roles.0"), None);
    }
}
