//! `routes[].upstream`: the `ws://` / `wss://` URLs, balancing, timeouts, the
//! trust anchors for `wss://` and the path rewrite.

use super::error::FieldPath;
use super::files;
use super::model::*;
use super::raw::{RawHashKey, RawUpstream};
use super::routes::{check_template, TemplateUse};
use super::validate::Ctx;

pub(crate) fn upstream(
    cx: &mut Ctx,
    raw: &RawUpstream,
    params: Option<&[String]>,
    path: FieldPath,
) -> Option<UpstreamConfig> {
    let long = match raw {
        RawUpstream::Url(url) => {
            return match parse_upstream_url(url) {
                Ok(u) => Some(UpstreamConfig {
                    urls: vec![u],
                    balance: Balance::RoundRobin,
                    connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                    ca: None,
                    path: None,
                }),
                Err(msg) => {
                    cx.err(path, msg);
                    None
                }
            };
        }
        RawUpstream::Long(long) => long,
    };
    let list = cx.required(
        &long.urls,
        path.key("urls"),
        "add `urls: [ws://127.0.0.1:9001]`",
    );
    if list.is_some_and(|l| l.is_empty()) {
        cx.err(
            path.key("urls"),
            "empty; list at least one ws:// or wss:// URL",
        );
    }
    let mut urls = Vec::new();
    let mut urls_ok = list.is_some();
    for (i, url) in list.into_iter().flatten().enumerate() {
        match parse_upstream_url(url) {
            Ok(u) => urls.push(u),
            Err(msg) => {
                urls_ok = false;
                cx.err(path.key("urls").index(i), msg);
            }
        }
    }
    let balance = balance(cx, long, &path);
    let connect_timeout = cx.duration(
        &long.connect_timeout,
        path.key("connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
    );
    if connect_timeout.is_zero() {
        cx.err(path.key("connect_timeout"), "must be longer than 0");
    }
    let ca = long
        .ca
        .as_ref()
        .map(|ca| cx.file(ca, path.key("ca"), files::check_trust_anchors));
    if let Some(rewrite) = &long.path {
        if !rewrite.starts_with('/') {
            cx.err(path.key("path"), "must start with `/`");
        }
        check_template(cx, rewrite, params, TemplateUse::Path, &path.key("path"));
    }
    (urls_ok && !urls.is_empty()).then_some(())?;
    Some(UpstreamConfig {
        urls,
        balance,
        connect_timeout,
        ca: match ca {
            Some(ca) => Some(ca?),
            None => None,
        },
        path: long.path.clone(),
    })
}

/// The balance kinds before a `hash` gets its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RoundRobin,
    LeastConnections,
    Hash,
}

/// `balance` and, for `hash`, `hash_key` (required there, refused elsewhere).
fn balance(cx: &mut Ctx, long: &super::raw::RawUpstreamLong, path: &FieldPath) -> Balance {
    let kind = cx.choice(
        &long.balance,
        path.key("balance"),
        &[
            ("round_robin", Kind::RoundRobin),
            ("least_connections", Kind::LeastConnections),
            ("hash", Kind::Hash),
        ],
        Kind::RoundRobin,
    );
    match (kind, &long.hash_key) {
        (Kind::RoundRobin, None) => Balance::RoundRobin,
        (Kind::LeastConnections, None) => Balance::LeastConnections,
        (Kind::RoundRobin | Kind::LeastConnections, Some(_)) => {
            cx.err(
                path.key("hash_key"),
                "only used with `balance: hash`; remove it or set `balance: hash`",
            );
            Balance::RoundRobin
        }
        (Kind::Hash, None) => {
            cx.err(
                path.key("hash_key"),
                "missing; `balance: hash` needs a key, e.g. `hash_key: {cookie: session}` or `hash_key: client_ip`",
            );
            Balance::RoundRobin
        }
        (Kind::Hash, Some(key)) => match hash_key(key) {
            Ok(key) => Balance::Hash(key),
            Err(msg) => {
                cx.err(path.key("hash_key"), msg);
                Balance::RoundRobin
            }
        },
    }
}

fn hash_key(raw: &RawHashKey) -> Result<HashKey, &'static str> {
    const EXPECTED: &str = "expected `client_ip` or one of `{query: NAME}`, `{cookie: NAME}`, `{header: NAME}`, `{claim: PATH}`";
    let k = match raw {
        RawHashKey::Named(name) if name == "client_ip" => return Ok(HashKey::ClientIp),
        RawHashKey::Named(_) => return Err(EXPECTED),
        RawHashKey::Keyed(k) => k,
    };
    fn named(n: &Option<String>) -> Option<&str> {
        n.as_deref().filter(|n| !n.trim().is_empty())
    }
    match (
        named(&k.query),
        named(&k.cookie),
        named(&k.header),
        named(&k.claim),
    ) {
        (Some(q), None, None, None) => Ok(HashKey::Query(q.to_owned())),
        (None, Some(c), None, None) => Ok(HashKey::Cookie(c.to_owned())),
        (None, None, Some(h), None) => http::HeaderName::from_bytes(h.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| "not a valid header name"),
        (None, None, None, Some(c)) => Ok(HashKey::Claim(c.to_owned())),
        _ => Err(EXPECTED),
    }
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
    if host.is_empty() || !authority.starts_with('[') && !is_host_name(host) {
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

/// Letters, digits, `-` and `_` in non-empty dot-separated labels.
fn is_host_name(host: &str) -> bool {
    host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawKeyedHashKey;

    #[test]
    fn hash_keys() {
        let keyed = |q: Option<&str>, c: Option<&str>, h: Option<&str>, cl: Option<&str>| {
            hash_key(&RawHashKey::Keyed(RawKeyedHashKey {
                query: q.map(str::to_owned),
                cookie: c.map(str::to_owned),
                header: h.map(str::to_owned),
                claim: cl.map(str::to_owned),
            }))
        };
        assert_eq!(
            hash_key(&RawHashKey::Named("client_ip".into())),
            Ok(HashKey::ClientIp)
        );
        assert!(hash_key(&RawHashKey::Named("sid".into())).is_err());
        assert_eq!(
            keyed(Some("sid"), None, None, None),
            Ok(HashKey::Query("sid".into()))
        );
        assert_eq!(
            keyed(None, None, None, Some("sub")),
            Ok(HashKey::Claim("sub".into()))
        );
        assert!(keyed(None, None, Some("bad header"), None).is_err());
        assert!(keyed(Some("a"), Some("b"), None, None).is_err());
        assert!(keyed(None, None, None, None).is_err());
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
}
