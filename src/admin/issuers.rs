//! `GET /admin/issuers` (each issuer's keys and fetch status) and
//! `GET /admin/history` (the last minutes of handshake outcomes and closes).

use http::{Response, StatusCode};

use super::{json, Body};
use crate::gateway::Gateway;

pub fn list(gw: &Gateway) -> Response<Body> {
    let status = gw.snapshot.load().auth.status();
    match serde_json::to_value(&status) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => super::revocations::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub fn history(gw: &Gateway) -> Response<Body> {
    let view = gw.metrics.history.view(crate::metrics::history::unix_now());
    match serde_json::to_value(&view) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => super::revocations::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
