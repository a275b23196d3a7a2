//! `routes:` validation: patterns, upstreams, rules and templates, each checked
//! against the route's own path parameters and the declared issuers.

use std::collections::HashSet;
use std::time::Duration;

use http::HeaderName;

use super::error::FieldPath;
use super::model::*;
use super::raw::*;
use super::upstream::upstream;
use super::validate::{token_sources, Ctx};
use crate::route::{is_claim_path, HostPattern, PathPattern, Placeholder, Template};

pub(crate) fn routes(
    cx: &mut Ctx,
    raw: &[RawRoute],
    issuer_ids: &[&str],
    path: FieldPath,
) -> Vec<RouteConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let p = path.index(i);
        if let Some(id) = &r.id {
            if !seen.insert(id.as_str()) {
                cx.err(
                    p.key("id"),
                    format!("route id `{id}` is used twice; ids must be unique"),
                );
            }
        }
        if let Some(route) = route(cx, r, issuer_ids, p) {
            out.push(route);
        }
    }
    out
}

fn route(
    cx: &mut Ctx,
    raw: &RawRoute,
    issuer_ids: &[&str],
    path: FieldPath,
) -> Option<RouteConfig> {
    let id = cx.required(
        &raw.id,
        path.key("id"),
        "add `id: chat` (used in logs and metrics)",
    );
    if id.is_some_and(|id| id.trim().is_empty()) {
        cx.err(path.key("id"), "empty; give the route a name");
    }
    // Patterns are compiled by the router's own parser, so the config accepts
    // exactly what the router can match.
    let host = raw.host.as_ref().and_then(|h| {
        let h = h.trim().to_ascii_lowercase();
        match HostPattern::parse(&h) {
            Ok(_) => Some(Some(h)),
            Err(e) => {
                cx.err(path.key("host"), format!("the host pattern {}", e.problem));
                None
            }
        }
    });
    let host_ok = raw.host.is_none() || host.is_some();
    let pattern = cx.required(
        &raw.path,
        path.key("path"),
        "add `path: /ws` (or `/prefix/*`)",
    );
    let params: Option<Vec<String>> = pattern.and_then(|p| match PathPattern::parse(p) {
        Ok(compiled) => Some(compiled.param_names().map(str::to_owned).collect()),
        Err(e) => {
            cx.err(path.key("path"), format!("the pattern {}", e.problem));
            None
        }
    });
    // Unknown parameters cannot be checked without a valid path; an empty set
    // would report every `{name}` as unknown, so skip those checks then.
    let param_check = params.as_deref();
    let auth = cx.choice(
        &raw.auth,
        path.key("auth"),
        &[("required", AuthMode::Required), ("none", AuthMode::None)],
        AuthMode::Required,
    );
    let upstream = match &raw.upstream {
        Some(u) => upstream(cx, u, param_check, path.key("upstream")),
        None => {
            cx.err(
                path.key("upstream"),
                "missing; add `upstream: ws://127.0.0.1:9001`",
            );
            None
        }
    };
    if auth == AuthMode::None {
        for (key, set) in [
            ("issuers", raw.issuers.is_some()),
            ("token_sources", raw.token_sources.is_some()),
            ("require", raw.require.is_some()),
        ] {
            if set {
                cx.err(path.key(key), "has no effect with `auth: none` (no token is looked at); remove it, or set `auth: required`");
            }
        }
    }
    let issuers = raw.issuers.as_ref().map(|list| {
        if list.is_empty() {
            cx.err(
                path.key("issuers"),
                "empty list accepts no token; remove the key to accept every issuer",
            );
        }
        for (i, name) in list.iter().enumerate() {
            if !issuer_ids.contains(&name.as_str()) {
                cx.err(
                    path.key("issuers").index(i),
                    format!(
                        "no issuer has id `{name}`; declared ids: {}",
                        issuer_ids.join(", ")
                    ),
                );
            }
        }
        list.clone()
    });
    let token_sources = raw
        .token_sources
        .as_ref()
        .map(|t| token_sources(cx, t, path.key("token_sources")));
    let require = require(
        cx,
        raw.require.as_deref().unwrap_or(&[]),
        param_check,
        path.key("require"),
    );
    let origins = raw.origins.as_ref().map(|list| {
        for (i, origin) in list.iter().enumerate() {
            if let Err(msg) = check_origin(origin) {
                cx.err(path.key("origins").index(i), msg);
            }
        }
        list.clone()
    });
    let reject = cx.choice(
        &raw.reject,
        path.key("reject"),
        &[("status", RejectMode::Status), ("close", RejectMode::Close)],
        RejectMode::Status,
    );
    let http = cx.choice(
        &raw.http,
        path.key("http"),
        &[("deny", HttpMode::Deny), ("proxy", HttpMode::Proxy)],
        HttpMode::Deny,
    );
    if http == HttpMode::Proxy && auth == AuthMode::Required {
        let plain_capable = |t: &TokenSource| {
            matches!(
                t,
                TokenSource::Header | TokenSource::Query(_) | TokenSource::Cookie(_)
            )
        };
        if token_sources
            .as_ref()
            .is_some_and(|list| !list.iter().any(plain_capable))
        {
            cx.err(
                path.key("http"),
                "`proxy` needs a `header`, `query` or `cookie` token source: a plain request carries no subprotocol and no first message",
            );
        }
    }
    let forward = forward(
        cx,
        raw.forward.as_ref(),
        param_check,
        auth,
        path.key("forward"),
    );
    let session = session(cx, raw.session.as_ref(), path.key("session"));
    let limits = route_limits(cx, raw.limits.as_ref(), path.key("limits"));
    host_ok.then_some(())?;
    params?;
    Some(RouteConfig {
        id: id?.clone(),
        host: host.flatten(),
        path: pattern?.clone(),
        upstream: upstream?,
        auth,
        issuers,
        token_sources,
        require,
        origins,
        reject,
        http,
        forward,
        session,
        limits,
    })
}

