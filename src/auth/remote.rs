//! Remote key sets (`jwks_url`, OIDC `discovery`): fetched in the background,
//! cached, refreshed on the provider's `Cache-Control: max-age` (clamped), and
//! refetched when a token names an unknown `kid`.
//!
//! The unknown-kid refetch is the dangerous path: anyone can send tokens with
//! random kids. So refetches are serialised behind one lock (concurrent callers
//! share the fetch in flight) and happen at most once per
//! the issuer's `refetch_interval`. A failed fetch or a document with no
//! usable key never replaces the last good set.
//!
//! What was fetched (the keys, the fetch history, the refresh schedule, the
//! lock and the rate limit) lives in a [`KeyState`] apart from the settings
//! it was fetched with, so that a reload that changes only how an issuer's
//! keys are fetched hands the state to a [`RemoteKeys::successor`] instead of
//! starting from nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::pki_types::CertificateDer;
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

/// Where the set comes from: the key source. Two sets with equal endpoints
/// serve the same keys, whatever the other settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Jwks(String),
    /// The issuer URL; the document is at `/.well-known/openid-configuration`.
    Discovery(String),
}

/// One issuer's remote key set: the settings of one config generation around
/// the [`KeyState`] that generations of one key source share.
pub struct RemoteKeys {
    issuer_id: String,
    endpoint: Endpoint,
    fetcher: Fetcher,
    tuning: Tuning,
    /// At most one unknown-kid refetch per this long (`refetch_interval`).
    min_refetch: Duration,
    state: Arc<KeyState>,
}

