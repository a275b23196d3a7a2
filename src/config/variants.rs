//! Path variants that skip a rule: a `wsgate check` warning.
//!
//! Matching is exact, as in Envoy: `/rooms/{room}` matches neither
//! `/ROOMS/a` nor `/rooms/a/` nor `/rooms/a/b`. That is safe on its own, but
//! when a later, broader route (a catch-all `/*`) sends such a variant to the
//! *same* upstream without the rule, and the upstream reads paths loosely
//! (Express and ASP.NET route `/ROOMS/a` and `/rooms/a/` to the `/rooms/:room`
//! handler by default), the variant reaches the protected handler without the
//! protected route's `require`. Nothing is refused here: the config may be
//! right (the upstream may be strict), so this is a warning with the fix.

use std::collections::HashSet;

use super::error::FieldPath;
use super::model::*;
use super::validate::Ctx;
use crate::route::{parse_request_path, HostPattern, PathPattern, RouteTable};

/// A spelling of a protected route's path that its pattern does not match.
struct Variant {
    path: String,
    kind: &'static str,
}

/// Warns, at `routes[i].path`, for each route with `require` whose variants
/// reach a weaker route to the same upstream.
pub(crate) fn warn_skipped_rules(cx: &mut Ctx, config: &Config) {
    let table = RouteTable::build(
        config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.host.as_deref(), r.path.as_str(), i)),
    );
    let Ok(table) = table else { return };
    for (i, route) in config.routes.iter().enumerate() {
        if route.auth != AuthMode::Required || route.require.is_empty() {
            continue;
        }
        let Ok(pattern) = PathPattern::parse(&route.path) else {
            continue;
        };
        let mut hits: Vec<(&Variant, usize)> = Vec::new();
        let variants = variants(&pattern);
        for variant in &variants {
            let Ok(request) = parse_request_path(&variant.path) else {
                continue;
            };
            for host in hosts(config, route) {
                let Some(found) = table.find(host.as_deref(), &request) else {
                    continue;
                };
                let j = *found.route;
                if j != i && weaker_to_same_upstream(route, &config.routes[j]) {
                    hits.push((variant, j));
                    break;
                }
            }
        }
        if !hits.is_empty() {
            let path = FieldPath::root().key("routes").index(i).key("path");
            cx.warn(path, message(config, &pattern, &hits));
        }
    }
}

/// Letter case, a trailing slash and an extra segment: what Express and
/// ASP.NET routing ignore by default.
fn variants(pattern: &PathPattern) -> Vec<Variant> {
    let example = pattern.example("x");
    let mut out = vec![Variant {
        path: example.to_uppercase(),
        kind: "letter case",
    }];
    // A `/*` pattern already matches a trailing slash and deeper segments.
    if !pattern.is_prefix() {
        let base = example.trim_end_matches('/');
        out.push(Variant {
            path: format!("{base}/"),
            kind: "trailing slash",
        });
        out.push(Variant {
            path: format!("{base}/x"),
            kind: "extra segment",
        });
    }
    // Keep only spellings the pattern itself misses.
    out.retain(|v| {
        parse_request_path(&v.path)
            .ok()
            .is_some_and(|r| pattern.matches(&r).is_none())
    });
    out
}

/// The `Host` values to try: the route's own host, or, for a route that
/// matches any host, no host and each host another route names.
fn hosts(config: &Config, route: &RouteConfig) -> Vec<Option<String>> {
    match &route.host {
        Some(h) => vec![Some(example_host(h))],
        None => {
            let mut out = vec![None];
            let mut seen = HashSet::new();
            for h in config.routes.iter().filter_map(|r| r.host.as_deref()) {
                if seen.insert(h) {
                    out.push(Some(example_host(h)));
                }
            }
            out
        }
    }
}

/// A host name a host pattern matches.
fn example_host(pattern: &str) -> String {
    match HostPattern::parse(pattern) {
        Ok(HostPattern::Wildcard(suffix)) => format!("x{suffix}"),
        _ => pattern.to_owned(),
    }
}

/// `other` reaches an upstream `protected` uses, with no rules at all.
fn weaker_to_same_upstream(protected: &RouteConfig, other: &RouteConfig) -> bool {
    let same_upstream = other.upstream.urls.iter().any(|o| {
        protected
            .upstream
            .urls
            .iter()
            .any(|p| p.tls == o.tls && p.port == o.port && p.host.eq_ignore_ascii_case(&o.host))
    });
    // A route with rules of its own (a deny route, a stricter role) is the
    // operator's deliberate choice; whether its rules are weaker cannot be
    // told from the config.
    let weaker = other.auth == AuthMode::None || other.require.is_empty();
    same_upstream && weaker
}

fn message(config: &Config, pattern: &PathPattern, hits: &[(&Variant, usize)]) -> String {
    let spelled: Vec<String> = hits
        .iter()
        .map(|(v, _)| format!("`{}` ({})", v.path, v.kind))
        .collect();
    let mut targets: Vec<usize> = hits.iter().map(|(_, j)| *j).collect();
    targets.sort_unstable();
    targets.dedup();
    let reached: Vec<String> = targets
        .iter()
        .map(|j| format!("routes[{j}] (`{}`)", config.routes[*j].id))
        .collect();
    let mut fix = String::new();
    if !pattern.is_prefix() {
        fix.push_str("match the longer spellings with a `/*` form of this path carrying the same rules, and ");
    }
    fix.push_str("keep the broader route off this upstream's protected paths (list its public paths instead of a catch-all, or give it the same `require`)");
    let (miss, reach, them) = if hits.len() == 1 {
        ("misses", "reaches", "it")
    } else {
        ("miss", "reach", "them")
    };
    format!(
        "{} {miss} this route and {reach} {}, which sends {them} to the same upstream without this route's `require` rules; an upstream that ignores letter case or trailing slashes (Express, ASP.NET by default) serves them as this route; {fix}. See \"Path variants that skip a rule\" in docs/configuration.md",
        spelled.join(", "),
        reached.join(" and "),
    )
}
