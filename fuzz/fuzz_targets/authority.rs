//! The request's authority: `Host` headers and absolute-form targets.
//!
//! Input: first byte picks the HTTP version; then lines: the request target,
//! then `name: value` header lines (lines `http` refuses are skipped).
//!
//! Oracles: no panic; two or more `Host` headers are always refused; an
//! accepted HTTP/1.1 request names an authority; an absolute-form target is
//! always the authority returned (never a disagreeing `Host`), and any `Host`
//! beside it names the same host, ignoring case; the authority returned has
//! no userinfo and parses as an authority again.
#![no_main]

#[path = "common/headers.rs"]
mod headers;

use http::header::HOST;
use http::{Uri, Version};
use libfuzzer_sys::fuzz_target;
use wsgate::handshake::authority::request_authority;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let version = match sel % 3 {
        0 => Version::HTTP_11,
        1 => Version::HTTP_10,
        _ => Version::HTTP_2,
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let Some(Ok(target)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };
    let headers = headers::from_lines(lines, 16);
    let hosts = headers.get_all(HOST).iter().count();
    let result = request_authority(version, &uri, &headers);
    if hosts >= 2 {
        assert!(result.is_err(), "two Host headers accepted");
    }
    let Ok(authority) = result else {
        return;
    };
    if version == Version::HTTP_11 || version == Version::HTTP_2 {
        assert!(authority.is_some(), "an HTTP/1.1 request without an authority");
    }
    let Some(authority) = authority else {
        return;
    };
    assert!(!authority.contains('@'), "userinfo in {authority:?}");
    let parsed: http::uri::Authority = authority.parse().expect("the authority parses again");
    if let Some(target) = uri.authority() {
        assert_eq!(authority, target.as_str(), "not the target's own authority");
        if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) {
            let host: http::uri::Authority = host.parse().expect("an accepted Host parses");
            assert!(host.host().eq_ignore_ascii_case(parsed.host()), "a disagreeing Host accepted");
        }
    }
});
