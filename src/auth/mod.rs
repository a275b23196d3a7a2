//! Authentication: where tokens are found ([`sources`]), where keys come from
//! ([`keys`], [`remote`]), and how a token becomes a [`VerifiedToken`]
//! ([`Authenticator::verify`]).
//!
//! Verification order, cheapest first: length and shape → verification cache
//! (with `exp`/`nbf` re-checked) → header peek (`alg`, `kid`) → issuer choice by
//! the unverified `iss` → key lookup (a remote set may be refetched, rate-limited)
//! → signature and claims. Revocation is the caller's business.

pub mod cache;
pub mod claims;
pub mod fetch;
pub mod jwt;
pub mod keys;
pub mod remote;
pub mod sources;
pub mod status;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::IssuerConfig;
use keys::{KeySet, Lookup};
use remote::{RemoteKeys, Tuning};

/// Longer tokens are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
const CACHE_CAPACITY: usize = 10_000;
const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long [`Authenticator::new`] waits for the first fetch of remote sets.
const INITIAL_FETCH_WAIT: Duration = Duration::from_secs(3);

/// A token whose signature and claims have been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The `id` of the issuer config that verified it.
    pub issuer_id: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub iat: Option<i64>,
    pub exp: Option<i64>,
    pub claims: claims::Claims,
    /// The algorithm and the key that checked the signature: enough to
    /// judge the token again against another key set without its text.
    pub alg: jsonwebtoken::Algorithm,
    pub key: keys::KeyFingerprint,
    /// The issuer's clock-skew allowance.
    pub leeway: Duration,
    /// A short hash of the token: the only form in which it may be logged.
    pub fingerprint: String,
}

/// A token judged now, with the claims that judgement parsed: admission
/// reads the same value (route rules, identity headers, a hash key) instead
/// of parsing the token's stored text again.
#[derive(Debug)]
pub struct Verified {
    pub token: Arc<VerifiedToken>,
    pub claims: Value,
}

/// Why a token was refused. `Display` and [`AuthError::description`] never
/// contain token content.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    #[error("unknown key id")]
    UnknownKid,
    #[error("invalid signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid issuer")]
    WrongIssuer,
    #[error("invalid audience")]
    WrongAudience,
    /// The claim name comes from the config, not from the token.
    #[error("missing required claim `{0}`")]
    MissingClaim(String),
    #[error("no verification keys available")]
    NoKeys,
}

impl AuthError {
    /// For `WWW-Authenticate: Bearer error_description="..."` and close reasons.
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed token",
            AuthError::AlgNotAllowed => "algorithm not allowed",
            AuthError::UnknownKid => "unknown key id",
            AuthError::BadSignature => "invalid signature",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongIssuer => "invalid issuer",
            AuthError::WrongAudience => "invalid audience",
            AuthError::MissingClaim(_) => "missing required claim",
            AuthError::NoKeys => "no verification keys available",
        }
    }

    /// When several issuers were tried, the error to report is the one that
    /// got furthest: a claim error means the signature was good.
    fn rank(&self) -> u8 {
        match self {
            AuthError::Malformed => 0,
            AuthError::AlgNotAllowed | AuthError::UnknownKid | AuthError::NoKeys => 1,
            AuthError::BadSignature => 2,
            AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::WrongIssuer
            | AuthError::WrongAudience
            | AuthError::MissingClaim(_) => 3,
        }
    }
}

/// An issuer's keys or trust anchors could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum AuthSetupError {
    #[error("issuer `{issuer}`: {source}")]
    Keys {
        issuer: String,
        #[source]
        source: keys::LocalKeyError,
    },
    #[error("issuer `{issuer}`: ca {}: {reason}", path.display())]
    Ca {
        issuer: String,
        path: PathBuf,
        reason: String,
    },
    #[error("issuer `{issuer}`: {reason}")]
    Remote { issuer: String, reason: String },
}

/// Verifies tokens against the configured issuers.
pub struct Authenticator {
    issuers: Vec<IssuerEntry>,
    cache: cache::VerifyCache,
    /// The refreshers this authenticator started (a reload may hand some of
    /// them on to the next one, see [`RemoteSource`]).
    tasks: TaskTracker,
    /// Unix seconds at which local key sets were loaded (for their age).
    built_at: i64,
}

