//! RFC 6455 checks on the client's upgrade request, one named reason each,
//! and the accept key. Requests that smuggle a body (`Content-Length`,
//! `Transfer-Encoding`) or repeat `Sec-WebSocket-Key` are refused: behind a
//! proxy, any ambiguity about where a request ends is an attack surface.

use base64::Engine;
use http::{header, HeaderMap, Method, Version};

use super::reject::Reject;

/// What a valid upgrade request gives the rest of the handshake.
#[derive(Debug)]
pub struct WsRequest {
    /// The value for `Sec-WebSocket-Accept`.
    pub accept_key: String,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

pub fn check(method: &Method, version: Version, headers: &HeaderMap) -> Result<WsRequest, Reject> {
    let upgrade_present = headers.contains_key(header::UPGRADE);
    if !upgrade_present && !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        return Err(Reject::NotWebSocket);
    }
    if method != Method::GET {
        return Err(Reject::BadUpgrade("method must be GET"));
    }
    if version != Version::HTTP_11 {
        return Err(Reject::BadUpgrade("HTTP/1.1 required"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(Reject::BadUpgrade("Upgrade must be websocket"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Reject::BadUpgrade("Connection must include Upgrade"));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Reject::BadUpgrade("Transfer-Encoding on an upgrade"));
    }
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes() != b"0")
    {
        return Err(Reject::BadUpgrade("body on an upgrade"));
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        _ => return Err(Reject::BadVersion),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k,
        (None, _) => return Err(Reject::BadUpgrade("missing Sec-WebSocket-Key")),
        (Some(_), Some(_)) => return Err(Reject::BadUpgrade("repeated Sec-WebSocket-Key")),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| Reject::BadUpgrade("Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(Reject::BadUpgrade("Sec-WebSocket-Key must be 16 bytes"));
    }
    Ok(WsRequest {
        accept_key: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn valid() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn rfc6455_sample_key() {
        let r = check(&Method::GET, Version::HTTP_11, &valid()).expect("valid");
        assert_eq!(r.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn plain_http_is_426() {
        let r = check(&Method::GET, Version::HTTP_11, &HeaderMap::new());
        assert!(matches!(r, Err(Reject::NotWebSocket)));
    }

    #[test]
    fn malformed_upgrades_are_400() {
        type Mutation = Box<dyn Fn(&mut HeaderMap)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|h| {
                h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
            }),
            Box::new(|h| {
                h.remove(header::CONNECTION);
            }),
            Box::new(|h| {
                h.append(
                    header::SEC_WEBSOCKET_KEY,
                    HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="),
                );
            }),
            Box::new(|h| {
                h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
            }),
            Box::new(|h| {
                h.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }),
            Box::new(|h| {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
            }),
            Box::new(|h| {
                h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
            }),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut h = valid();
            mutate(&mut h);
            let r = check(&Method::GET, Version::HTTP_11, &h);
            assert_eq!(
                r.map(|_| ()).map_err(|e| e.status().as_u16()),
                Err(400),
                "case {i}"
            );
        }
        assert!(check(&Method::POST, Version::HTTP_11, &valid()).is_err());
    }
}
