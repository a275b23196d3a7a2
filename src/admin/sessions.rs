//! `GET /admin/sessions` and `DELETE /admin/sessions/{id}`.

use http::{Response, StatusCode};
use serde_json::json;

use super::{json, text, Body};
use crate::gateway::Gateway;
use crate::session::CloseReason;

pub fn list(gw: &Gateway) -> Response<Body> {
    let now = crate::session::unix_now();
    let mut all = gw.registry.all();
    all.sort_by_key(|s| s.id);
    let items: Vec<_> = all
        .iter()
        .map(|s| {
            let t = s.token();
            let t = t.as_deref();
            let [msgs_up, bytes_up, msgs_down, bytes_down] = s.tally.snapshot();
            json!({
                "id": s.id.to_string(),
                "route": &*s.route,
                "iss": t.and_then(|t| t.iss.clone()),
                "sub": t.and_then(|t| t.sub.clone()),
                "jti": t.and_then(|t| t.jti.clone()),
                "remote_addr": s.remote_addr.to_string(),
                "connected_at": s.connected_at,
                "expires_at": s.expires_at(),
                // Extensions for the admin page: derived times and live traffic.
                "issuer_id": t.map(|t| t.issuer_id.as_str()),
                "age_seconds": now - s.connected_at,
                "expires_in_seconds": s.expires_at().map(|e| e - now),
                "messages_to_upstream": msgs_up,
                "bytes_to_upstream": bytes_up,
                "messages_to_client": msgs_down,
                "bytes_to_client": bytes_down,
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::Value::Array(items))
}

pub fn kill(gw: &Gateway, id: &str) -> Response<Body> {
    let Ok(id) = id.parse::<u64>() else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    if gw.registry.kill(id, CloseReason::Terminated) {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        text(StatusCode::NOT_FOUND, "no such session")
    }
}
