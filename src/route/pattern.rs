//! Host and path patterns, and the safety check every request path passes
//! before it is matched.
//!
//! # Request paths
//!
//! [`parse_request_path`] turns the request-target's path into decoded
//! segments, or refuses it (the handshake answers 400). It refuses rather
//! than normalises: whatever the gateway matched must be what the upstream
//! would resolve, and the upstream receives the client's *raw* path, so any
//! spelling two parties could read differently is an error:
//!
//! - `.` and `..` segments, raw or percent-encoded (`%2e`, `%2E%2e`), also
//!   before a `;` (`..;x`, which some servlet containers read as `..`), and
//!   segments made only of dots and spaces (`...`, `.. `), which Windows
//!   file systems trim to `..`;
//! - invalid percent escapes (`%`, `%4`, `%zz`) and escapes that do not
//!   decode to UTF-8;
//! - control characters (raw or decoded, NUL included) and backslashes
//!   (raw or `%5C`), which some servers treat as `/`;
//! - empty segments (`//`, `/a//b`). Collapsing them would let `//admin`
//!   match a pattern written for `/admin` while an upstream reads it another
//!   way (some resolve `//admin` as a network-path reference), and keeping
//!   them as unmatchable segments would let them slip past a protected
//!   `/admin/*` into a catch-all route whose upstream *does* collapse them.
//!   A refusal is the only reading every party agrees on. One trailing slash
//!   is allowed: `/a/` is the segments `["a", ""]`, which `/a/*` matches and
//!   the exact pattern `/a` does not.
//!
//! `%2F` decodes to a `/` that stays inside its segment, so `{name}` can
//! match `a%2Fb` as `a/b` and it never creates a segment. Decoding happens
//! once: `%252e%252e` decodes to the segment `%2e%2e`, which is not a dot
//! segment; the upstream receives the original raw path, so it too sees
//! exactly one decoding's worth of dots and must not decode a second time.
//!
//! # Patterns
//!
//! Host patterns are exact (`chat.example.com`) or a leading wildcard label
//! (`*.example.com`, which matches `a.example.com` and `a.b.example.com` but
//! not `example.com`); case-insensitive; the request's port is ignored.
//!
//! Path patterns are `/exact`, `/prefix/*` (matches `/prefix` and everything
//! below it, segment-aware, so never `/prefixfoo`) and `{name}` segments that
//! match exactly one non-empty segment. Literal segments are percent-decoded
//! like request segments and compared case-sensitively.
//!
//! This is the one grammar of route patterns: config validation compiles
//! every pattern with [`HostPattern::parse`] and [`PathPattern::parse`], so a
//! pattern the config accepts is exactly one the router can match. Its
//! choices:
//!
//! - A parameter name is ASCII letters, digits, `_` and `-`, starting with a
//!   letter or `_` (`{room}`, `{room_id}`, `{room-id}`); `claims` is taken by
//!   `{claims.x}` templates. A leading digit (`{1}`) is refused: it reads as
//!   a positional index, which this syntax does not have.
//! - `{name}` is a whole segment. Any other brace (`/r-{id}`, `{{x}}`,
//!   `/a{`) is an error, not a literal: a pattern that other routers read
//!   as a placeholder must not silently become a literal here. A literal
//!   brace in a path is written percent-encoded, `%7B` / `%7D`.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;

use super::Params;

/// Everything but RFC 3986 unreserved characters, for writing a decoded
/// literal back as a request path.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest request path accepted. WebSocket endpoints have short paths; the
/// cap bounds the work an untrusted path can cause.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// A request path that passed [`parse_request_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// As received, still percent-encoded: this is what the upstream gets.
    raw: String,
    /// Percent-decoded segments; a trailing slash is a final empty segment
    /// and `/` has none.
    segments: Vec<String>,
}

impl RequestPath {
    /// The path as received (what is forwarded upstream).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The decoded segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// Why a request path was refused (the handshake answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotOriginForm,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path contains a character not allowed in a request path")]
    IllegalChar,
    #[error("path has an invalid percent escape")]
    BadEscape,
    #[error("path has a percent escape that does not decode to UTF-8")]
    NotUtf8,
    #[error("path contains a control character")]
    ControlChar,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains an empty segment ('//')")]
    EmptySegment,
    #[error("path contains an encoded slash ('%2F')")]
    EncodedSlash,
    #[error("path contains a ';' parameter")]
    Parameter,
}

/// Checks and decodes the path of a request-target (without its query).
pub fn parse_request_path(raw: &str) -> Result<RequestPath, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotOriginForm)?;
    for c in raw.chars() {
        if c.is_control() {
            return Err(PathError::ControlChar);
        }
        // Never valid in a request path: a caller that forgot to cut the
        // query, or a client smuggling a fragment or a space.
        if matches!(c, ' ' | '?' | '#') {
            return Err(PathError::IllegalChar);
        }
    }
    let segments = split_segments(rest)?;
    Ok(RequestPath {
        raw: raw.to_owned(),
        segments,
    })
}

/// Splits what follows the leading `/` and decodes each segment; shared by
/// request paths and pattern literals so both read `%xx` the same way.
fn split_segments(rest: &str) -> Result<Vec<String>, PathError> {
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len() - 1;
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        if part.is_empty() && i != last {
            return Err(PathError::EmptySegment);
        }
        segments.push(decode_segment(part)?);
    }
    Ok(segments)
}

