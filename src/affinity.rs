//! The key `balance: hash` hashes, read from a request: a query parameter,
//! a cookie, a header, a claim of the verified token, or the client
//! address. Plain requests and WebSocket handshakes read it the same way,
//! so the polling requests and the upgrade of one Socket.IO (or SignalR)
//! session reach the same upstream.
//!
//! The hash is FNV-1a over the key's bytes: fixed across processes and
//! versions, so replicas behind one load balancer agree on the pick.

use std::net::IpAddr;

use http::header::COOKIE;
use http::request::Parts;

use crate::config::{Balance, HashKey};
use crate::route::lookup_claim;

/// The affinity of a request on an upstream set balanced by `balance`:
/// `None` unless it is `hash`. A request without the key hashes its client
/// address instead, which keeps one client on one upstream.
pub fn affinity(
    balance: &Balance,
    parts: &Parts,
    remote: IpAddr,
    claims: &serde_json::Value,
) -> Option<u64> {
    let Balance::Hash(key) = balance else {
        return None;
    };
    let found = match key {
        HashKey::ClientIp => None,
        HashKey::Query(name) => query_param(parts, name).map(|v| fnv1a(v.as_bytes())),
        HashKey::Cookie(name) => cookie(parts, name).map(|v| fnv1a(v.as_bytes())),
        HashKey::Header(name) => parts
            .headers
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| fnv1a(v.as_bytes())),
        HashKey::Claim(path) => lookup_claim(claims, path).and_then(|v| match v {
            serde_json::Value::String(s) => Some(fnv1a(s.as_bytes())),
            serde_json::Value::Number(n) => Some(fnv1a(n.to_string().as_bytes())),
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Array(_)
            | serde_json::Value::Object(_) => None,
        }),
    };
    Some(found.unwrap_or_else(|| match remote {
        IpAddr::V4(a) => fnv1a(&a.octets()),
        IpAddr::V6(a) => fnv1a(&a.octets()),
    }))
}

/// The first non-empty value of `name` in the query, as written (not
/// decoded: the same text always gives the same hash).
fn query_param<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .uri
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, v)| k.trim() == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn parts(uri: &str, cookie: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(c) = cookie {
            b = b.header(COOKIE, c);
        }
        b.body(()).expect("request").into_parts().0
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const NO_CLAIMS: serde_json::Value = serde_json::Value::Null;

    #[test]
    fn keys_are_read_where_named_and_fall_back_to_the_address() {
        let q = Balance::Hash(HashKey::Query("room".into()));
        let a = affinity(&q, &parts("/s?x=1&room=blue", None), IP, &NO_CLAIMS);
        let b = affinity(
            &q,
            &parts("/t?room=blue", None),
            IpAddr::from([1, 2, 3, 4]),
            &NO_CLAIMS,
        );
        assert_eq!(a, b);
        assert_eq!(a, Some(fnv1a(b"blue")));
        let none = affinity(&q, &parts("/s?room=", None), IP, &NO_CLAIMS);
        assert_eq!(none, Some(fnv1a(&[10, 0, 0, 1])));

        let c = Balance::Hash(HashKey::Cookie("sticky".into()));
        let v = affinity(&c, &parts("/", Some("a=1; sticky=k7")), IP, &NO_CLAIMS);
        assert_eq!(v, Some(fnv1a(b"k7")));
        assert_eq!(
            affinity(&Balance::RoundRobin, &parts("/", None), IP, &NO_CLAIMS),
            None
        );
    }

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
