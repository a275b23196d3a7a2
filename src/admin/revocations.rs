//! `POST /admin/revocations`, `GET /admin/revocations` and `POST /admin/reload`.
//!
//! A revocation request names exactly one selector: `{"jti"}`,
//! `{"sub", "iss"?}` or `{"claim", "value"}`. Anything else (bad JSON, an
//! unknown field, an empty or mixed selector) is a 400 with a message saying
//! what to send instead, so an operator's typo never silently revokes
//! nothing. Errors are JSON `{"error": "..."}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json, Body};
use crate::gateway::Gateway;
use crate::revocation::{RevokeError, Selector};

/// The request body as sent; [`selector`] decides what it means.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: Option<String>,
    sub: Option<String>,
    iss: Option<String>,
    claim: Option<String>,
    value: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("expected one of {{\"jti\": ...}}, {{\"sub\": ..., \"iss\": ...}} (iss optional) or {{\"claim\": ..., \"value\": ...}}")]
    NoSelector,
    #[error("give only one selector: jti, sub (with optional iss), or claim with value")]
    Mixed,
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`iss` is only used with `sub`")]
    IssWithoutSub,
    #[error("`claim` needs a `value` and `value` needs a `claim`")]
    ClaimWithoutValue,
    #[error("`value` must be a string, number or boolean")]
    BadValue,
}

fn non_empty(field: &'static str, s: String) -> Result<String, RequestError> {
    if s.trim().is_empty() {
        Err(RequestError::Empty(field))
    } else {
        Ok(s)
    }
}

/// Parses and checks a request body into the selector it names.
pub fn selector(body: &[u8]) -> Result<Selector, RequestError> {
    let req: RevokeRequest =
        serde_json::from_slice(body).map_err(|e| RequestError::Json(e.to_string()))?;
    let kinds = req.jti.is_some() as u8 + req.sub.is_some() as u8 + req.claim.is_some() as u8;
    if kinds > 1 {
        return Err(RequestError::Mixed);
    }
    if let Some(jti) = req.jti {
        if req.iss.is_some() {
            return Err(RequestError::IssWithoutSub);
        }
        if req.value.is_some() {
            return Err(RequestError::ClaimWithoutValue);
        }
        return Ok(Selector::Jti {
            jti: non_empty("jti", jti)?,
        });
    }
    if let Some(sub) = req.sub {
        if req.value.is_some() {
            return Err(RequestError::ClaimWithoutValue);
        }
        let iss = req.iss.map(|i| non_empty("iss", i)).transpose()?;
        return Ok(Selector::Subject {
            sub: non_empty("sub", sub)?,
            iss,
        });
    }
    if req.iss.is_some() {
        return Err(RequestError::IssWithoutSub);
    }
    match (req.claim, req.value) {
        (Some(claim), Some(value)) => {
            let value = match value {
                Value::String(s) => non_empty("value", s)?,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(RequestError::BadValue),
            };
            Ok(Selector::Claim {
                claim: non_empty("claim", claim)?,
                value,
            })
        }
        (None, None) => Err(RequestError::NoSelector),
        _ => Err(RequestError::ClaimWithoutValue),
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &json!({ "error": message }))
}

/// The largest clock-skew allowance of any issuer: revocations are kept at
/// least that long past the longest lifetime they can cover.
fn max_leeway(gw: &Gateway) -> Duration {
    gw.snapshot
        .load()
        .config
        .issuers
        .iter()
        .map(|i| i.leeway)
        .max()
        .unwrap_or_default()
}

pub async fn create(gw: &Arc<Gateway>, body: Bytes) -> Response<Body> {
    let selector = match selector(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // On a cluster, the other nodes report what they closed; the live
    // nodes are read before the entry goes out, so none is waited for
    // that could not have seen it.
    let ask = match &gw.cluster {
        Some(c) => Some(c.ask().await),
        None => None,
    };
    let tag = ask.as_ref().map(|a| a.tag.clone());
    match gw
        .revoker
        .revoke(
            selector,
            max_leeway(gw),
            gw.snapshot.load().config.revocation_retain,
            tag,
        )
        .await
    {
        Ok(here) => {
            let elsewhere = match (&gw.cluster, ask) {
                (Some(c), Some(ask)) => c.closed_elsewhere(ask).await,
                _ => 0,
            };
            json(StatusCode::CREATED, &json!({ "closed": here + elsewhere }))
        }
        Err(e @ RevokeError::NotStored { closed, .. }) => {
            tracing::error!(error = %e, "revocation not stored");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": e.to_string(), "closed": closed, "stored": false }),
            )
        }
    }
}

pub fn list(gw: &Gateway) -> Response<Body> {
    let mut entries = gw.revocations().entries();
    entries.sort_by_key(|r| (r.revoked_at, r.keep_until));
    match serde_json::to_value(&entries) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub async fn reload(gw: &Arc<Gateway>) -> Response<Body> {
    match crate::reload::reload(gw).await {
        Ok(summary) => {
            tracing::info!(%summary, "config reloaded (admin API)");
            json(
                StatusCode::OK,
                &json!({ "reloaded": true, "summary": summary }),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "reload refused; the previous config stays in force");
            error(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            selector(br#"{"jti":"abc"}"#),
            Ok(Selector::Jti { jti: "abc".into() })
        );
        assert_eq!(
            selector(br#"{"sub":"alice","iss":"https://i"}"#),
            Ok(Selector::Subject {
                sub: "alice".into(),
                iss: Some("https://i".into())
            })
        );
        assert_eq!(
            selector(br#"{"sub":"alice"}"#),
            Ok(Selector::Subject {
                sub: "alice".into(),
                iss: None
            })
        );
        assert_eq!(
            selector(br#"{"claim":"sid","value":42}"#),
            Ok(Selector::Claim {
                claim: "sid".into(),
                value: "42".into()
            })
        );
    }

    #[test]
    fn bad_requests() {
        let cases: [(&[u8], RequestError); 9] = [
            (b"{}", RequestError::NoSelector),
            (br#"{"jti":""}"#, RequestError::Empty("jti")),
            (br#"{"sub":"  "}"#, RequestError::Empty("sub")),
            (br#"{"jti":"a","sub":"b"}"#, RequestError::Mixed),
            (br#"{"iss":"x"}"#, RequestError::IssWithoutSub),
            (br#"{"claim":"sid"}"#, RequestError::ClaimWithoutValue),
            (br#"{"value":"x"}"#, RequestError::ClaimWithoutValue),
            (br#"{"claim":"sid","value":[1]}"#, RequestError::BadValue),
            (
                br#"{"claim":"sid","value":""}"#,
                RequestError::Empty("value"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                selector(body),
                Err(want),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            selector(br#"{"jti":"a","extra":1}"#),
            Err(RequestError::Json(m)) if m.contains("unknown field")
        ));
        assert!(matches!(selector(b"not json"), Err(RequestError::Json(_))));
    }
}
