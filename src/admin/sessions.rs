//! `GET /admin/sessions` and `DELETE /admin/sessions/{id}`.
//!
//! On a cluster (`store: redis`) both reach every live node: the list holds
//! each node's sessions with `node`, ids are `<node>:<n>`, and a DELETE is
//! carried to the node holding the session. Without Redis in reach, the
//! list is this node's and the answer says so (`X-Wsgate-Partial`).

use http::{HeaderValue, Response, StatusCode};

use super::{json, text, Body};
use crate::cluster::control::session_json;
use crate::gateway::Gateway;
use crate::session::CloseReason;

pub async fn list(gw: &Gateway) -> Response<Body> {
    let Some(cluster) = &gw.cluster else {
        let mut all = gw.registry.all();
        all.sort_by_key(|s| s.id);
        let items = all.iter().map(|s| session_json(s, None)).collect();
        return json(StatusCode::OK, &serde_json::Value::Array(items));
    };
    match cluster.list().await {
        Ok(items) => json(StatusCode::OK, &serde_json::Value::Array(items)),
        Err(e) => {
            tracing::warn!(error = %e, "cluster session list unavailable; answering with this node's sessions");
            let mut all = gw.registry.all();
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
