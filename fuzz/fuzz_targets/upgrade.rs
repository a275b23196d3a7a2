//! RFC 6455 upgrade checks on a header map built from bytes.
//!
//! Input: first byte picks method and version; then `name: value` lines.
//! Oracles: no panic; an accepted request has exactly one
//! `Sec-WebSocket-Key` decoding to 16 bytes, version 13, no
//! `Transfer-Encoding`, no non-zero `Content-Length`, and the accept key is
//! the RFC 6455 digest (28 base64 characters).
#![no_main]

#[path = "common/headers.rs"]
mod headers;

use http::header;
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let method = match sel & 3 {
        0 | 1 => Method::GET,
        2 => Method::POST,
        _ => Method::CONNECT,
    };
    let version = match (sel >> 2) & 3 {
        0 | 1 => Version::HTTP_11,
        2 => Version::HTTP_10,
        _ => Version::HTTP_2,
    };
    let headers = headers::from_lines(rest.split(|&b| b == b'\n'), 64);
    if let Ok(ws) = wsgate::handshake::upgrade::check(&method, version, &headers) {
        assert_eq!(method, Method::GET);
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(headers.get_all(header::SEC_WEBSOCKET_KEY).iter().count(), 1);
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
        assert!(headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes() == b"0"));
        assert_eq!(ws.accept_key.len(), 28);
    }
});
