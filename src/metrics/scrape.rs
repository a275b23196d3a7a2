//! Metrics whose values are read when Prometheus scrapes, not counted as
//! things happen: the process's resources, each issuer's key fetches and
//! key age (owned by the authenticator of the config in force, which a
//! reload replaces), and the hash of the config in force.
//!
//! The admin listener's `/metrics` handler puts the issuers' figures in
//! [`ScrapeState`] just before encoding; [`ScrapeCollector`] writes them
//! out. Both are per issuer, never per session, so a scrape costs the same
//! with ten sessions or a hundred thousand.

use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use sha2::{Digest as _, Sha256};

use super::process::ProcessStats;

/// Key figures of one issuer at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerKeys {
    pub issuer: String,
    /// Remote sets only: fetches so far, (succeeded, failed).
    pub fetches: Option<(u64, u64)>,
    /// Seconds since the key set in force was loaded, if there is one.
    pub key_age_seconds: Option<f64>,
}

/// What the `/metrics` handler hands over for one scrape.
#[derive(Debug, Default)]
pub struct ScrapeState {
    pub issuers: Vec<IssuerKeys>,
    /// Short SHA-256 of the config file in force.
    pub config_hash: String,
}

/// Writes [`ScrapeState`] and the process's resources at each scrape.
#[derive(Debug, Clone, Default)]
pub struct ScrapeCollector {
    pub state: Arc<Mutex<ScrapeState>>,
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = ProcessStats::read();
        if let Some(cpu) = p.cpu_seconds {
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(e)?;
        }
        if let Some(rss) = p.resident_bytes {
            let e = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(rss as i64).encode(e)?;
        }
        if let Some(fds) = p.open_fds {
            let e = encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(fds as i64).encode(e)?;
        }

        let state = self.state.lock();
        let mut e = encoder.encode_descriptor(
            "wsgate_key_fetches",
            "Fetches of remote key sets (jwks_url, discovery) by issuer and outcome",
            None,
            MetricType::Counter,
        )?;
        for i in &state.issuers {
            let Some((ok, failed)) = i.fetches else {
                continue;
            };
            for (outcome, n) in [("ok", ok), ("error", failed)] {
                let labels = [("issuer", i.issuer.as_str()), ("outcome", outcome)];
                ConstCounter::new(n).encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "wsgate_key_age_seconds",
            "Seconds since the issuer's key set in force was loaded or fetched",
            None,
            MetricType::Gauge,
        )?;
        for i in &state.issuers {
            if let Some(age) = i.key_age_seconds {
                let labels = [("issuer", i.issuer.as_str())];
                ConstGauge::new(age).encode(e.encode_family(&labels)?)?;
            }
        }
        if !state.config_hash.is_empty() {
            let mut e = encoder.encode_descriptor(
                "wsgate_config_info",
                "The config in force: a short SHA-256 of its file",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("hash", state.config_hash.as_str())];
            ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The first 12 hex digits of the SHA-256 of `bytes`: enough to tell two
/// configs apart on a dashboard, short enough for a label.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(12);
    for b in &digest[..6] {
        let _ = write!(out, "{b:02x}");
    }
    out
}
