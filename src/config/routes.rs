//! `routes:` validation: patterns, upstreams, rules and templates, each checked
//! against the route's own path parameters and the declared issuers.

use std::collections::HashSet;

use super::error::FieldPath;
use super::files;
use super::model::*;
use super::patterns::{
    check_host_pattern, check_origin, forward_header_name, is_claim_path, parse_upstream_url,
    path_params, placeholders,
};
use super::raw::*;
use super::validate::{token_sources, Ctx};

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
    let host = raw.host.as_ref().and_then(|h| {
        let h = h.trim().to_ascii_lowercase();
        match check_host_pattern(&h) {
            Ok(()) => Some(Some(h)),
            Err(msg) => {
                cx.err(path.key("host"), msg);
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
    let params = pattern.and_then(|p| match path_params(p) {
        Ok(params) => Some(params),
        Err(msg) => {
            cx.err(path.key("path"), msg);
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
        forward,
        session,
        limits,
    })
}

/// Every `{name}` in `template` must be a parameter of the route's path.
fn check_params(cx: &mut Ctx, template: &str, params: Option<&[String]>, path: &FieldPath) {
    match placeholders(template) {
        Err(msg) => cx.err(path.clone(), msg),
        Ok(names) => {
            let Some(params) = params else { return };
            for name in names {
                if !params.iter().any(|p| p == name) {
                    cx.err(path.clone(), unknown_param(name, params));
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

fn upstream(
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
    let balance = cx.choice(
        &long.balance,
        path.key("balance"),
        &[
            ("round_robin", Balance::RoundRobin),
            ("least_connections", Balance::LeastConnections),
        ],
        Balance::RoundRobin,
    );
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
        .map(|ca| cx.file(ca, path.key("ca"), files::check_cert_chain));
    if let Some(rewrite) = &long.path {
        if !rewrite.starts_with('/') {
            cx.err(path.key("path"), "must start with `/`");
        }
        check_params(cx, rewrite, params, &path.key("path"));
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
        check_params(cx, value, params, &path.index(i));
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
        serde_json::Value::String(s) => check_params(cx, s, params, &path),
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
        match placeholders(template) {
            Err(msg) => cx.err(p.clone(), msg),
            Ok(names) => {
                for name in names {
                    if let Some(claim) = name.strip_prefix("claims.") {
                        if !is_claim_path(claim) {
                            cx.err(
                                p.clone(),
                                "expected `{claims.a.b}` with a dotted claim path",
                            );
                        } else if auth == AuthMode::None {
                            cx.err(
                                p.clone(),
                                "`{claims...}` needs a token, but this route has `auth: none`",
                            );
                        }
                    } else if let Some(params) = params {
                        if !params.iter().any(|x| x == name) {
                            let msg = format!(
                                "{}; use `{{claims.NAME}}` for a claim",
                                unknown_param(name, params)
                            );
                            cx.err(p.clone(), msg);
                        }
                    }
                }
            }
        }
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
    SessionConfig {
        close_on_expiry: raw.and_then(|s| s.close_on_expiry).unwrap_or(true),
        refresh: raw.and_then(|s| s.refresh).unwrap_or(false),
        idle_timeout,
        max_message_size,
    }
}

fn route_limits(cx: &mut Ctx, raw: Option<&RawRouteLimits>, path: FieldPath) -> RouteLimits {
    let scope = cx.choice(
        &raw.and_then(|l| l.scope.clone()),
        path.key("scope"),
        &[("node", LimitScope::Node), ("cluster", LimitScope::Cluster)],
        LimitScope::Node,
    );
    let Some(n) = raw.and_then(|l| l.max_sessions_per_subject) else {
        return RouteLimits {
            max_sessions_per_subject: None,
            scope,
        };
    };
    match u32::try_from(n) {
        Ok(n) if n > 0 => RouteLimits {
            max_sessions_per_subject: Some(n),
            scope,
        },
        _ => {
            cx.err(
                path.key("max_sessions_per_subject"),
                "must be from 1 to 4294967295; remove the key for no limit",
            );
            RouteLimits::default()
        }
    }
}