struct IssuerEntry {
    policy: jwt::Policy,
    keys: IssuerKeys,
}

enum IssuerKeys {
    Local(Arc<KeySet>),
    Remote(Arc<RemoteSource>),
}

impl IssuerKeys {
    fn snapshot(&self) -> Option<Arc<KeySet>> {
        match self {
            IssuerKeys::Local(set) => Some(set.clone()),
            IssuerKeys::Remote(remote) => remote.keys.current(),
        }
    }
}

/// A remote key set with its refresher. A reload decides per issuer (same
/// `id`) from the previous authenticator's source:
///
/// - same [`RemoteOrigin`] and same [`FetchSettings`]: the new authenticator
///   holds this very `RemoteSource`, keys, refresher and schedule included;
/// - same origin, other settings (`refetch_interval`, `ca`): a successor
///   ([`RemoteKeys::successor`]) starts with the kept keys and history under
///   the new settings, and the old refresher is stopped;
/// - another origin (or no previous source): a fresh set, with no keys
///   until its first fetch, since keys from another source are not the
///   keys this issuer now names.
///
/// The rest of an issuer's config (`issuer` for a `jwks_url` issuer,
/// audiences, leeway, algorithms, required claims) is policy, built anew
/// on every reload; it never touches the keys. The refresher stops when the
/// last authenticator holding its source is dropped, when a successor takes
/// over, or at shutdown.
struct RemoteSource {
    keys: Arc<RemoteKeys>,
    origin: RemoteOrigin,
    settings: FetchSettings,
    stop: CancellationToken,
}

