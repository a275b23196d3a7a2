//! What the admin API and the metrics show of each issuer's keys: the kids
//! in force, when the set was loaded and, for remote sets, how fetching
//! goes (last attempt, last error, next refresh, counts by outcome).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use super::{Authenticator, IssuerKeys};

/// Fetch history of one remote key set.
#[derive(Debug, Default)]
pub struct FetchLog {
    state: Mutex<FetchState>,
    ok: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct FetchState {
    /// Unix seconds of the last attempt, successful or not.
    pub last_attempt: Option<i64>,
    /// Unix seconds at which the set in force was fetched.
    pub loaded_at: Option<i64>,
    /// The last attempt's error, cleared by a success.
    pub last_error: Option<String>,
    /// Unix seconds of the next scheduled refresh.
    pub next_refresh: Option<i64>,
}

impl FetchLog {
    pub fn succeeded(&self, now: i64) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock();
        s.last_attempt = Some(now);
        s.loaded_at = Some(now);
        s.last_error = None;
    }

    pub fn failed(&self, now: i64, error: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock();
        s.last_attempt = Some(now);
        s.last_error = Some(error.to_string());
    }

    pub fn scheduled(&self, at: i64) {
        self.state.lock().next_refresh = Some(at);
    }

    pub fn state(&self) -> FetchState {
        self.state.lock().clone()
    }

    /// Fetches so far: (succeeded, failed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// One issuer as `GET /admin/issuers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IssuerStatus {
    pub id: String,
    pub issuer: Option<String>,
    /// `local` (secret, PEM, JWKS file), `jwks_url` or `discovery`.
    pub source: &'static str,
    /// The `kid` of each key in force (`null` for a key without one).
    pub kids: Vec<Option<String>>,
    /// Unix seconds at which the set in force was loaded, if there is one.
    pub loaded_at: Option<i64>,
    /// Remote sets only.
    #[serde(flatten)]
    pub fetch: Option<FetchState>,
    /// Remote sets only: fetches so far by outcome.
    pub fetches_ok: Option<u64>,
    pub fetches_failed: Option<u64>,
}

impl Authenticator {
    /// The key status of every issuer, in config order.
    pub fn status(&self) -> Vec<IssuerStatus> {
        self.issuers
            .iter()
            .map(|e| {
                let kids = e.keys.snapshot().map(|set| set.kids()).unwrap_or_default();
                let (source, loaded_at, fetch, counts) = match &e.keys {
                    IssuerKeys::Local(_) => ("local", Some(self.built_at), None, None),
                    IssuerKeys::Remote(r) => {
                        let state = r.keys.log().state();
                        let source = match r.origin.endpoint {
                            super::remote::Endpoint::Discovery(_) => "discovery",
                            super::remote::Endpoint::Jwks(_) => "jwks_url",
                        };
                        (
                            source,
                            state.loaded_at,
                            Some(state),
                            Some(r.keys.log().counts()),
                        )
                    }
                };
                IssuerStatus {
                    id: e.policy.id.clone(),
                    issuer: e.policy.issuer.clone(),
                    source,
                    kids,
                    loaded_at,
                    fetch,
                    fetches_ok: counts.map(|c| c.0),
                    fetches_failed: counts.map(|c| c.1),
                }
            })
            .collect()
    }
}
