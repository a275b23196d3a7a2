//! Who the client is behind proxies: `trusted_proxies` (CIDR ranges) and
//! `X-Forwarded-For`.
//!
//! A chain `X-Forwarded-For: a, b, c` sent by peer `p` means each proxy
//! appended the address it saw: `a` saw nothing (the client wrote it, or
//! lied), `b` was seen by the proxy that wrote `c`... Only the entries
//! added by proxies we trust can be believed, so the client is found
//! walking from the right (`p`, then `c`, `b`, `a`) past trusted addresses:
//! the first one not in a trusted range is the client. A client can put
//! anything on the left of the chain, never on the right.

use std::net::IpAddr;
use std::str::FromStr;

/// An address range, `10.0.0.0/8` or `2001:db8::/32` (a bare address is
/// the range of that one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an IP address")]
    Address,
    #[error("prefix length must be a number from 0 to {max}")]
    Prefix { max: u8 },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(CidrError::Prefix { max }),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

/// What a request says about its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The client: the peer itself unless the peer is trusted.
    pub client: IpAddr,
    /// The `X-Forwarded-For` to send upstream: the trusted incoming chain
    /// with the peer appended, or `None` (then the peer alone).
    pub forwarded_for: Option<String>,
}

/// Finds the client of a request from `peer` carrying the
/// `X-Forwarded-For` values `xff` (in header order).
pub fn resolve<'a>(peer: IpAddr, xff: impl Iterator<Item = &'a str>, trusted: &[Cidr]) -> Resolved {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Resolved {
            client: peer,
            forwarded_for: None,
        };
    }
    let entries: Vec<&str> = xff
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        // An entry that is not an address ends the walk: nothing left of
        // it can be believed, and the last trusted hop is what we know.
        let Some(ip) = parse_entry(entry) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    let forwarded_for = if entries.is_empty() {
        None
    } else {
        Some(format!("{}, {peer}", entries.join(", ")))
    };
    Resolved {
        client,
        forwarded_for,
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { max: 32 })
        );
        assert_eq!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::Prefix { max: 32 })
        );
        assert_eq!("example.com/8".parse::<Cidr>(), Err(CidrError::Address));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let r = resolve(
            ip("203.0.113.9"),
            ["1.1.1.1"].into_iter(),
            &cidrs(&["10.0.0.0/8"]),
        );
        assert_eq!(r.client, ip("203.0.113.9"));
        assert_eq!(r.forwarded_for, None);
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let r = resolve(
            ip("10.0.0.1"),
            ["6.6.6.6, 198.51.100.7", "10.0.0.2"].into_iter(),
            &trusted,
        );
        assert_eq!(r.client, ip("198.51.100.7"));
        assert_eq!(
            r.forwarded_for.as_deref(),
            Some("6.6.6.6, 198.51.100.7, 10.0.0.2, 10.0.0.1")
        );
        // Every hop trusted: the left-most one.
        let r = resolve(ip("10.0.0.1"), ["10.0.0.3, 10.0.0.2"].into_iter(), &trusted);
        assert_eq!(r.client, ip("10.0.0.3"));
        // No chain: the peer.
        let r = resolve(ip("10.0.0.1"), std::iter::empty(), &trusted);
        assert_eq!((r.client, r.forwarded_for), (ip("10.0.0.1"), None));
    }

    #[test]
    fn garbage_ends_the_walk_and_ports_are_read_past() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let r = resolve(
            ip("10.0.0.1"),
            ["1.1.1.1, unknown, 10.0.0.9"].into_iter(),
            &trusted,
        );
        assert_eq!(r.client, ip("10.0.0.9"));
        let r = resolve(ip("10.0.0.1"), ["[2001:db8::5]:443"].into_iter(), &trusted);
        assert_eq!(r.client, ip("2001:db8::5"));
        let r = resolve(ip("10.0.0.1"), ["192.0.2.1:8080"].into_iter(), &trusted);
        assert_eq!(r.client, ip("192.0.2.1"));
    }
}
