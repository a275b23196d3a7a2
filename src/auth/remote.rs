//! Remote key sets (`jwks_url`, OIDC `discovery`): fetched in the background,
//! cached, refreshed on the provider's `Cache-Control: max-age` (clamped), and
//! refetched when a token names an unknown `kid`.
//!
//! The unknown-kid refetch is the dangerous path: anyone can send tokens with
//! random kids. So refetches are serialised behind one lock (concurrent callers
//! share the fetch in flight) and happen at most once per
//! the issuer's `refetch_interval`. A failed fetch or a document with no
//! usable key never replaces the last good set.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fetch::{self, FetchError, Fetcher};
use super::keys::KeySet;
use super::status::FetchLog;
use super::AuthSetupError;
use crate::config::{IssuerConfig, KeySource};

/// Timing and size knobs; tests shorten them. (The unknown-kid refetch
/// interval is the issuer's `refetch_interval`.)
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Refresh period when the provider sends no `max-age`.
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// First retry delay after a failed fetch; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub fetch_timeout: Duration,
    pub max_body: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(5 * 60),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(120),
            fetch_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
        }
    }
}

/// Where the set comes from.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Jwks(String),
    /// The issuer URL; the document is at `/.well-known/openid-configuration`.
    Discovery(String),
}

/// One issuer's remote key set.
pub struct RemoteKeys {
    issuer_id: String,
    endpoint: Endpoint,
    fetcher: Fetcher,
    tuning: Tuning,
    /// At most one unknown-kid refetch per this long (`refetch_interval`).
    min_refetch: Duration,
    current: ArcSwapOption<KeySet>,
    /// The `jwks_uri` found by discovery, reused until a fetch from it fails.
    discovered: parking_lot::Mutex<Option<String>>,
    /// Held for the whole of a fetch; holds the time of the last attempt.
    fetch_lock: tokio::sync::Mutex<Option<Instant>>,
    /// Counts attempts, so a caller that waited on the lock can tell that a
    /// fetch happened meanwhile and need not start another.
    attempts: AtomicU64,
    /// Outcomes and schedule, for the admin API and the metrics.
    log: FetchLog,
}

impl RemoteKeys {
    pub fn new(
        issuer_id: String,
        endpoint: Endpoint,
        fetcher: Fetcher,
        tuning: Tuning,
        min_refetch: Duration,
    ) -> Self {
        Self {
            issuer_id,
            endpoint,
            fetcher,
            tuning,
            min_refetch,
            current: ArcSwapOption::empty(),
            discovered: parking_lot::Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
            log: FetchLog::default(),
        }
    }

    /// How fetching this set goes.
    pub fn log(&self) -> &FetchLog {
        &self.log
    }

    /// The last good set, if any fetch ever succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Called when a token names a kid (or alg) the current set cannot serve.
    /// Waits for a fetch already in flight, or starts one unless one was
    /// attempted less than `min_refetch` ago. The caller looks up again after.
    pub async fn refetch_for_unknown_kid(&self) {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last = self.fetch_lock.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        self.attempts.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.fetch_once().await {
            tracing::warn!(issuer = %self.issuer_id, error = %e, "key set refetch failed; keeping the last good set");
        }
    }

