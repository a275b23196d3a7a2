//! The single path a revocation takes, whether it was made on this gateway
//! (`POST /admin/revocations`) or learned from the store (another replica,
//! a catch-up): into the [`RevocationList`] first, so new handshakes are
//! refused at once, then every live session it covers is closed with
//! [`CloseReason::Revoked`] (4403 `token revoked`).
//!
//! Finding the covered sessions uses the registry's indexes: one lookup for a
//! `jti`, the subject index for a `sub`; only a claim revocation walks every
//! session. A handshake that verified its token just before the entry landed
//! may register just after the walk, and a refreshed session is indexed under
//! its first `jti`; a second walk over every session shortly after
//! ([`RECHECK_AFTER`], off the request path) closes those too.
//!
//! The revoker also owns the store's background work: its sync loop and the
//! periodic purge of entries that can no longer cover a valid token.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::{self, Known, RevocationStore, Sink, StoreError};
use super::{Revocation, RevocationList, Selector};
use crate::config::RevocationConfig;
use crate::session::{unix_now, CloseReason, Registry, SessionHandle};

/// How often expired entries are dropped (and the file compacted).
pub const PURGE_EVERY: Duration = Duration::from_secs(60);
/// When the second walk over live sessions runs after a new entry.
pub const RECHECK_AFTER: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// In force on this gateway, but the store could not keep it: it would
    /// be lost at restart (and not reach other replicas). The caller must
    /// know and retry.
    #[error("revocation is enforced by this gateway ({closed} session(s) closed) but could not be stored, so it would not survive a restart; retry: {source}")]
    NotStored {
        closed: usize,
        #[source]
        source: StoreError,
    },
}

/// Told how many sessions an entry carrying a tag closed here.
pub type Reporter = Arc<dyn Fn(&str, usize) + Send + Sync>;

pub struct Revoker {
    store: Arc<dyn RevocationStore>,
    reporter: std::sync::OnceLock<Reporter>,
    list: Arc<RevocationList>,
    registry: Arc<Registry>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// How long an entry made at `now` is kept: the longest lifetime a covered
/// token can have plus the largest leeway, or later when a covered live
/// session's token is known to expire later.
pub fn keep_until(
    now: i64,
    max_leeway: Duration,
    retain: Duration,
    covered: &[Arc<SessionHandle>],
) -> i64 {
    let leeway = max_leeway.as_secs() as i64;
    let assumed = now + retain.as_secs() as i64 + leeway;
    covered
        .iter()
        .filter_map(|s| s.token().and_then(|t| t.exp))
        .map(|exp| exp.saturating_add(leeway))
        .fold(assumed, i64::max)
}

impl Revoker {
    /// Opens the configured store and loads what it holds into `list`.
    pub async fn open(
        cfg: &RevocationConfig,
        list: Arc<RevocationList>,
        registry: Arc<Registry>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let store = store::open(cfg)?;
        let now = unix_now();
        let mut loaded = 0;
        for r in store.load().await? {
            if r.keep_until > now {
                list.insert(r);
                loaded += 1;
            }
        }
        tracing::info!(store = store.kind(), entries = loaded, "revocations loaded");
        Ok(Arc::new(Self {
            store,
            reporter: std::sync::OnceLock::new(),
            list,
            registry,
            tasks: TaskTracker::new(),
            cancel,
        }))
    }

    pub fn list(&self) -> &Arc<RevocationList> {
        &self.list
    }

    /// Sets who hears of tagged entries applied here (once, at start).
    pub fn set_reporter(&self, reporter: Reporter) {
        let _ = self.reporter.set(reporter);
    }

