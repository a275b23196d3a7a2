//! `GET /admin/sessions` and `DELETE /admin/sessions/{id}`.
//!
//! On a cluster (`store: redis`) both reach every live node: the list holds
//! each node's sessions with `node`, ids are `<node>:<n>`, and a DELETE is
//! carried to the node holding the session. Without Redis in reach, the
//! list is this node's and the answer says so (`X-Wsgate-Partial`).
//!
//! Extension: `?node=`, `?route=`, `?iss=`, `?sub=` keep only the matching
//! sessions (each node filters its own, so a large cluster answers with
//! what was asked for, not with everything).

use http::{HeaderValue, Response, StatusCode};

use super::{json, text, Body};
use crate::cluster::control::{session_json, Filter};
use crate::gateway::Gateway;
use crate::session::CloseReason;

/// The filter a query string asks for; other parameters are ignored.
fn filter(query: Option<&str>) -> Filter {
    let mut f = Filter::default();
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "node" => f.node = Some(v),
            "route" => f.route = Some(v),
            "iss" => f.iss = Some(v),
            "sub" => f.sub = Some(v),
            _ => {}
        }
    }
    f
}

pub async fn list(gw: &Gateway, query: Option<&str>) -> Response<Body> {
    let filter = filter(query);
    let Some(cluster) = &gw.cluster else {
        let mut all = gw.registry.all();
        all.retain(|s| filter.matches(s) && filter.node.is_none());
        all.sort_by_key(|s| s.id);
        let items = all.iter().map(|s| session_json(s, None)).collect();
        return json(StatusCode::OK, &serde_json::Value::Array(items));
    };
    match cluster.list(filter.clone()).await {
        Ok(items) => json(StatusCode::OK, &serde_json::Value::Array(items)),
        Err(e) => {
            tracing::warn!(error = %e, "cluster session list unavailable; answering with this node's sessions");
            let mut all = gw.registry.all();
            all.retain(|s| {
                filter.matches(s) && filter.node.as_deref().is_none_or(|n| n == cluster.node())
            });
            all.sort_by_key(|s| s.id);
            let items = all
                .iter()
                .map(|s| session_json(s, Some(cluster.node())))
                .collect();
            let mut r = json(StatusCode::OK, &serde_json::Value::Array(items));
            r.headers_mut().insert(
                "x-wsgate-partial",
                HeaderValue::from_static("redis unreachable: this node's sessions only"),
            );
            r
        }
    }
}

pub async fn kill(gw: &Gateway, id: &str) -> Response<Body> {
    // `<node>:<n>` names a node; a bare number is a session of this node.
    let (node, n) = match id.rsplit_once(':') {
        Some((node, n)) => (Some(node), n),
        None => (None, id),
    };
    let Ok(n) = n.parse::<u64>() else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    let killed = match (node, &gw.cluster) {
        (Some(node), Some(cluster)) => match cluster.kill(node, n).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "session kill not carried to its node");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis unreachable: the session's node cannot be told",
                );
            }
        },
        (Some(_), None) => false,
        (None, _) => gw.registry.kill(n, CloseReason::Terminated),
    };
    if killed {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        text(StatusCode::NOT_FOUND, "no such session")
    }
}
