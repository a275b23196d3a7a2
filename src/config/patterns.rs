//! The small languages inside route values: host and path patterns, upstream
//! URLs, `{...}` templates and forwarded header names. Pure functions; each
//! error is a message for the user.

use http::HeaderName;

use super::model::UpstreamUrl;

/// `chat.example.com` or `*.example.com` (already lower-cased).
pub(crate) fn check_host_pattern(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains(':') {
        return Err(
            "a host pattern has no port (the port is ignored when matching); remove `:PORT`"
                .to_owned(),
        );
    }
    if name.contains('*') {
        return Err("`*` is allowed only as a leading `*.`, as in `*.example.com`".to_owned());
    }
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if labels_ok {
        Ok(())
    } else {
        Err("expected a host name like `chat.example.com` or `*.example.com`".to_owned())
    }
}

/// Checks a route path pattern and returns its `{name}` parameters in order.
pub(crate) fn path_params(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err("must start with `/`".to_owned());
    }
    if path.contains(['?', '#']) {
        return Err("a path pattern has no query or fragment".to_owned());
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut params: Vec<String> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "*" {
            if i != last {
                return Err(
                    "`*` is allowed only as the final segment, as in `/prefix/*`".to_owned(),
                );
            }
            continue;
        }
        if segment.contains('*') {
            return Err(
                "`*` must be a whole final segment (`/prefix/*`), not part of one".to_owned(),
            );
        }
        if segment.is_empty() && i != last {
            return Err("empty segment (`//`)".to_owned());
        }
        if *segment == "." || *segment == ".." {
            return Err("`.` and `..` segments never match (such requests are refused)".to_owned());
        }
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_identifier(name) {
                return Err(format!("`{{{name}}}`: a parameter name is letters, digits and `_`, not starting with a digit"));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            params.push(name.to_owned());
        } else if segment.contains(['{', '}']) {
            return Err("`{name}` must be a whole segment, as in `/rooms/{room}`".to_owned());
        }
    }
    Ok(params)
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `ws://host[:port][/base]` or `wss://...`.
pub(crate) fn parse_upstream_url(url: &str) -> Result<UpstreamUrl, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if url.starts_with("http://") || url.starts_with("https://") {
        return Err("an upstream is a WebSocket URL: write ws:// instead of http:// (wss:// instead of https://)".to_owned());
    } else {
        return Err("expected a ws:// or wss:// URL, like ws://127.0.0.1:9001".to_owned());
    };
    if rest.contains(['?', '#']) {
        return Err("an upstream URL has no query or fragment".to_owned());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in an upstream URL are not supported".to_owned());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed `[` in the IPv6 address".to_owned())?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address inside `[...]`".to_owned());
        }
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || !authority.starts_with('[') && check_host_pattern(host).is_err() {
        return Err("the URL has no valid host".to_owned());
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err("the port must be a number from 1 to 65535".to_owned()),
        },
    };
    Ok(UpstreamUrl {
        tls,
        host: host.to_owned(),
        port,
        base_path: path.trim_end_matches('/').to_owned(),
    })
}

/// The `{...}` placeholders of a template, in order. Braces must pair up.
pub(crate) fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    loop {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => return Ok(out),
            (Some(o), Some(c)) if o < c => {
                let inner = &rest[o + 1..c];
                if inner.contains('{') {
                    return Err("`{` inside `{...}`".to_owned());
                }
                out.push(inner);
                rest = &rest[c + 1..];
            }
            (Some(_), None) => return Err("`{` without a closing `}`".to_owned()),
            _ => return Err("`}` without an opening `{`".to_owned()),
        }
    }
}

/// A claim path: dot-separated, non-empty parts (`realm_access.roles`).
pub(crate) fn is_claim_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('.')
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
}

/// Headers wsgate sets or that belong to the connection, not the request.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
    "proxy-connection",
];

/// A `forward.headers` name: valid, lower-cased, and not one that would
/// break or spoof the upgrade handshake.
pub(crate) fn forward_header_name(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a valid HTTP header name (letters, digits and `-`)".to_owned())?;
    let lower = header.as_str();
    if RESERVED_HEADERS.contains(&lower) || lower.starts_with("sec-websocket-") {
        return Err(format!(
            "`{lower}` is part of the connection or the WebSocket handshake and cannot be set"
        ));
    }
    Ok(header)
}

/// An `Origin` header value: `null` or `scheme://host[:port]`, no path.
pub(crate) fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("expected an origin like `https://app.example.com`".to_owned());
    };
    if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '?', '#']) {
        return Err("an origin is `scheme://host[:port]` with no path or trailing `/` (browsers send it that way)".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(check_host_pattern("chat.example.com").is_ok());
        assert!(check_host_pattern("*.example.com").is_ok());
        assert!(check_host_pattern("localhost").is_ok());
        assert!(check_host_pattern("chat.example.com:443").is_err());
        assert!(check_host_pattern("a.*.com").is_err());
        assert!(check_host_pattern("*").is_err());
        assert!(check_host_pattern("a..b").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(path_params("/rooms/{room}"), Ok(vec!["room".to_owned()]));
        assert_eq!(path_params("/"), Ok(vec![]));
        assert_eq!(path_params("/*"), Ok(vec![]));
        assert_eq!(
            path_params("/a/{x}/b/{y}/*"),
            Ok(vec!["x".into(), "y".into()])
        );
        assert!(path_params("rooms").is_err());
        assert!(path_params("/a/*/b").is_err());
        assert!(path_params("/a*").is_err());
        assert!(path_params("/r-{id}").is_err());
        assert!(path_params("/{a}/{a}").is_err());
        assert!(path_params("/{1a}").is_err());
        assert!(path_params("/a//b").is_err());
        assert!(path_params("/a/../b").is_err());
        assert!(path_params("/a?x=1").is_err());
    }

    #[test]
    fn upstream_urls() {
        let u = parse_upstream_url("ws://127.0.0.1:9001").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (false, "127.0.0.1", 9001, "")
        );
        let u = parse_upstream_url("wss://up.example.com/base/").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (true, 443, "/base"));
        let u = parse_upstream_url("ws://[::1]/x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("::1", 80, "/x")
        );
        for bad in [
            "http://x",
            "x:80",
            "ws://",
            "ws://h:0",
            "ws://h:99999",
            "ws://h?q",
            "ws://[::1",
            "ws://u@h",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_and_headers() {
        assert_eq!(
            placeholders("a{claims.sub}b{room}"),
            Ok(vec!["claims.sub", "room"])
        );
        assert!(placeholders("{oops").is_err());
        assert!(placeholders("oops}").is_err());
        assert!(placeholders("{a{b}}").is_err());
        assert_eq!(
            forward_header_name("X-User-Id").map(|h| h.to_string()),
            Ok("x-user-id".into())
        );
        assert!(forward_header_name("Host").is_err());
        assert!(forward_header_name("Sec-WebSocket-Protocol").is_err());
        assert!(forward_header_name("bad header").is_err());
    }
}