    /// Starts the store's sync loop and the purge timer.
    pub fn start(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let sink: Sink = Arc::new(move |r, tag: Option<String>| {
            let closed = me.apply(r);
            if let (Some(tag), Some(report)) = (tag, me.reporter.get()) {
                report(&tag, closed);
            }
        });
        let list = Arc::clone(&self.list);
        let known: Known = Arc::new(move || list.entries());
        self.tasks
            .spawn(Arc::clone(&self.store).sync(sink, known, self.cancel.clone()));
        let me = Arc::clone(self);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = me.cancel.cancelled() => break,
                    _ = tick.tick() => me.purge().await,
                }
            }
        });
    }

    /// Stops the background tasks and waits (briefly) for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }

    async fn purge(&self) {
        let now = unix_now();
        let dropped = self.list.purge(now);
        if dropped > 0 {
            tracing::info!(dropped, "expired revocations dropped");
        }
        if let Err(e) = self.store.purge(now).await {
            tracing::warn!(error = %e, "revocation store purge failed; retried at the next purge");
        }
    }

    /// Makes a revocation on this gateway: in force and applied at once,
    /// then stored (with `tag` for the other nodes, see
    /// [`RevocationStore::add`]). Returns how many live sessions it closed here.
    pub async fn revoke(
        self: &Arc<Self>,
        selector: Selector,
        max_leeway: Duration,
        retain: Duration,
        tag: Option<String>,
    ) -> Result<usize, RevokeError> {
        let now = unix_now();
        let mut r = Revocation {
            selector,
            revoked_at: now,
            keep_until: now,
        };
        let covered = self.covered(&r);
        r.keep_until = keep_until(now, max_leeway, retain, &covered);
        self.list.insert(r.clone());
        let closed = close_all(&covered);
        self.recheck_later(r.clone());
        tracing::info!(selector = ?r.selector, closed, keep_until = r.keep_until, "revocation made");
        // What is stored is the entry in force, merged with any older one.
        let stored = self.list.get(&r.selector).unwrap_or(r);
        self.store
            .add(stored, tag)
            .await
            .map_err(|source| RevokeError::NotStored { closed, source })?;
        Ok(closed)
    }

    /// Applies an entry learned from the store. Returns how many live
    /// sessions it closed.
    pub fn apply(self: &Arc<Self>, r: Revocation) -> usize {
        if r.keep_until <= unix_now() || !self.list.insert(r.clone()) {
            return 0;
        }
        let closed = close_all(&self.covered(&r));
        tracing::info!(selector = ?r.selector, closed, "revocation received from the store");
        self.recheck_later(r);
        closed
    }

    /// Live sessions whose current token `r` covers, through the indexes.
    fn covered(&self, r: &Revocation) -> Vec<Arc<SessionHandle>> {
        let candidates = match &r.selector {
            Selector::Jti { jti } => self.registry.of_jti(jti),
            Selector::Subject {
                sub,
                iss: Some(iss),
            } => self.registry.of_subject(iss, sub),
            Selector::Subject { sub, iss: None } => self.registry.of_sub_any_issuer(sub),
            Selector::Claim { .. } => self.registry.all(),
        };
        candidates
            .into_iter()
            .filter(|s| s.token().is_some_and(|t| r.covers(&t)))
            .collect()
    }

    /// The second walk (see the module docs), over every session.
    fn recheck_later(self: &Arc<Self>, r: Revocation) {
        let me = Arc::clone(self);
        self.tasks.spawn(async move {
            tokio::select! {
                _ = me.cancel.cancelled() => {}
                _ = tokio::time::sleep(RECHECK_AFTER) => {
                    let late: Vec<_> = me
                        .registry
                        .all()
                        .into_iter()
                        .filter(|s| s.token().is_some_and(|t| r.covers(&t)))
                        .collect();
                    let n = close_all(&late);
                    if n > 0 {
                        tracing::info!(selector = ?r.selector, closed = n, "revocation closed late sessions");
                    }
                }
            }
        });
    }
}

fn close_all(sessions: &[Arc<SessionHandle>]) -> usize {
    crate::session::close_many(sessions, &CloseReason::Revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_until_without_known_tokens_is_max_lifetime_plus_leeway() {
        let got = keep_until(
            1_000,
            Duration::from_secs(60),
            Duration::from_secs(24 * 3600),
            &[],
        );
        assert_eq!(got, 1_000 + 24 * 3600 + 60);
    }
}