/// Where a template is used, which decides the placeholders it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateUse {
    /// A `forward.headers` value: claims (on a route with a token) and
    /// path parameters.
    Header(AuthMode),
    /// `upstream.path`: path parameters only.
    Path,
    /// A `require` value: path parameters only.
    RuleValue,
}

/// Parses `text` with the runtime's [`Template::parse`] and checks that each
/// placeholder can be filled where the template is used: every `{name}` is a
/// parameter of the route's path (when the path is valid, `params`), and
/// `{claims.x}` only where a token's claims exist.
pub(crate) fn check_template(
    cx: &mut Ctx,
    text: &str,
    params: Option<&[String]>,
    usage: TemplateUse,
    path: &FieldPath,
) {
    let template = match Template::parse(text) {
        Ok(t) => t,
        Err(e) => {
            cx.err(path.clone(), format!("invalid template: {e}"));
            return;
        }
    };
    for placeholder in template.placeholders() {
        match (placeholder, usage) {
            (Placeholder::Claim(_), TemplateUse::Header(AuthMode::Required)) => {}
            (Placeholder::Claim(_), TemplateUse::Header(AuthMode::None)) => cx.err(
                path.clone(),
                "`{claims...}` needs a token, but this route has `auth: none`",
            ),
            (Placeholder::Claim(_), TemplateUse::Path) => cx.err(
                path.clone(),
                "`{claims...}` cannot be used in a path rewrite; forward the claim in a header",
            ),
            (Placeholder::Claim(_), TemplateUse::RuleValue) => cx.err(
                path.clone(),
                "a rule's value can hold path parameters only; compare claims with `claim:`",
            ),
            (Placeholder::Param(name), _) => {
                let Some(params) = params else { continue };
                if !params.iter().any(|p| p == name) {
                    let mut msg = unknown_param(name, params);
                    if matches!(usage, TemplateUse::Header(_)) {
                        msg.push_str("; use `{claims.NAME}` for a claim");
                    }
                    cx.err(path.clone(), msg);
                }
            }
        }
    }
}

