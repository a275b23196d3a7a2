//! Prometheus metrics, named as in the CONTRACT. Labels are closed enums so a
//! typo cannot invent a new series; the hot path holds pre-resolved handles
//! (see [`SessionMetrics`]) so a read's worth of relayed frames costs two
//! atomic adds.

pub mod history;
pub mod process;
pub mod scrape;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `outcome` label of `wsgate_handshakes_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    unauthorized,
    forbidden,
    not_found,
    rate_limited,
    upstream_error,
    bad_request,
}

/// `direction` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    to_upstream,
    to_client,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    route: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    route: String,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    /// `refused`, `unreachable`, `timeout`, `tls`, `status`, `protocol`.
    kind: &'static str,
}

fn connect_histogram() -> Histogram {
    // 500µs .. ~16s: a loopback upstream up to a connect timeout.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn handshake_histogram() -> Histogram {
    // 100µs .. ~6.5s: covers a cached-token handshake and a slow upstream.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// All metrics of one gateway process.
pub struct Metrics {
    registry: Registry,
    sessions_active: Family<RouteLabel, Gauge>,
    handshakes: Family<OutcomeLabels, Counter>,
    messages: Family<DirectionLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    closes: Family<CloseLabels, Counter>,
    handshake_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    worker_tasks: Family<WorkerLabel, Gauge>,
    /// The last minutes of outcomes and closes, for the admin page.
    pub history: history::History,
    reloads: Family<ReloadLabel, Counter>,
    upstream_connect: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pending: Gauge,
    pings: Family<RouteLabel, Counter>,
    scrape: scrape::ScrapeCollector,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sessions_active = Family::<RouteLabel, Gauge>::default();
        let handshakes = Family::<OutcomeLabels, Counter>::default();
        let messages = Family::<DirectionLabels, Counter>::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let closes = Family::<CloseLabels, Counter>::default();
        let handshake_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                handshake_histogram,
            );
        registry.register(
            "wsgate_sessions_active",
            "Proxied WebSocket sessions currently open",
            sessions_active.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "wsgate_handshakes",
            "WebSocket handshakes by outcome",
            handshakes.clone(),
        );
        registry.register(
            "wsgate_messages",
            "WebSocket messages relayed",
            messages.clone(),
        );
        registry.register(
            "wsgate_bytes",
            "WebSocket payload bytes relayed",
            bytes.clone(),
        );
        registry.register(
            "wsgate_session_closes",
            "Sessions ended, by reason",
            closes.clone(),
        );
        registry.register(
            "wsgate_handshake_duration_seconds",
            "Time from request to 101 (or refusal)",
            handshake_duration.clone(),
        );
        // Extension: how evenly connections spread over the I/O workers
        // (a connection never moves once placed).
        let worker_tasks = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "wsgate_worker_tasks",
            "Live tasks (connections and sessions) per I/O worker thread",
            worker_tasks.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "wsgate_build_info",
            "The running wsgate's version (value 1)",
            build_info,
        );
        let reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "wsgate_reloads",
            "Config reloads (SIGHUP or admin API) by outcome: ok, error",
            reloads.clone(),
        );
        let upstream_connect =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                connect_histogram,
            );
        registry.register(
            "wsgate_upstream_connect_duration_seconds",
            "Time to connect to the route's upstream and complete its WebSocket handshake",
            upstream_connect.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "wsgate_upstream_errors",
            "Failed upstream connections by route and kind",
            upstream_errors.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "wsgate_pending_connections",
            "Connections accepted that are not yet a session (TLS, HTTP head, handshake)",
            pending.clone(),
        );
        let pings = Family::<RouteLabel, Counter>::default();
        registry.register(
            "wsgate_pings",
            "Keepalive pings sent by the gateway",
            pings.clone(),
        );
        let scrape = scrape::ScrapeCollector::default();
        registry.register_collector(Box::new(scrape.clone()));
        Self {
            registry,
            sessions_active,
            handshakes,
            messages,
            bytes,
            closes,
            handshake_duration,
            worker_tasks,
            history: history::History::default(),
            reloads,
            upstream_connect,
            upstream_errors,
            pending,
            pings,
            scrape,
        }
    }

    /// Counts a reload attempt.
    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabel { outcome }).inc();
    }

    /// Records one upstream connection attempt of `route`: its duration,
    /// and on failure its kind.
    pub fn upstream_connect(&self, route: &str, seconds: f64, error: Option<&'static str>) {
        self.upstream_connect
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(seconds);
        if let Some(kind) = error {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    route: route.to_owned(),
                    kind,
                })
                .inc();
        }
    }

    /// Counts one keepalive ping sent on a session of `route`.
    pub fn ping_sent(&self, route: &str) {
        self.pings
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .inc();
    }

    /// Marks a connection as pending until the guard is dropped.
    pub fn pending(&self) -> PendingGuard {
        self.pending.inc();
        PendingGuard(self.pending.clone())
    }

    /// Hands over the scrape-time figures of the issuers.
    pub fn set_issuer_keys(&self, issuers: Vec<scrape::IssuerKeys>) {
        self.scrape.state.lock().issuers = issuers;
    }

    /// Records the hash of the config now in force.
    pub fn set_config_hash(&self, hash: String) {
        self.scrape.state.lock().config_hash = hash;
    }

    /// Sets `wsgate_worker_tasks` from a snapshot taken at scrape time.
    pub fn set_worker_tasks(&self, loads: &[usize]) {
        for (i, &n) in loads.iter().enumerate() {
            self.worker_tasks
                .get_or_create(&WorkerLabel { worker: i as u32 })
                .set(n as i64);
        }
    }

    /// Route label for requests that matched no route.
    pub const NO_ROUTE: &'static str = "";

    pub fn handshake(&self, route: &str, outcome: Outcome, seconds: f64) {
        self.history.handshake(history::unix_now(), outcome);
        self.handshakes
            .get_or_create(&OutcomeLabels {
                route: route.to_owned(),
                outcome,
            })
            .inc();
        self.handshake_duration
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn session_closed(&self, route: &str, reason: &'static str) {
        self.history.closed(history::unix_now(), reason);
        self.closes
            .get_or_create(&CloseLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// Handles for one session's hot path, resolved once at session start.
    /// The session counts in `wsgate_sessions_active` for as long as the
    /// returned value lives: the caller creates it before the client is told
    /// 101, so a client that holds a session always finds it counted.
    pub fn for_session(&self, route: &str) -> SessionMetrics {
        let dir = |direction| DirectionLabels {
            route: route.to_owned(),
            direction,
        };
        let active = self.sessions_active.get_or_create_owned(&RouteLabel {
            route: route.to_owned(),
        });
        active.inc();
        SessionMetrics {
            active,
            msgs_up: self
                .messages
                .get_or_create_owned(&dir(Direction::to_upstream)),
            msgs_down: self
                .messages
                .get_or_create_owned(&dir(Direction::to_client)),
            bytes_up: self.bytes.get_or_create_owned(&dir(Direction::to_upstream)),
            bytes_down: self.bytes.get_or_create_owned(&dir(Direction::to_client)),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Holds one count of `wsgate_pending_connections`.
pub struct PendingGuard(Gauge);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Pre-resolved counters for one session (each is an `Arc` to an atomic).
/// Not `Clone`: it holds one count of the active gauge, given back on drop.
pub struct SessionMetrics {
    active: Gauge,
    pub msgs_up: Counter,
    pub msgs_down: Counter,
    pub bytes_up: Counter,
    pub bytes_down: Counter,
}

impl Drop for SessionMetrics {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl SessionMetrics {
    /// Counts several messages at once (one read's worth).
    pub fn relayed_many(&self, direction: Direction, msgs: u64, bytes: u64) {
        let (m, b) = match direction {
            Direction::to_upstream => (&self.msgs_up, &self.bytes_up),
            Direction::to_client => (&self.msgs_down, &self.bytes_down),
        };
        m.inc_by(msgs);
        b.inc_by(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_metric_names_are_exposed() {
        let m = Metrics::new();
        m.handshake("chat", Outcome::ok, 0.01);
        m.session_closed("chat", "expired");
        let s = m.for_session("chat");
        s.relayed_many(Direction::to_client, 1, 10);
        m.set_worker_tasks(&[3, 7]);
        let text = m.encode();
        for name in [
            "wsgate_sessions_active{route=\"chat\"} 1",
            "wsgate_handshakes_total{route=\"chat\",outcome=\"ok\"} 1",
            "wsgate_messages_total{route=\"chat\",direction=\"to_client\"} 1",
            "wsgate_bytes_total{route=\"chat\",direction=\"to_client\"} 10",
            "wsgate_session_closes_total{route=\"chat\",reason=\"expired\"} 1",
            "wsgate_handshake_duration_seconds_count{route=\"chat\"} 1",
            "wsgate_worker_tasks{worker=\"1\"} 7",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        drop(s);
        assert!(m
            .encode()
            .contains("wsgate_sessions_active{route=\"chat\"} 0"));
    }
}
