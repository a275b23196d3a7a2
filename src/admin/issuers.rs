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

/// Hands the issuers' key figures to the metrics, just before a scrape.
pub fn scrape_keys(gw: &Gateway) {
    let now = crate::session::unix_now();
    let keys = gw
        .snapshot
        .load()
        .auth
        .status()
        .into_iter()
        .map(|s| crate::metrics::scrape::IssuerKeys {
            key_age_seconds: s.loaded_at.map(|t| (now - t).max(0) as f64),
            fetches: s.fetches_ok.zip(s.fetches_failed),
            issuer: s.id,
        })
        .collect();
    gw.metrics.set_issuer_keys(keys);
}

pub fn history(gw: &Gateway) -> Response<Body> {
    let view = gw.metrics.history.view(crate::metrics::history::unix_now());
    match serde_json::to_value(&view) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => super::revocations::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