impl Drop for RemoteSource {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Which issuer and where its keys come from (the key source): equal origins
/// serve the same keys. The `ca` is deliberately not part of it: a new trust
/// anchor for the same URL changes how the document is fetched, not which
/// keys that URL publishes, so the keys already fetched stay in force until
/// a fetch with the new `ca` replaces them.
#[derive(Debug, Clone, PartialEq)]
struct RemoteOrigin {
    id: String,
    endpoint: remote::Endpoint,
}

/// How a remote set is fetched; a change keeps the keys (see [`RemoteSource`]).
#[derive(Debug, Clone, PartialEq)]
struct FetchSettings {
    ca: Option<remote::CaRoots>,
    refetch_interval: Duration,
}

/// Makes `jsonwebtoken` use aws-lc. Idempotent.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The short hash under which a token may appear in logs.
pub fn fingerprint(token: &str) -> String {
    hex_prefix(&Sha256::digest(token.as_bytes()))
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Authenticator {
    /// Loads every issuer's keys; remote sets are fetched in background tasks
    /// that stop when `shutdown` is cancelled or no authenticator uses them
    /// any more. A remote set of `previous` (the authenticator a reload
    /// replaces) whose key source is unchanged keeps its keys, see
    /// [`RemoteSource`]. Waits a few seconds at most for the first fetch of
    /// remote sets that have no keys.
    pub async fn new(
        issuers: &[IssuerConfig],
        shutdown: CancellationToken,
        previous: Option<&Authenticator>,
    ) -> Result<Arc<Self>, AuthSetupError> {
        Self::with_tuning(issuers, shutdown, Tuning::default(), previous).await
    }

    pub(crate) async fn with_tuning(
        issuers: &[IssuerConfig],
        shutdown: CancellationToken,
        tuning: Tuning,
        previous: Option<&Authenticator>,
    ) -> Result<Arc<Self>, AuthSetupError> {
        install_crypto_provider();
        let tasks = TaskTracker::new();
        let mut native_roots: Option<Arc<rustls::RootCertStore>> = None;
        let mut entries = Vec::with_capacity(issuers.len());
        let mut first_fetches = Vec::new();
        // Refreshers start only once every issuer is built, and the ones
        // replaced by successors stop only then: a build that fails half-way
        // (a reload refused) leaves the running authenticator's refreshers
        // alone and starts none.
        let mut to_start = Vec::new();
        let mut replaced = Vec::new();
        for cfg in issuers {
            let keys = match keys::load_local(&cfg.keys) {
                Ok(Some(set)) => IssuerKeys::Local(Arc::new(set)),
                Ok(None) => {
                    let origin = RemoteOrigin {
                        id: cfg.id.clone(),
                        endpoint: remote::endpoint(cfg)?,
                    };
                    let settings = FetchSettings {
                        ca: remote::load_ca(cfg)?,
                        refetch_interval: cfg.refetch_interval,
                    };
                    let before = previous.and_then(|p| p.remote_source(&origin));
                    match before {
                        Some(kept) if kept.settings == settings => IssuerKeys::Remote(kept),
                        before => {
                            let tls =
                                remote::tls_config(cfg, settings.ca.as_ref(), &mut native_roots)?;
                            let fetcher =
                                fetch::Fetcher::new(tls, tuning.fetch_timeout, tuning.max_body);
                            let (keys, start) = match &before {
                                Some(old) => {
                                    // A new trust anchor is worth trying at
                                    // once (the old keys stay until it works);
                                    // a new refetch interval is not.
                                    let start = if old.settings.ca == settings.ca {
                                        remote::Start::Resume
                                    } else {
                                        remote::Start::Now
                                    };
                                    let keys = old.keys.successor(
                                        fetcher,
                                        tuning.clone(),
                                        cfg.refetch_interval,
                                    );
                                    (keys, start)
                                }
                                None => {
                                    let keys = RemoteKeys::new(
                                        cfg.id.clone(),
                                        origin.endpoint.clone(),
                                        fetcher,
                                        tuning.clone(),
                                        cfg.refetch_interval,
                                    );
                                    (keys, remote::Start::Now)
                                }
                            };
                            let keys = Arc::new(keys);
                            let stop = shutdown.child_token();
                            to_start.push((keys.clone(), stop.clone(), start));
                            replaced.extend(before);
                            IssuerKeys::Remote(Arc::new(RemoteSource {
                                keys,
                                origin,
                                settings,
                                stop,
                            }))
                        }
                    }
                }
                Err(source) => {
                    return Err(AuthSetupError::Keys {
                        issuer: cfg.id.clone(),
                        source,
                    })
                }
            };
            entries.push(IssuerEntry {
                policy: jwt::Policy::new(cfg),
                keys,
            });
        }
        // Nothing below fails. The old refresher of a replaced source stops
        // before its successor starts, so no issuer is fetched on two
        // schedules; the old authenticator, while requests still hold it,
        // sees the successor's fetches through the shared key state.
        for old in replaced {
            old.stop.cancel();
        }
        for (keys, stop, start) in to_start {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Only a set with no keys yet is worth waiting for.
            if keys.current().is_none() {
                first_fetches.push(rx);
            }
            tasks.spawn(keys.run(stop, tx, start));
        }
        tasks.close();
        let _ = tokio::time::timeout(INITIAL_FETCH_WAIT, async {
            for rx in first_fetches {
                let _ = rx.await;
            }
        })
        .await;
        Ok(Arc::new(Self {
            issuers: entries,
            cache: cache::VerifyCache::new(CACHE_CAPACITY, CACHE_TTL),
            tasks,
            built_at: unix_now(),
        }))
    }

    /// This authenticator's remote source from `origin`, if it has one.
    fn remote_source(&self, origin: &RemoteOrigin) -> Option<Arc<RemoteSource>> {
        self.issuers.iter().find_map(|e| match &e.keys {
            IssuerKeys::Remote(r) if &r.origin == origin => Some(Arc::clone(r)),
            _ => None,
        })
    }

    /// Issuer ids that have keys (for `/readyz` with `readyz: any_issuer`).
    pub fn issuers_with_keys(&self) -> usize {
        self.issuers
            .iter()
            .filter(|e| e.keys.snapshot().is_some_and(|s| !s.is_empty()))
            .count()
    }

    /// How many issuers are configured.
    pub fn issuer_count(&self) -> usize {
        self.issuers.len()
    }

    /// Issuer ids that have no usable key yet (for `/readyz` and a startup warning).
    pub fn issuers_without_keys(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter(|e| e.keys.snapshot().is_none_or(|s| s.is_empty()))
            .map(|e| e.policy.id.clone())
            .collect()
    }

    /// The background refreshers, for a caller that wants to await their end.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Verifies `token` for one of the `allowed` issuer ids (`None` = all).
    pub async fn verify(
        &self,
        token: &str,
        allowed: Option<&[String]>,
    ) -> Result<Verified, AuthError> {
        self.verify_at(token, allowed, unix_now()).await
    }

    /// [`Self::verify`] with the clock used for cache hits given (tests).
    pub(crate) async fn verify_at(
        &self,
        token: &str,
        allowed: Option<&[String]>,
        now: i64,
    ) -> Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_LEN || !jwt::looks_like_jws(token) {
            return Err(AuthError::Malformed);
        }
        let digest: cache::Digest = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&digest) {
            if is_allowed(allowed, &hit.token.issuer_id) {
                let policy = &self.issuers[hit.issuer].policy;
                // A hit proves the signature, never the time: judge the claims again.
                let claims = hit.token.claims.parse();
                return match policy.rules.check(&claims, now) {
                    Ok(()) => Ok(Verified {
                        token: hit.token,
                        claims,
                    }),
                    Err(e) => {
                        self.cache.remove(&digest);
                        Err(e)
                    }
                };
            }
        }
        let header = jwt::peek_header(token)?;
        let mut worst: Option<AuthError> = None;
        for idx in self.candidates(token, allowed)? {
            match self.verify_with(idx, token, &header, now).await {
                Ok((claims, key)) => {
                    let entry = &self.issuers[idx];
                    let verified = Arc::new(build(
                        &entry.policy,
                        &claims,
                        hex_prefix(&digest),
                        header.alg,
                        key,
                    ));
                    let hit = cache::Hit {
                        token: verified.clone(),
                        issuer: idx,
                    };
                    self.cache.insert(digest, hit, now);
                    return Ok(Verified {
                        token: verified,
                        claims,
                    });
                }
                Err(e) => {
                    if worst.as_ref().is_none_or(|w| e.rank() > w.rank()) {
                        worst = Some(e);
                    }
                }
            }
        }
        Err(worst.unwrap_or(AuthError::WrongIssuer))
    }