/// What one issuer's key source has yielded so far; it outlives a change of
/// the settings it is fetched with (see [`RemoteKeys::successor`]).
#[derive(Default)]
pub struct KeyState {
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
    /// The background refresher's plan, which a successor's refresher
    /// resumes instead of fetching at once.
    schedule: parking_lot::Mutex<Schedule>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Schedule {
    /// When the refresher means to fetch next.
    next: Option<Instant>,
    /// The retry delay after the next failure (doubles while fetches fail).
    backoff: Option<Duration>,
}

/// How a refresher begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Fetch at once (a new set, or new transport settings to try).
    Now,
    /// Keep the schedule the previous refresher of this state left, if the
    /// state has keys; otherwise fetch at once.
    Resume,
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
            state: Arc::default(),
        }
    }

    /// The same key source fetched with other settings: the new set starts
    /// with this one's keys, fetch history, schedule and rate limit. The
    /// caller stops this set's refresher, so that one issuer never has two.
    pub fn successor(&self, fetcher: Fetcher, tuning: Tuning, min_refetch: Duration) -> Self {
        Self {
            issuer_id: self.issuer_id.clone(),
            endpoint: self.endpoint.clone(),
            fetcher,
            tuning,
            min_refetch,
            state: Arc::clone(&self.state),
        }
    }

    /// How fetching this set goes.
    pub fn log(&self) -> &FetchLog {
        &self.state.log
    }

    /// The last good set, if any fetch ever succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.state.current.load_full()
    }

    /// Called when a token names a kid (or alg) the current set cannot serve.
    /// Waits for a fetch already in flight, or starts one unless one was
    /// attempted less than `min_refetch` ago. The caller looks up again after.
    pub async fn refetch_for_unknown_kid(&self) {
        let seen = self.state.attempts.load(Ordering::Acquire);
        let mut last = self.state.fetch_lock.lock().await;
        if self.state.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        self.state.attempts.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.fetch_once().await {
            tracing::warn!(issuer = %self.issuer_id, error = %e, "key set refetch failed; keeping the last good set");
        }
    }

    /// The background refresher: fetches at once (or, with [`Start::Resume`],
    /// when the previous refresher of this state meant to), then on the
    /// provider's schedule, with backoff after failures, until `cancel` fires.
    /// `first_done` is signalled after the first attempt, whatever its
    /// outcome, or at once when resuming a schedule.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        first_done: tokio::sync::oneshot::Sender<()>,
        start: Start,
    ) {
        let inherited = *self.state.schedule.lock();
        let mut backoff = inherited.backoff.unwrap_or(self.tuning.retry_min);
        let mut first_done = Some(first_done);
        // A resumed schedule is only worth keeping while there are keys to
        // serve meanwhile; without them the new settings may be what was
        // missing, so try them now.
        let resume_at = inherited
            .next
            .filter(|_| start == Start::Resume && self.current().is_some());
        if let Some(at) = resume_at {
            if let Some(tx) = first_done.take() {
                let _ = tx.send(());
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        loop {
            let attempt = async {
                let mut last = self.state.fetch_lock.lock().await;
                *last = Some(Instant::now());
                self.state.attempts.fetch_add(1, Ordering::AcqRel);
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
                    let has_keys = self.current().is_some();
                    tracing::warn!(issuer = %self.issuer_id, error = %e, has_keys, retry_in = ?backoff, "key set fetch failed");
                    let delay = backoff;
                    backoff = (backoff * 2).min(self.tuning.retry_max);
                    delay
                }
            };
            let at = Instant::now() + next;
            *self.state.schedule.lock() = Schedule {
                next: Some(at),
                backoff: Some(backoff),
            };
            self.state
                .log
                .scheduled(super::unix_now().saturating_add(next.as_secs() as i64));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
    }

    /// One fetch, logged; stores the set on success and returns when to refresh.
    async fn fetch_once(&self) -> Result<Duration, FetchError> {
        let result = self.fetch_set().await;
        match &result {
            Ok(_) => self.state.log.succeeded(super::unix_now()),
            Err(e) => self.state.log.failed(super::unix_now(), e),
        }
        result
    }

    async fn fetch_set(&self) -> Result<Duration, FetchError> {
        let url = self.jwks_url().await?;
        let fetched = match self.fetcher.get(&url).await {
            Ok(f) => f,
            Err(e) => {
                // The provider may have moved its keys: discover again next time.
                self.state.discovered.lock().take();
                return Err(e);
            }
        };
        let set = KeySet::from_jwks_json(&fetched.body, false)
            .map_err(|e| FetchError::Document(e.to_string()))?;
        tracing::info!(issuer = %self.issuer_id, keys = set.len(), "key set loaded");
        self.state.current.store(Some(Arc::new(set)));
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
        if let Some(url) = self.state.discovered.lock().clone() {
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
        *self.state.discovered.lock() = Some(parsed.jwks_uri.clone());
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

/// An issuer's `ca`: its certificates, which a reload compares (the file is
/// read again, so a replaced bundle at the same path counts as a change),
/// and the trust store made of them.
#[derive(Debug, Clone)]
pub struct CaRoots {
    certs: Vec<CertificateDer<'static>>,
    store: Arc<rustls::RootCertStore>,
}

impl PartialEq for CaRoots {
    fn eq(&self, other: &Self) -> bool {
        self.certs == other.certs
    }
}

/// Reads the issuer's `ca`, if it has one.
pub fn load_ca(cfg: &IssuerConfig) -> Result<Option<CaRoots>, AuthSetupError> {
    let Some(path) = &cfg.ca else {
        return Ok(None);
    };
    let err = |reason: String| AuthSetupError::Ca {
        issuer: cfg.id.clone(),
        path: path.to_path_buf(),
        reason,
    };
    // The TLS module's reader, so a CA file is read the same way everywhere.
    let certs = crate::tls::load_certs(path).map_err(|e| err(e.to_string()))?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| err(e.to_string()))?;
    }
    Ok(Some(CaRoots {
        certs,
        store: Arc::new(store),
    }))
}

/// Trust for fetching key sets: the issuer's `ca` (from [`load_ca`]), else
/// the system roots (loaded once per [`super::Authenticator`], only if some
/// issuer needs them).
pub fn tls_config(
    cfg: &IssuerConfig,
    ca: Option<&CaRoots>,
    native: &mut Option<Arc<rustls::RootCertStore>>,
) -> Result<Arc<rustls::ClientConfig>, AuthSetupError> {
    let roots = match ca {
        Some(ca) => Arc::clone(&ca.store),
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