    /// The background refresher: fetches at once, then on the provider's
    /// schedule, with backoff after failures, until `cancel` fires.
    /// `first_done` is signalled after the first attempt, whatever its outcome.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        first_done: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut backoff = self.tuning.retry_min;
        let mut first_done = Some(first_done);
        loop {
            let attempt = async {
                let mut last = self.fetch_lock.lock().await;
                *last = Some(Instant::now());
                self.attempts.fetch_add(1, Ordering::AcqRel);
                self.fetch_once().await
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = attempt => result,
            };
            if let Some(tx) = first_done.take() {
                let _ = tx.send(());
            }
            let next = match result {
                Ok(ttl) => {
                    backoff = self.tuning.retry_min;
                    ttl
                }
                Err(e) => {
                    let has_keys = self.current.load().is_some();
                    tracing::warn!(issuer = %self.issuer_id, error = %e, has_keys, retry_in = ?backoff, "key set fetch failed");
                    let delay = backoff;
                    backoff = (backoff * 2).min(self.tuning.retry_max);
                    delay
                }
            };
            self.log
                .scheduled(super::unix_now().saturating_add(next.as_secs() as i64));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// One fetch, logged; stores the set on success and returns when to refresh.
    async fn fetch_once(&self) -> Result<Duration, FetchError> {
        let result = self.fetch_set().await;
        match &result {
            Ok(_) => self.log.succeeded(super::unix_now()),
            Err(e) => self.log.failed(super::unix_now(), e),
        }
        result
    }

    async fn fetch_set(&self) -> Result<Duration, FetchError> {
        let url = self.jwks_url().await?;
        let fetched = match self.fetcher.get(&url).await {
            Ok(f) => f,
            Err(e) => {
                // The provider may have moved its keys: discover again next time.
                self.discovered.lock().take();
                return Err(e);
            }
        };
        let set = KeySet::from_jwks_json(&fetched.body, false)
            .map_err(|e| FetchError::Document(e.to_string()))?;
        tracing::info!(issuer = %self.issuer_id, keys = set.len(), "key set loaded");
        self.current.store(Some(Arc::new(set)));
        let ttl = fetched
            .max_age
            .unwrap_or(self.tuning.default_ttl)
            .clamp(self.tuning.min_ttl, self.tuning.max_ttl);
        Ok(ttl)
    }

    async fn jwks_url(&self) -> Result<String, FetchError> {
        let issuer = match &self.endpoint {
            Endpoint::Jwks(url) => return Ok(url.clone()),
            Endpoint::Discovery(issuer) => issuer,
        };
        if let Some(url) = self.discovered.lock().clone() {
            return Ok(url);
        }
        let doc_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.fetcher.get(&doc_url).await?;
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: String,
        }
        let parsed: Discovery = serde_json::from_slice(&doc.body)
            .map_err(|_| FetchError::Document("discovery document without jwks_uri".into()))?;
        // OIDC requires the document to name the issuer it was fetched for; a
        // mismatch means a misrouted or spoofed document.
        if parsed
            .issuer
            .as_deref()
            .is_some_and(|i| i.trim_end_matches('/') != issuer.trim_end_matches('/'))
        {
            return Err(FetchError::Document(
                "discovery document names another issuer".into(),
            ));
        }
        // The document is trusted as far as its transport: the same https /
        // loopback-only rule applies to the URL it points at.
        super::fetch::check_url(&parsed.jwks_uri)?;
        *self.discovered.lock() = Some(parsed.jwks_uri.clone());
        Ok(parsed.jwks_uri)
    }
}

// === setup from the config ===

pub fn endpoint(cfg: &IssuerConfig) -> Result<Endpoint, AuthSetupError> {
    let remote_err = |reason: String| AuthSetupError::Remote {
        issuer: cfg.id.clone(),
        reason,
    };
    let endpoint = match &cfg.keys {
        KeySource::JwksUrl(url) => Endpoint::Jwks(url.clone()),
        KeySource::Discovery => match &cfg.issuer {
            Some(issuer) => Endpoint::Discovery(issuer.clone()),
            None => return Err(remote_err("discovery needs `issuer`".into())),
        },
        KeySource::Secret(_) | KeySource::PublicKey(_) | KeySource::JwksFile(_) => {
            return Err(remote_err("not a remote key source".into()))
        }
    };
    let url = match &endpoint {
        Endpoint::Jwks(url) | Endpoint::Discovery(url) => url,
    };
    fetch::check_url(url).map_err(|e| remote_err(format!("{url}: {e}")))?;
    Ok(endpoint)
}

/// Trust for fetching key sets: the issuer's `ca`, else the system roots
/// (loaded once per [`Authenticator`], only if some issuer needs them).
pub fn tls_config(
    cfg: &IssuerConfig,
    native: &mut Option<Arc<rustls::RootCertStore>>,
) -> Result<Arc<rustls::ClientConfig>, AuthSetupError> {
    let roots = match &cfg.ca {
        Some(path) => Arc::new(load_ca(&cfg.id, path)?),
        None => native
            .get_or_insert_with(|| {
                let loaded = rustls_native_certs::load_native_certs();
                let mut store = rustls::RootCertStore::empty();
                store.add_parsable_certificates(loaded.certs);
                Arc::new(store)
            })
            .clone(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AuthSetupError::Remote {
            issuer: cfg.id.clone(),
            reason: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_ca(issuer: &str, path: &Path) -> Result<rustls::RootCertStore, AuthSetupError> {
    let err = |reason: String| AuthSetupError::Ca {
        issuer: issuer.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    // The TLS module's reader, so a CA file is read the same way everywhere.
    let mut store = rustls::RootCertStore::empty();
    for cert in crate::tls::load_certs(path).map_err(|e| err(e.to_string()))? {
        store.add(cert).map_err(|e| err(e.to_string()))?;
    }
    Ok(store)
}
