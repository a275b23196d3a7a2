//! Which authority (host and port) a request names: the one host-based routes
//! are decided on, and the one the upstream is told (`X-Forwarded-Host`).
//!
//! RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; an
//! absolute-form target (`GET http://h/p HTTP/1.1`) names the authority
//! itself, and its `Host` must agree. A gateway that took the first of two
//! `Host` headers, or `Host` over the target's own authority, would route on
//! one authority while the upstream (or a proxy behind it) reads another.

use http::uri::{Authority, Scheme};
use http::{header, HeaderMap, Uri, Version};

/// Why the request's authority cannot be trusted: 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("more than one Host header")]
    RepeatedHost,
    #[error("missing Host header")]
    MissingHost,
    #[error("malformed Host header")]
    MalformedHost,
    #[error("Host disagrees with the request target")]
    Disagrees,
}

impl AuthorityError {
    pub fn text(self) -> &'static str {
        match self {
            AuthorityError::RepeatedHost => "more than one Host header",
            AuthorityError::MissingHost => "missing Host header",
            AuthorityError::MalformedHost => "malformed Host header",
            AuthorityError::Disagrees => "Host disagrees with the request target",
        }
    }
}

/// The request's authority as the client wrote it (`None` only for an
/// HTTP/1.0 request without `Host`).
pub fn request_authority(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<String>, AuthorityError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::RepeatedHost);
    }
    let host = match host {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| AuthorityError::MalformedHost)?;
            Some(parse(text).ok_or(AuthorityError::MalformedHost)?)
        }
    };
    match (uri.authority(), host) {
        (Some(target), host) => {
            if target.as_str().contains('@') {
                // Userinfo has no place in a request target (RFC 9110 §4.2.4).
                return Err(AuthorityError::MalformedHost);
            }
            if host.is_some_and(|h| !same(uri.scheme(), target, &h)) {
                return Err(AuthorityError::Disagrees);
            }
            Ok(Some(target.as_str().to_owned()))
        }
        (None, Some(h)) => Ok(Some(h.as_str().to_owned())),
        (None, None) if version == Version::HTTP_10 || version == Version::HTTP_09 => Ok(None),
        (None, None) => Err(AuthorityError::MissingHost),
    }
}

/// A `Host` value: a non-empty authority without userinfo.
fn parse(text: &str) -> Option<Authority> {
    if text.is_empty() || text.contains('@') {
        return None;
    }
    text.parse::<Authority>().ok()
}

/// One authority, ignoring case and a default port written out.
fn same(scheme: Option<&Scheme>, a: &Authority, b: &Authority) -> bool {
    let default = match scheme.map(Scheme::as_str) {
        Some(s) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") => 443,
        _ => 80,
    };
    a.host().eq_ignore_ascii_case(b.host())
        && a.port_u16().unwrap_or(default) == b.port_u16().unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &str, hosts: &[&str]) -> Result<Option<String>, AuthorityError> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(header::HOST, h.parse().unwrap());
        }
        request_authority(Version::HTTP_11, &target.parse().unwrap(), &headers)
    }

    #[test]
    fn origin_form_takes_the_single_host() {
        assert_eq!(
            check("/p", &["Chat.Example.com:8443"]).unwrap().as_deref(),
            Some("Chat.Example.com:8443")
        );
        assert_eq!(check("/p", &["a", "b"]), Err(AuthorityError::RepeatedHost));
        assert_eq!(check("/p", &["a", "a"]), Err(AuthorityError::RepeatedHost));
        assert_eq!(check("/p", &[]), Err(AuthorityError::MissingHost));
        assert_eq!(check("/p", &[""]), Err(AuthorityError::MalformedHost));
        assert_eq!(check("/p", &["u@h"]), Err(AuthorityError::MalformedHost));
        assert_eq!(check("/p", &["h/x"]), Err(AuthorityError::MalformedHost));
    }

    #[test]
    fn absolute_form_is_routed_by_its_own_authority() {
        assert_eq!(
            check("http://a.test/p", &[]).unwrap().as_deref(),
            Some("a.test")
        );
        assert_eq!(
            check("http://a.test/p", &["A.TEST"]).unwrap().as_deref(),
            Some("a.test")
        );
        assert_eq!(
            check("http://a.test/p", &["a.test:80"]).unwrap().as_deref(),
            Some("a.test")
        );
        assert_eq!(
            check("https://a.test/p", &["a.test:443"])
                .unwrap()
                .as_deref(),
            Some("a.test")
        );
        assert_eq!(
            check("http://a.test/p", &["b.test"]),
            Err(AuthorityError::Disagrees)
        );
        assert_eq!(
            check("http://a.test:81/p", &["a.test"]),
            Err(AuthorityError::Disagrees)
        );
        assert_eq!(
            check("http://u@a.test/p", &[]),
            Err(AuthorityError::MalformedHost)
        );
    }

    #[test]
    fn http_1_0_may_omit_host() {
        let headers = HeaderMap::new();
        let uri: Uri = "/p".parse().unwrap();
        assert_eq!(
            request_authority(Version::HTTP_10, &uri, &headers),
            Ok(None)
        );
    }
}
