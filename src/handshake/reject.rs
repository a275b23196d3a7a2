//! Every way a handshake can be refused, and what the client sees for each:
//! the CONTRACT's handshake table as one exhaustive mapping.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::Outcome;
use crate::proxy::upstream::UpstreamError;

pub type Body = Full<Bytes>;

#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("no route matches")]
    NotFound,
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    #[error("malformed WebSocket upgrade: {0}")]
    BadUpgrade(&'static str),
    #[error("unsupported WebSocket version")]
    BadVersion,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("plain HTTP request on a WebSocket route")]
    NotWebSocket,
    #[error("missing token")]
    MissingToken,
    /// The description is a fixed phrase (never token content).
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("per-subject session limit reached")]
    SubjectLimit,
    #[error("global session limit reached")]
    GlobalLimit,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::BadPath(_) | Reject::BadUpgrade(_) | Reject::BadVersion => {
                StatusCode::BAD_REQUEST
            }
            Reject::NotWebSocket => StatusCode::UPGRADE_REQUIRED,
            Reject::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::MissingToken | Reject::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Reject::Forbidden(_) | Reject::OriginNotAllowed => StatusCode::FORBIDDEN,
            Reject::SubjectLimit => StatusCode::TOO_MANY_REQUESTS,
            Reject::GlobalLimit => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Upstream(e) => e.status(),
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Reject::NotFound => Outcome::not_found,
            Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadVersion
            | Reject::NotWebSocket
            | Reject::HeadTooLarge => Outcome::bad_request,
            Reject::MissingToken | Reject::InvalidToken(_) => Outcome::unauthorized,
            Reject::Forbidden(_) | Reject::OriginNotAllowed => Outcome::forbidden,
            Reject::SubjectLimit | Reject::GlobalLimit => Outcome::rate_limited,
            Reject::Upstream(_) => Outcome::upstream_error,
        }
    }

    /// With `reject: close`, the close code and reason that replace a 401/403.
    /// `None` for refusals that stay HTTP statuses in that mode too.
    pub fn close_instead(&self) -> Option<(u16, String)> {
        match self {
            Reject::MissingToken => Some((4401, "missing token".to_owned())),
            Reject::InvalidToken(d) => Some((4401, (*d).to_owned())),
            Reject::Forbidden(d) => Some((4403, (*d).to_owned())),
            Reject::OriginNotAllowed => Some((4403, "origin not allowed".to_owned())),
            Reject::NotFound
            | Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadVersion
            | Reject::NotWebSocket
            | Reject::HeadTooLarge
            | Reject::SubjectLimit
            | Reject::GlobalLimit
            | Reject::Upstream(_) => None,
        }
    }

    /// The HTTP answer. Bodies are short fixed texts: internals stay in the log.
    pub fn response(&self) -> Response<Body> {
        let status = self.status();
        let text = match self {
            Reject::Upstream(UpstreamError::Status { .. }) => "upstream refused the handshake",
            Reject::Upstream(UpstreamError::Timeout { .. }) => "upstream timed out",
            Reject::Upstream(_) => "upstream unavailable",
            Reject::InvalidToken(d) | Reject::Forbidden(d) => d,
            _ => status.canonical_reason().unwrap_or(""),
        };
        let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // A refused request may carry a body or smuggled bytes behind it;
        // closing the connection guarantees none of it is read as a request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        match self {
            Reject::MissingToken => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wsgate\""),
                );
            }
            Reject::InvalidToken(d) => {
                let v = format!("Bearer error=\"invalid_token\", error_description=\"{d}\"");
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Reject::NotWebSocket => {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(
                    header::CONNECTION,
                    HeaderValue::from_static("Upgrade, close"),
                );
            }
            Reject::BadVersion => {
                h.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per row of the CONTRACT's handshake table.
    #[test]
    fn contract_handshake_table() {
        let rows: Vec<(Reject, u16, Outcome)> = vec![
            (Reject::NotFound, 404, Outcome::not_found),
            (Reject::BadPath("dot segment"), 400, Outcome::bad_request),
            (Reject::BadUpgrade("missing key"), 400, Outcome::bad_request),
            (Reject::NotWebSocket, 426, Outcome::bad_request),
            (Reject::HeadTooLarge, 431, Outcome::bad_request),
            (Reject::MissingToken, 401, Outcome::unauthorized),
            (
                Reject::InvalidToken("token expired"),
                401,
                Outcome::unauthorized,
            ),
            (Reject::Forbidden("forbidden"), 403, Outcome::forbidden),
            (Reject::OriginNotAllowed, 403, Outcome::forbidden),
            (Reject::SubjectLimit, 429, Outcome::rate_limited),
            (Reject::GlobalLimit, 503, Outcome::rate_limited),
            (
                Reject::Upstream(UpstreamError::Refused { url: "u".into() }),
                502,
                Outcome::upstream_error,
            ),
            (
                Reject::Upstream(UpstreamError::Timeout { url: "u".into() }),
                504,
                Outcome::upstream_error,
            ),
            (
                Reject::Upstream(UpstreamError::Status {
                    url: "u".into(),
                    status: StatusCode::FORBIDDEN,
                }),
                403,
                Outcome::upstream_error,
            ),
        ];
        for (reject, status, outcome) in rows {
            assert_eq!(reject.response().status().as_u16(), status, "{reject:?}");
            assert_eq!(reject.outcome(), outcome, "{reject:?}");
        }
    }

    #[test]
    fn www_authenticate_forms() {
        let r = Reject::MissingToken.response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"wsgate\""
        );
        let r = Reject::InvalidToken("token expired").response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );
    }
}
