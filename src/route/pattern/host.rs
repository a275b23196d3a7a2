//! Host patterns (`chat.example.com`, `*.example.com`, IP literals) and the
//! normalisation of a request's `Host` that they are matched against.

use super::{PatternError, PatternProblem, PatternTarget};

/// A compiled `host:` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Lower-cased, without trailing dot or IPv6 brackets.
    Exact(String),
    /// The part after `*`, dot included: `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let err = |problem| PatternError::new(PatternTarget::Host, pattern, problem);
        let lower = pattern.to_ascii_lowercase();
        if let Some(inner) = lower.strip_prefix('[') {
            let addr = inner
                .strip_suffix(']')
                .ok_or(err(PatternProblem::HostWithPort))?;
            return if is_ipv6_text(addr) {
                Ok(HostPattern::Exact(addr.to_owned()))
            } else {
                Err(err(PatternProblem::HostChar))
            };
        }
        if lower.contains(':') {
            return if is_ipv6_text(&lower) {
                Ok(HostPattern::Exact(lower))
            } else {
                Err(err(PatternProblem::HostWithPort))
            };
        }
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if name.is_empty() {
            return Err(err(PatternProblem::Empty));
        }
        let (wildcard, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if name.contains('*') || name == "*" {
            return Err(err(PatternProblem::MisplacedHostWildcard));
        }
        check_host_name(name).map_err(err)?;
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// `host` must come from [`normalize_host`].
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host == exact,
            // Normalised hosts have no empty label, so whatever precedes the
            // suffix is at least one real label: the apex never matches.
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

fn check_host_name(name: &str) -> Result<(), PatternProblem> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(PatternProblem::HostChar);
    }
    if name.split('.').any(str::is_empty) {
        return Err(PatternProblem::EmptyLabel);
    }
    Ok(())
}

/// Loose on purpose (the address is only compared, never connected to), but
/// at least two colons, so `cafe:80` reads as a name with a port.
fn is_ipv6_text(addr: &str) -> bool {
    addr.matches(':').count() >= 2
        && addr
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
}

/// The host part of a `Host` header or authority, ready for
/// [`HostPattern::matches`]: port removed, IPv6 brackets removed, one
/// trailing dot removed, ASCII lower-cased. `None` when it is not a plausible
/// host, so only routes without a `host` pattern can match.
pub fn normalize_host(authority: &str) -> Option<String> {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !is_port_suffix(after) || !is_ipv6_text(addr) {
            return None;
        }
        return Some(addr.to_ascii_lowercase());
    }
    let host = match authority.split_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || check_host_name(host).is_err() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// Empty, or `:` and digits (RFC 3986 allows an empty port).
fn is_port_suffix(s: &str) -> bool {
    s.is_empty()
        || s.strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}
