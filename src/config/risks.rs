//! Checks that look at more than one section: settings each valid alone that
//! open a hole together (an error), and risky defaults `check` points out
//! without refusing them (warnings).

use super::error::FieldPath;
use super::model::*;
use super::raw::{RawConfig, RawTokenSource};
use super::validate::Ctx;
use super::variants;

/// A browser sends cookies with a cross-site WebSocket handshake, and a
/// WebSocket is not covered by CORS: without an `origins` list, any page the
/// user visits can open a session with the user's cookie (cross-site
/// WebSocket hijacking). So a route that reads a token from a cookie, by its
/// own `token_sources` or by the global list it inherits, must name the
/// pages allowed to connect.
pub(crate) fn cookie_needs_origins(cx: &mut Ctx, raw: &RawConfig, global: &[TokenSource]) {
    let global_cookie = global.iter().any(|s| matches!(s, TokenSource::Cookie(_)));
    for (i, route) in raw.routes.iter().flatten().enumerate() {
        if route.auth.as_deref() == Some("none") || route.origins.is_some() {
            continue;
        }
        let path = FieldPath::root().key("routes").index(i);
        let (cookie, at, whose) = match &route.token_sources {
            Some(list) => {
                let cookie = list
                    .iter()
                    .position(|s| matches!(s, RawTokenSource::Keyed(k) if k.cookie.is_some()));
                (
                    cookie.is_some(),
                    match cookie {
                        Some(j) => path.key("token_sources").index(j),
                        None => path.clone(),
                    },
                    "its `token_sources`",
                )
            }
            None => (global_cookie, path.clone(), "the global `token_sources`"),
        };
        if cookie {
            cx.err(at, format!("this route reads the token from a cookie ({whose}) but has no `origins`: any web page a user visits could open a session with the user's cookie (cross-site WebSocket hijacking); add `origins: [\"https://app.example.com\"]` listing the pages allowed to connect"));
        }
    }
}

/// Risky but valid settings, on a config that passed every check.
pub(crate) fn warnings(cx: &mut Ctx, config: &Config) {
    let root = FieldPath::root();
    let takes_tokens = config.routes.iter().any(|r| r.auth == AuthMode::Required);
    for (i, l) in config.listeners.iter().enumerate() {
        if l.tls.is_none() && !l.bind.ip().is_loopback() && takes_tokens {
            cx.warn(
                root.key("listeners").index(i).key("bind"),
                "a plaintext listener reachable from other machines: tokens cross the network in clear; add `tls:`, or ignore this when a TLS load balancer in front is the only client",
            );
        }
    }
    let query_sources = |sources: &[TokenSource]| {
        sources
            .iter()
            .position(|s| matches!(s, TokenSource::Query(_)))
    };
    if let Some(j) = query_sources(&config.token_sources) {
        cx.warn(root.key("token_sources").index(j), QUERY_TOKEN);
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(j) = r.token_sources.as_deref().and_then(query_sources) {
            cx.warn(
                root.key("routes").index(i).key("token_sources").index(j),
                QUERY_TOKEN,
            );
        }
    }
    if config.revocation == RevocationConfig::Memory {
        cx.warn(
            root.key("revocation").key("store"),
            "revocations are kept in memory only: a restart forgets them and revoked tokens are accepted again until they expire; use `store: file` or `store: redis`",
        );
    }
    variants::warn_skipped_rules(cx, config);
}

const QUERY_TOKEN: &str = "a token in the query string is written to the access logs of every proxy and load balancer in front, and to browser history; prefer `header`, `subprotocol` or `first_message`";
