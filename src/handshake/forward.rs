//! The request the upstream receives, built from an admitted handshake: the
//! client's path and query with every token carrier stripped, the client's
//! other headers, the identity headers rendered by admission, and the
//! forwarding headers.
//!
//! # Header names an upstream reads differently
//!
//! CGI, WSGI (Python), PHP, Django, Flask, gunicorn and nginx with
//! `underscores_in_headers on` map both `-` and `_` to `_`: a client's
//! `X_User_Id` becomes the same variable as the gateway's `X-User-Id`, and
//! the upstream reads both joined, or whichever came last. So every name the
//! gateway sets or vouches for is compared ignoring case and reading `_` as
//! `-`, and a client header that matches is dropped. Hop-by-hop headers named
//! in `Connection` (RFC 9110 §7.6.1) are dropped too.

use http::request::Parts;
use http::{header, HeaderName, HeaderValue};

use super::ConnInfo;
use crate::auth::sources::{self, Found};
use crate::config::{TokenForward, TokenSource};
use crate::route::Params;
use crate::snapshot::Route;
use crate::upstream::UpstreamRequest;

/// Headers never copied from the client, in canonical form (lower case, `-`):
/// hop-by-hop and handshake headers (the gateway makes its own), and
/// forwarding headers (the gateway sets them; a client must not be able to
/// claim an address or identity).
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
];

/// Whether the route lets `permessage-deflate` through end to end: only
/// where the gateway never reads a message (no `first_message`, no
/// refresh), since it does not inflate compressed frames.
pub fn passes_compression(route: &Route) -> bool {
    !route.cfg.session.refresh && route.first_message().is_none()
}

/// Whether two header names are one variable to an upstream that folds case
/// and reads `_` as `-`.
pub fn same_header(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(x) == fold(y)
        })
}

/// The header names listed in the request's `Connection` headers.
fn connection_options(parts: &Parts) -> Vec<String> {
    parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// What the upstream request is built from, besides the client's request.
pub struct Forward<'a> {
    pub route: &'a Route,
    pub params: &'a Params,
    pub conn: &'a ConnInfo,
    /// The authority the route was chosen by: the upstream is told this one
    /// (`X-Forwarded-Host`), whichever header or target form carried it.
    pub authority: Option<&'a str>,
    /// The token admission verified, and where it was found.
    pub found: Option<&'a Found>,
    pub app_protocols: Vec<String>,
    /// The `forward.headers` admission rendered from the claims.
    pub identity: Vec<(HeaderName, HeaderValue)>,
    /// The verified token's claims (`Null` without one), for a hash key on
    /// a claim.
    pub claims: &'a serde_json::Value,
}

/// Builds the upstream request.
pub fn upstream_request(f: Forward<'_>, parts: &mut Parts) -> UpstreamRequest {
    let Forward {
        route,
        params,
        conn,
        authority,
        found,
        app_protocols,
        identity,
        claims,
    } = f;
    // Taken before the carriers are stripped: the key may share a cookie or
    // query with them.
    let affinity =
        crate::affinity::affinity(route.upstreams.balance(), parts, conn.remote.ip(), claims);
    let keep = match route.cfg.forward.token {
        TokenForward::Strip => None,
        TokenForward::Keep => found,
    };
    sources::strip_carriers(parts, &route.token_sources, keep);
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let path = match &route.upstream_path {
        Some(t) => t.render_path(params),
        None => parts.uri.path().to_owned(),
    };
    let subprotocols = match keep {
        // `keep` forwards the verified pair in front of the application protocols.
        Some(Found {
            source: TokenSource::Subprotocol,
            token,
        }) => ["bearer".to_owned(), token.clone()]
            .into_iter()
            .chain(app_protocols)
            .collect(),
        _ => app_protocols,
    };

    let extensions = if passes_compression(route) {
        crate::extensions::deflate_offers(&parts.headers)
    } else {
        None
    };
    let hop_by_hop = connection_options(parts);
    let mut headers: Vec<(HeaderName, HeaderValue)> =
        Vec::with_capacity(parts.headers.len() + identity.len() + 3);
    for (name, value) in parts.headers.iter() {
        let n = name.as_str();
        let dropped = NOT_FORWARDED.iter().any(|x| same_header(x, n))
            || identity.iter().any(|(f, _)| same_header(f.as_str(), n))
            || hop_by_hop.iter().any(|h| same_header(h, n));
        if !dropped {
            headers.push((name.clone(), value.clone()));
        }
    }
    headers.extend(identity);
    let forwarded_for = match &conn.forwarded_for {
        Some(chain) => HeaderValue::from_str(chain),
        None => HeaderValue::from_str(&conn.remote.ip().to_string()),
    };
    if let Ok(v) = forwarded_for {
        headers.push((HeaderName::from_static("x-forwarded-for"), v));
    }
    headers.push((
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    ));
    if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.push((HeaderName::from_static("x-forwarded-host"), v));
    }
    UpstreamRequest {
        path_and_query: format!("{path}{query}"),
        subprotocols,
        extensions,
        headers,
        affinity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_an_upstream_folds_them() {
        assert!(same_header("x-user-id", "X_User_Id"));
        assert!(same_header("x-real-ip", "X_REAL_IP"));
        assert!(!same_header("x-user-id", "x-user-idx"));
        assert!(!same_header("x-user", "x-usr-"));
    }
}