fn unknown_param(name: &str, params: &[String]) -> String {
    if params.is_empty() {
        format!("`{{{name}}}` is not a path parameter: the route's path has none")
    } else {
        format!(
            "`{{{name}}}` is not a path parameter of this route (it has: {})",
            params.join(", ")
        )
    }
}

fn require(
    cx: &mut Ctx,
    raw: &[RawRequire],
    params: Option<&[String]>,
    path: FieldPath,
) -> Vec<RequireRule> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let p = path.index(i);
        let claim = cx.required(
            &r.claim,
            p.key("claim"),
            "add `claim: roles` (a dotted path into the token's claims)",
        );
        if claim.is_some_and(|c| !is_claim_path(c)) {
            cx.err(
                p.key("claim"),
                "expected a dotted claim path like `roles` or `realm_access.roles`",
            );
        }
        let op = match (&r.any_of, &r.all_of, &r.equals) {
            (Some(list), None, None) => {
                list_op(cx, list, params, p.key("any_of")).map(RuleOp::AnyOf)
            }
            (None, Some(list), None) => {
                list_op(cx, list, params, p.key("all_of")).map(RuleOp::AllOf)
            }
            (None, None, Some(value)) => equals_op(cx, value, params, p.key("equals")),
            _ => {
                cx.err(
                    p.clone(),
                    "expected `claim` with exactly one of `any_of`, `all_of` or `equals`",
                );
                None
            }
        };
        if let (Some(claim), Some(op)) = (claim, op) {
            out.push(RequireRule {
                claim: claim.clone(),
                op,
            });
        }
    }
    out
}

fn list_op(
    cx: &mut Ctx,
    list: &[String],
    params: Option<&[String]>,
    path: FieldPath,
) -> Option<Vec<String>> {
    if list.is_empty() {
        cx.err(path, "empty list; a rule with no values can never hold");
        return None;
    }
    for (i, value) in list.iter().enumerate() {
        check_template(cx, value, params, TemplateUse::RuleValue, &path.index(i));
    }
    Some(list.to_vec())
}

fn equals_op(
    cx: &mut Ctx,
    value: &serde_json::Value,
    params: Option<&[String]>,
    path: FieldPath,
) -> Option<RuleOp> {
    match value {
        serde_json::Value::String(s) => {
            check_template(cx, s, params, TemplateUse::RuleValue, &path)
        }
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
        _ => {
            cx.err(
                path,
                "expected a string, number or boolean (use `any_of`/`all_of` for lists)",
            );
            return None;
        }
    }
    Some(RuleOp::Equals(value.clone()))
}

fn forward(
    cx: &mut Ctx,
    raw: Option<&RawForward>,
    params: Option<&[String]>,
    auth: AuthMode,
    path: FieldPath,
) -> ForwardConfig {
    let token = cx.choice(
        &raw.and_then(|f| f.token.clone()),
        path.key("token"),
        &[("strip", TokenForward::Strip), ("keep", TokenForward::Keep)],
        TokenForward::Strip,
    );
    let mut headers: Vec<(http::HeaderName, String)> = Vec::new();
    let entries = raw
        .and_then(|f| f.headers.as_ref())
        .map(|h| h.0.as_slice())
        .unwrap_or(&[]);
    for (name, template) in entries {
        let p = path.key("headers").key(name);
        let header = match forward_header_name(name) {
            Ok(h) => h,
            Err(msg) => {
                cx.err(p, msg);
                continue;
            }
        };
        if headers.iter().any(|(h, _)| *h == header) {
            cx.err(
                p,
                "this header is listed twice (names are case-insensitive)",
            );
            continue;
        }
        if http::HeaderValue::from_str(template).is_err() {
            cx.err(
                p.clone(),
                "not a valid header value (control characters or non-ASCII text)",
            );
        }
        check_template(cx, template, params, TemplateUse::Header(auth), &p);
        headers.push((header, template.clone()));
    }
    ForwardConfig { headers, token }
}

