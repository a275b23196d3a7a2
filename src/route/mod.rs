//! Routing: which route a handshake belongs to, whether its claims satisfy
//! the route's `require` rules, and the `{claims.x}` / `{param}` templates
//! that build forwarded headers and upstream paths.
//!
//! Everything here is a pure function over already-parsed input, so the
//! handshake can call it without I/O and tests can pin every rule.
//!
//! Unlike linkerd's router, which prefers the most specific route, the
//! [`RouteTable`] returns the *first* matching entry in file order, as the
//! CONTRACT promises: an operator reads the file top to bottom and the first
//! route that fits is the one that applies.
//!
//! The handshake uses it in this order: [`parse_request_path`] on the
//! request-target's path (an error is a 400), [`RouteTable::find`] with the
//! `Host` header (`None` is a 404), [`Rules::check`] on the verified claims
//! with the match's [`Params`] (an error is a 403), then [`Template::render`]
//! for each forwarded header (refuse a value that fails
//! [`is_safe_header_value`]) and [`Template::render_path`] for an upstream
//! path rewrite.
//!
//! Config validation can check ahead of time what would only fail at a
//! handshake: [`PathPattern::param_names`] against each template's and each
//! `require` value's [`Template::placeholders`] (a `{name}` the path does not
//! bind makes its rule always fail), and `{claims.x}` in `upstream.path`,
//! which renders as nothing there.

pub mod pattern;
pub mod require;
pub mod template;

pub use pattern::{
    is_param_name, normalize_host, parse_request_path, HostPattern, PathError, PathPattern,
    PatternError, PatternProblem, PatternTarget, RequestPath,
};
pub use require::{is_claim_path, lookup_claim, FailureReason, RuleFailure, Rules};
pub use template::{is_safe_header_value, Placeholder, Template, TemplateError};

/// Path parameters of a match: `(name, decoded value)` in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    // A route has a handful of parameters at most: a Vec beats a map here.
    entries: Vec<(String, String)>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// The decoded value of `{name}`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Adds a parameter; a later value for the same name is ignored by
    /// [`Params::get`] (patterns reject duplicate names anyway).
    pub fn push(&mut self, name: &str, value: &str) {
        self.entries.push((name.to_owned(), value.to_owned()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Params {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// The route a request matched, and the parameters its path pattern bound.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'a, T> {
    pub route: &'a T,
    pub params: Params,
}

/// Compiled routes in file order, each with a caller-chosen payload.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    entries: Vec<Entry<T>>,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    /// `None` matches any host, and requests without one.
    host: Option<HostPattern>,
    path: PathPattern,
    payload: T,
}

impl<T> RouteTable<T> {
    /// Compiles `(host, path, payload)` entries, kept in the given order. The
    /// error's [`PatternError::entry`] is the failing entry's index.
    pub fn build<'a, I>(entries: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = (Option<&'a str>, &'a str, T)>,
    {
        let mut compiled = Vec::new();
        for (index, (host, path, payload)) in entries.into_iter().enumerate() {
            let at = |mut e: PatternError| {
                e.entry = Some(index);
                e
            };
            let host = host.map(HostPattern::parse).transpose().map_err(at)?;
            let path = PathPattern::parse(path).map_err(at)?;
            compiled.push(Entry {
                host,
                path,
                payload,
            });
        }
        Ok(RouteTable { entries: compiled })
    }

    /// The first entry, in file order, whose host and path patterns match.
    /// `host` is the `Host` header or authority as received (port, IPv6
    /// brackets and a trailing dot are dealt with here).
    pub fn find(&self, host: Option<&str>, path: &RequestPath) -> Option<RouteMatch<'_, T>> {
        let host = host.and_then(normalize_host);
        self.entries.iter().find_map(|entry| {
            if let Some(pattern) = &entry.host {
                // A route bound to a host never matches a request whose host
                // is missing or unreadable.
                if !host.as_deref().is_some_and(|h| pattern.matches(h)) {
                    return None;
                }
            }
            let params = entry.path.matches(path)?;
            Some(RouteMatch {
                route: &entry.payload,
                params,
            })
        })
    }

    /// The payloads, in file order.
    pub fn routes(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.payload)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
