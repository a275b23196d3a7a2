//! [`Gateway`]: the handles that connections, sessions, reloads and the admin
//! API share. It imports no pipeline stage, so every stage can depend on it
//! without depending on the wiring in [`crate::app`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::{Readiness, RedisDown};
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::pending::Pending;
use crate::revocation::{RevocationList, Revoker};
use crate::session::Registry;
use crate::snapshot::Snapshot;
use crate::tls::CertResolver;
use crate::workers::Workers;

/// State shared by every connection, session and the admin API.
pub struct Gateway {
    /// The config in force: routes, issuers and their keys. A reload swaps it.
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    /// Makes revocations, applies those from the store, runs its sync; owns
    /// the list every admission reads.
    pub revoker: Arc<Revoker>,
    /// Cancelled once the sessions are gone (or the grace has passed), as
    /// the last step of a shutdown: background work (key fetches,
    /// revocation sync) serves the draining sessions until then.
    pub shutdown: CancellationToken,
    /// The steps of a graceful shutdown (`/readyz` 503, sessions closing).
    pub drain: Drain,
    /// Connections accepted but not yet sessions (`limits.max_pending`).
    pub pending: Arc<Pending>,
    /// Every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// TLS certificate resolvers per listener, refilled on reload.
    pub cert_resolvers: Vec<Option<Arc<CertResolver>>>,
    /// The threads connections and sessions run on.
    pub workers: Workers,
    /// The replica set on the shared Redis (`store: redis` only).
    pub cluster: Option<Arc<Cluster>>,
    /// OpenTelemetry export, set once at start when the config has `tracing:`.
    pub tracer: std::sync::OnceLock<crate::telemetry::trace::Tracer>,
    listeners_up: AtomicBool,
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        snapshot: Snapshot,
        registry: Arc<Registry>,
        revoker: Arc<Revoker>,
        shutdown: CancellationToken,
        cert_resolvers: Vec<Option<Arc<CertResolver>>>,
        workers: Workers,
    ) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            metrics: Metrics::new(),
            revoker,
            shutdown,
            drain: Drain::default(),
            pending: Pending::new(),
            sessions: TaskTracker::new(),
            cert_resolvers,
            workers,
            cluster: None,
            tracer: std::sync::OnceLock::new(),
            listeners_up: AtomicBool::new(false),
        }
    }

    /// Joins the replica set on the shared Redis.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The revocations in force.
    pub fn revocations(&self) -> &RevocationList {
        self.revoker.list()
    }

    /// Marks the listeners as serving (or not, once shutdown begins).
    pub fn set_serving(&self, up: bool) {
        self.listeners_up.store(up, Ordering::Release);
    }

    /// `/readyz`: listeners up, not shutting down, every issuer has keys
    /// (`readyz: all_issuers`, the default) or at least one has
    /// (`any_issuer`), and Redis reachable when `cluster.on_redis_down:
    /// closed` makes it required.
    pub fn readiness(&self) -> (bool, String) {
        if self.drain.is_draining() || self.shutdown.is_cancelled() {
            return (false, "shutting down".to_owned());
        }
        if !self.listeners_up.load(Ordering::Acquire) {
            return (false, "listeners not serving".to_owned());
        }
        let snapshot = self.snapshot.load();
        let auth = &snapshot.auth;
        let missing = auth.issuers_without_keys();
        let enough = match snapshot.config.readyz {
            Readiness::AllIssuers => missing.is_empty(),
            Readiness::AnyIssuer => auth.issuer_count() == 0 || auth.issuers_with_keys() > 0,
        };
        if !enough {
            return (
                false,
                format!("issuers without keys: {}", missing.join(", ")),
            );
        }
        if let Some(c) = &self.cluster {
            if c.on_redis_down() == RedisDown::Closed && !c.redis_up() {
                return (
                    false,
                    "redis unreachable (required by cluster.on_redis_down: closed)".to_owned(),
                );
            }
        }
        (true, String::new())
    }
}