    /// Judges a token verified earlier (by this or a replaced authenticator)
    /// as [`Self::verify`] would judge its text now: the issuer chosen the
    /// same way, the algorithm still allowed, the key that checked its
    /// signature still in that issuer's set (which is what a signature check
    /// with the current keys would decide), and the claims checked by the
    /// same rules. A reload re-checks live sessions with this.
    ///
    /// `NoKeys` means the issuer's keys are not fetched yet: no verdict.
    pub fn reverify(
        &self,
        token: &VerifiedToken,
        allowed: Option<&[String]>,
    ) -> Result<Verified, AuthError> {
        self.reverify_at(token, allowed, unix_now())
    }

    pub(crate) fn reverify_at(
        &self,
        token: &VerifiedToken,
        allowed: Option<&[String]>,
        now: i64,
    ) -> Result<Verified, AuthError> {
        let claims = token.claims.parse();
        let mut worst: Option<AuthError> = None;
        for idx in self.candidates_for(token.iss.as_deref(), allowed)? {
            let entry = &self.issuers[idx];
            let judged = if !entry.policy.allows(token.alg) {
                Err(AuthError::AlgNotAllowed)
            } else {
                match entry.keys.snapshot().filter(|s| !s.is_empty()) {
                    None => Err(AuthError::NoKeys),
                    Some(set) => match set.by_fingerprint(&token.key) {
                        Some(k) if k.accepts(token.alg) => entry.policy.rules.check(&claims, now),
                        _ => Err(AuthError::BadSignature),
                    },
                }
            };
            match judged {
                Ok(()) => {
                    let mut again = token.clone();
                    again.issuer_id = entry.policy.id.clone();
                    again.leeway = entry.policy.leeway;
                    return Ok(Verified {
                        token: Arc::new(again),
                        claims,
                    });
                }
                Err(e) => {
                    if worst.as_ref().is_none_or(|w| e.rank() > w.rank()) {
                        worst = Some(e);
                    }
                }
            }
        }
        Err(worst.unwrap_or(AuthError::WrongIssuer))
    }

