//! Every way an admission can be refused, and what the client sees for each:
//! the contract's handshake table and its close codes as one exhaustive
//! mapping. A refusal before the 101 is a status ([`Reject::response`]);
//! after it (`first_message`, `reject: close`) it is a close frame
//! ([`Reject::close_frame`]). Both come from here and nowhere else.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::auth::AuthError;
use crate::metrics::Outcome;
use crate::upstream::UpstreamError;

pub type Body = Full<Bytes>;

#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("no route matches")]
    NotFound,
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    #[error("malformed WebSocket upgrade: {0}")]
    BadUpgrade(&'static str),
    /// The request's authority (`Host`, absolute-form target) is ambiguous.
    #[error("bad request: {0}")]
    BadHost(&'static str),
    #[error("unsupported WebSocket version")]
    BadVersion,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("plain HTTP request on a WebSocket route")]
    NotWebSocket,
    /// A plain request whose framing or body is malformed (`http: proxy`).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("missing token")]
    MissingToken,
    /// `Display` is a fixed phrase (never token content).
    #[error("invalid token: {0}")]
    InvalidToken(AuthError),
    #[error("token revoked")]
    Revoked,
    /// A `first_message` that carries no readable token.
    #[error("{0}")]
    BadAuthMessage(&'static str),
    /// No `first_message` within `auth_timeout`.
    #[error("authentication timeout")]
    AuthTimeout,
    #[error("gateway shutting down")]
    ShuttingDown,
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
            Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadHost(_)
            | Reject::BadRequest(_)
            | Reject::BadVersion => StatusCode::BAD_REQUEST,
            Reject::NotWebSocket => StatusCode::UPGRADE_REQUIRED,
            Reject::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::MissingToken
            | Reject::InvalidToken(_)
            | Reject::Revoked
            | Reject::BadAuthMessage(_) => StatusCode::UNAUTHORIZED,
            Reject::AuthTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::Forbidden(_) | Reject::OriginNotAllowed => StatusCode::FORBIDDEN,
            Reject::SubjectLimit => StatusCode::TOO_MANY_REQUESTS,
            Reject::GlobalLimit | Reject::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Upstream(e) => e.status(),
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Reject::NotFound => Outcome::not_found,
            Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadHost(_)
            | Reject::BadRequest(_)
            | Reject::BadVersion
            | Reject::NotWebSocket
            | Reject::HeadTooLarge => Outcome::bad_request,
            Reject::MissingToken
            | Reject::InvalidToken(_)
            | Reject::Revoked
            | Reject::BadAuthMessage(_)
            | Reject::AuthTimeout => Outcome::unauthorized,
            Reject::Forbidden(_) | Reject::OriginNotAllowed => Outcome::forbidden,
            Reject::SubjectLimit | Reject::GlobalLimit | Reject::ShuttingDown => {
                Outcome::rate_limited
            }
            Reject::Upstream(_) => Outcome::upstream_error,
        }
    }

    /// The short, fixed text a client is told (status body, close reason,
    /// `error_description`): never token content, never internals.
    pub fn description(&self) -> &'static str {
        match self {
            Reject::MissingToken => "missing token",
            Reject::InvalidToken(e) => e.description(),
            Reject::Revoked => "token revoked",
            Reject::BadAuthMessage(d)
            | Reject::Forbidden(d)
            | Reject::BadHost(d)
            | Reject::BadRequest(d) => d,
            Reject::AuthTimeout => "authentication timeout",
            Reject::OriginNotAllowed => "origin not allowed",
            Reject::SubjectLimit => "per-subject session limit reached",
            Reject::GlobalLimit => "session limit reached",
            Reject::ShuttingDown => "gateway shutting down",
            Reject::Upstream(UpstreamError::Status { .. }) => "upstream refused the handshake",
            Reject::Upstream(UpstreamError::Timeout { .. }) => "upstream timed out",
            Reject::Upstream(_) => "upstream unavailable",
            Reject::NotFound
            | Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadVersion
            | Reject::HeadTooLarge
            | Reject::NotWebSocket => self.status().canonical_reason().unwrap_or(""),
        }
    }

    /// Whether `reject: close` answers this refusal with a close instead of
    /// its status: the 401 and 403 rows of the contract.
    pub fn closes_in_reject_mode(&self) -> bool {
        match self {
            Reject::MissingToken
            | Reject::InvalidToken(_)
            | Reject::Revoked
            | Reject::BadAuthMessage(_)
            | Reject::Forbidden(_)
            | Reject::OriginNotAllowed => true,
            Reject::NotFound
            | Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadHost(_)
            | Reject::BadRequest(_)
            | Reject::BadVersion
            | Reject::HeadTooLarge
            | Reject::NotWebSocket
            | Reject::AuthTimeout
            | Reject::SubjectLimit
            | Reject::GlobalLimit
            | Reject::ShuttingDown
            | Reject::Upstream(_) => false,
        }
    }

    /// The close code that carries this refusal once the client has its
    /// 101 (`first_message`, `reject: close`); the reason is
    /// [`Self::description`].
    pub fn close_code(&self) -> u16 {
        match self {
            Reject::MissingToken
            | Reject::InvalidToken(_)
            | Reject::Revoked
            | Reject::BadAuthMessage(_) => 4401,
            Reject::Forbidden(_) | Reject::OriginNotAllowed => 4403,
            Reject::AuthTimeout => 4408,
            // "Try again later" (RFC 6455 §7.4.1 registry).
            Reject::SubjectLimit | Reject::GlobalLimit => 1013,
            Reject::ShuttingDown => 1001,
            // The upstream could not be reached: the close code for a bad gateway.
            Reject::Upstream(_) => 1014,
            // Decided before any 101; a policy violation if it ever were not.
            Reject::NotFound
            | Reject::BadPath(_)
            | Reject::BadUpgrade(_)
            | Reject::BadHost(_)
            | Reject::BadRequest(_)
            | Reject::BadVersion
            | Reject::HeadTooLarge
            | Reject::NotWebSocket => 1008,
        }
    }

    /// The HTTP answer. Bodies are short fixed texts: internals stay in the log.
    pub fn response(&self) -> Response<Body> {
        let status = self.status();
        let text = self.description();
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
            Reject::InvalidToken(_) | Reject::Revoked | Reject::BadAuthMessage(_) => {
                let d = self.description();
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
            (
                Reject::BadHost("missing Host header"),
                400,
                Outcome::bad_request,
            ),
            (Reject::NotWebSocket, 426, Outcome::bad_request),
            (
                Reject::BadRequest("malformed request body"),
                400,
                Outcome::bad_request,
            ),
            (Reject::HeadTooLarge, 431, Outcome::bad_request),
            (Reject::MissingToken, 401, Outcome::unauthorized),
            (
                Reject::InvalidToken(AuthError::Expired),
                401,
                Outcome::unauthorized,
            ),
            (Reject::Revoked, 401, Outcome::unauthorized),
            (Reject::ShuttingDown, 503, Outcome::rate_limited),
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
        let r = Reject::InvalidToken(AuthError::Expired).response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );
    }
}