fn session(cx: &mut Ctx, raw: Option<&RawSession>, path: FieldPath) -> SessionConfig {
    let idle_timeout = raw.and_then(|s| cx.opt_duration(&s.idle_timeout, path.key("idle_timeout")));
    if idle_timeout.is_some_and(|d| d.is_zero()) {
        cx.err(
            path.key("idle_timeout"),
            "must be longer than 0; remove the key for no idle timeout",
        );
    }
    let max_message_size = match raw {
        Some(s) => cx.size(
            &s.max_message_size,
            path.key("max_message_size"),
            DEFAULT_MAX_MESSAGE_SIZE,
        ),
        None => DEFAULT_MAX_MESSAGE_SIZE,
    };
    if max_message_size == 0 {
        cx.err(path.key("max_message_size"), "must be at least 1 byte");
    }
    let ping_interval = raw
        .and_then(|s| cx.opt_duration(&s.ping_interval, path.key("ping_interval")))
        .unwrap_or(DEFAULT_PING_INTERVAL);
    let ping_timeout = raw
        .and_then(|s| cx.opt_duration(&s.ping_timeout, path.key("ping_timeout")))
        .unwrap_or(DEFAULT_PING_TIMEOUT);
    if ping_timeout.is_zero() {
        cx.err(
            path.key("ping_timeout"),
            "must be longer than 0; set ping_interval: 0 to disable keepalive pings",
        );
    }
    SessionConfig {
        close_on_expiry: raw.and_then(|s| s.close_on_expiry).unwrap_or(true),
        refresh: raw.and_then(|s| s.refresh).unwrap_or(false),
        idle_timeout,
        max_message_size,
        ping_interval: (!ping_interval.is_zero()).then_some(ping_interval),
        ping_timeout,
    }
}

/// Contract, "Lifecycle": keepalive defaults.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);

fn route_limits(cx: &mut Ctx, raw: Option<&RawRouteLimits>, path: FieldPath) -> RouteLimits {
    let scope = cx.choice(
        &raw.and_then(|l| l.scope.clone()),
        path.key("scope"),
        &[("node", LimitScope::Node), ("cluster", LimitScope::Cluster)],
        LimitScope::Node,
    );
    let Some(raw) = raw else {
        return RouteLimits::default();
    };
    let per_subject = raw
        .max_sessions_per_subject
        .and_then(|n| match u32::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                cx.err(
                    path.key("max_sessions_per_subject"),
                    "must be from 1 to 4294967295; remove the key for no limit",
                );
                None
            }
        });
    let max_sessions = raw.max_sessions.and_then(|n| match usize::try_from(n) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            cx.err(
                path.key("max_sessions"),
                "must be at least 1; remove the key for no per-route limit",
            );
            None
        }
    });
    RouteLimits {
        max_sessions_per_subject: per_subject,
        max_sessions,
        scope,
    }
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
fn forward_header_name(name: &str) -> Result<HeaderName, String> {
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
fn check_origin(origin: &str) -> Result<(), String> {
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
    fn forward_header_names() {
        assert_eq!(
            forward_header_name("X-User-Id").map(|h| h.to_string()),
            Ok("x-user-id".into())
        );
        assert!(forward_header_name("Host").is_err());
        assert!(forward_header_name("Sec-WebSocket-Protocol").is_err());
        assert!(forward_header_name("bad header").is_err());
    }

    #[test]
    fn origins() {
        assert!(check_origin("https://app.example.com").is_ok());
        assert!(check_origin("http://localhost:3000").is_ok());
        assert!(check_origin("null").is_ok());
        assert!(check_origin("https://app.example.com/").is_err());
        assert!(check_origin("app.example.com").is_err());
    }
}