    /// The issuers to try: among the allowed ones, those whose `issuer` equals
    /// the token's unverified `iss`; failing that, those with no `issuer` set.
    fn candidates(&self, token: &str, allowed: Option<&[String]>) -> Result<Vec<usize>, AuthError> {
        let iss = jwt::peek_iss(token)?;
        self.candidates_for(iss.as_deref(), allowed)
    }

    fn candidates_for(
        &self,
        iss: Option<&str>,
        allowed: Option<&[String]>,
    ) -> Result<Vec<usize>, AuthError> {
        let allowed: Vec<usize> = (0..self.issuers.len())
            .filter(|&i| is_allowed(allowed, &self.issuers[i].policy.id))
            .collect();
        let named: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|&i| {
                let want = self.issuers[i].policy.issuer.as_deref();
                want.is_some() && want == iss
            })
            .collect();
        if !named.is_empty() {
            return Ok(named);
        }
        let open: Vec<usize> = allowed
            .into_iter()
            .filter(|&i| self.issuers[i].policy.issuer.is_none())
            .collect();
        if open.is_empty() {
            return Err(AuthError::WrongIssuer);
        }
        Ok(open)
    }

    async fn verify_with(
        &self,
        idx: usize,
        token: &str,
        header: &jwt::HeaderPeek,
        now: i64,
    ) -> Result<(Value, keys::KeyFingerprint), AuthError> {
        let entry = &self.issuers[idx];
        if !entry.policy.allows(header.alg) {
            return Err(AuthError::AlgNotAllowed);
        }
        let first = try_keys(entry, entry.keys.snapshot(), token, header, now);
        let IssuerKeys::Remote(source) = &entry.keys else {
            return first;
        };
        let remote = &source.keys;
        match first {
            Err(AuthError::UnknownKid | AuthError::NoKeys | AuthError::AlgNotAllowed) => {
                // The provider may have rotated: refetch (rate-limited, shared).
                remote.refetch_for_unknown_kid().await;
                try_keys(entry, remote.current(), token, header, now)
            }
            other => other,
        }
    }
}

fn is_allowed(allowed: Option<&[String]>, id: &str) -> bool {
    allowed.is_none_or(|ids| ids.iter().any(|a| a == id))
}

fn try_keys(
    entry: &IssuerEntry,
    set: Option<Arc<KeySet>>,
    token: &str,
    header: &jwt::HeaderPeek,
    now: i64,
) -> Result<(Value, keys::KeyFingerprint), AuthError> {
    let set = set.ok_or(AuthError::NoKeys)?;
    let keys = match set.lookup(header.kid.as_deref(), header.alg) {
        Lookup::Keys(keys) => keys,
        Lookup::UnknownKid => return Err(AuthError::UnknownKid),
        Lookup::NoKeyForAlg => return Err(AuthError::AlgNotAllowed),
    };
    for key in keys {
        match entry.policy.verify(token, header.alg, key, now) {
            Err(AuthError::BadSignature) => continue,
            // Claim errors come after a good signature: no other key would help.
            other => return other.map(|claims| (claims, key.fingerprint)),
        }
    }
    Err(AuthError::BadSignature)
}

fn build(
    policy: &jwt::Policy,
    claims: &Value,
    fingerprint: String,
    alg: jsonwebtoken::Algorithm,
    key: keys::KeyFingerprint,
) -> VerifiedToken {
    let string = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let date = |name: &str| claims.get(name).and_then(claims::numeric_date);
    VerifiedToken {
        issuer_id: policy.id.clone(),
        iss: string("iss"),
        // The claim rules refused any other type, so this is the subject.
        sub: claims.get("sub").and_then(claims::subject_text),
        jti: string("jti"),
        iat: date("iat"),
        exp: date("exp"),
        alg,
        key,
        leeway: policy.leeway,
        fingerprint,
        claims: claims::Claims::new(claims),
    }
}