/// Percent-decodes one segment and applies the checks on decoded text.
pub(crate) fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(PathError::BadEscape),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    check_decoded(&decoded)?;
    Ok(decoded)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_decoded(segment: &str) -> Result<(), PathError> {
    if segment.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    if segment.contains('\\') {
        return Err(PathError::Backslash);
    }
    // `..;jsessionid=x` is `..` to servlet containers.
    let head = segment.split(';').next().unwrap_or(segment);
    if head.contains('.') && head.chars().all(|c| c == '.' || c == ' ') {
        return Err(PathError::DotSegment);
    }
    // An encoded slash is one segment here but two to a backend that decodes
    // before it resolves paths (`/x%2F..%2Fadmin` is `/admin` to it): route
    // rules could be bypassed, so it is refused, as web servers do by default.
    if segment.contains('/') {
        return Err(PathError::EncodedSlash);
    }
    // `/admin;x=1/y` is `/admin/y` to servlet containers but not to these
    // patterns; refusing `;` keeps both readings the same.
    if segment.contains(';') {
        return Err(PathError::Parameter);
    }
    Ok(())
}

// === patterns ===

/// Which pattern of a route an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternTarget {
    Host,
    Path,
}

impl fmt::Display for PatternTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatternTarget::Host => "host",
            PatternTarget::Path => "path",
        })
    }
}

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternProblem {
    #[error("is empty")]
    Empty,
    #[error("may only use `*` as its first label, as in `*.example.com` (omit `host` to match any host)")]
    MisplacedHostWildcard,
    #[error("has a port; ports are ignored when matching hosts, remove it")]
    HostWithPort,
    #[error(
        "has a character not allowed in a host name (use the `xn--` form for international names)"
    )]
    HostChar,
    #[error("has an empty label")]
    EmptyLabel,
    #[error("must start with `/`")]
    NotAbsolute,
    #[error("may only use `*` as a whole last segment, as in `/prefix/*`")]
    MisplacedPathWildcard,
    #[error("has an empty segment (`//`)")]
    EmptySegment,
    #[error("has a malformed parameter: write `{{name}}` as a whole segment, the name made of letters, digits, `_` or `-` and starting with a letter or `_` (not `claims`); a literal brace is `%7B` / `%7D`")]
    BadParam,
    #[error("uses the parameter `{{{0}}}` twice")]
    DuplicateParam(String),
    #[error("has an invalid segment: {0}")]
    Segment(PathError),
}

/// A host or path pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{target} pattern {pattern:?} {problem}")]
pub struct PatternError {
    /// Index of the entry given to [`super::RouteTable::build`]; `None` when
    /// the pattern was parsed on its own. Not part of the message, so the
    /// caller can name the entry its own way (`routes[2].path`).
    pub entry: Option<usize>,
    pub target: PatternTarget,
    pub pattern: String,
    pub problem: PatternProblem,
}

impl PatternError {
    pub(super) fn new(target: PatternTarget, pattern: &str, problem: PatternProblem) -> Self {
        PatternError {
            entry: None,
            target,
            pattern: pattern.to_owned(),
            problem,
        }
    }
}

/// A compiled `path:` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    /// Ends in `/*`: the segments are a prefix.
    prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Decoded, compared case-sensitively.
    Literal(String),
    Param(String),
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let err = |problem| PatternError::new(PatternTarget::Path, pattern, problem);
        let rest = pattern
            .strip_prefix('/')
            .ok_or(err(PatternProblem::NotAbsolute))?;
        let (rest, prefix) = if rest == "*" {
            ("", true)
        } else if let Some(head) = rest.strip_suffix("/*") {
            (head, true)
        } else {
            (rest, false)
        };
        if rest.starts_with('/') || rest.contains("//") || (prefix && rest.ends_with('/')) {
            return Err(err(PatternProblem::EmptySegment));
        }
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for raw in rest.split('/') {
                segments.push(parse_segment(raw, &segments).map_err(err)?);
            }
        }
        Ok(PathPattern { segments, prefix })
    }

    /// The `{name}`s, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Ends in `/*` (matches the prefix and everything below it).
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// A raw request path this pattern matches, each parameter set to
    /// `fill` (a plain word) and nothing below a `/*` prefix. Config checks
    /// use it to ask which route a spelling of that path would reach.
    pub fn example(&self, fill: &str) -> String {
        if self.segments.is_empty() {
            return "/".to_owned();
        }
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(text) => out.extend(utf8_percent_encode(text, NOT_UNRESERVED)),
                Segment::Param(_) => out.push_str(fill),
            }
        }
        out
    }

    /// The parameters when `path` matches.
    pub fn matches(&self, path: &RequestPath) -> Option<Params> {
        let got = path.segments();
        let len_ok = if self.prefix {
            got.len() >= self.segments.len()
        } else {
            got.len() == self.segments.len()
        };
        if !len_ok {
            return None;
        }
        let mut params = Params::default();
        for (want, got) in self.segments.iter().zip(got) {
            match want {
                Segment::Literal(lit) if lit == got => {}
                Segment::Param(name) if !got.is_empty() => params.push(name, got),
                _ => return None,
            }
        }
        Some(params)
    }
}

fn parse_segment(raw: &str, before: &[Segment]) -> Result<Segment, PatternProblem> {
    if raw.contains('*') {
        return Err(PatternProblem::MisplacedPathWildcard);
    }
    if !raw.contains(['{', '}']) {
        return decode_segment(raw)
            .map(Segment::Literal)
            .map_err(PatternProblem::Segment);
    }
    let name = raw
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .filter(|n| is_param_name(n))
        .ok_or(PatternProblem::BadParam)?;
    if before
        .iter()
        .any(|s| matches!(s, Segment::Param(p) if p == name))
    {
        return Err(PatternProblem::DuplicateParam(name.to_owned()));
    }
    Ok(Segment::Param(name.to_owned()))
}

/// Parameter names: what a `{name}` may hold in paths and templates (see
/// the module doc for why).
pub fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        && name != "claims"
}

mod host;

pub use host::{normalize_host, HostPattern};

#[cfg(test)]
mod tests;
