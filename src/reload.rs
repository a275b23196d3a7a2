//! Live reload (SIGHUP and `POST /admin/reload`): the config file is read and
//! validated again, a complete new [`Snapshot`] is built by the same
//! [`Snapshot::build`] as at start, TLS certificates are replaced, and every
//! live session is judged again by the one admission step
//! ([`admit::recheck`]): its token against the new issuers and keys, then
//! the new route's rules. Sessions that no longer qualify end with 4403
//! `access revoked by policy` before the reload answers.
//!
//! Anything invalid leaves the old configuration in force. Listener addresses
//! are not re-bound: changing them needs a restart (a warning says so).

use std::sync::Arc;

use crate::config;
use crate::gateway::Gateway;
use crate::handshake::admit;
use crate::snapshot::{BuildError, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// Applies the config file again; returns a one-line summary. Counted in
/// `wsgate_reloads_total`; a config put in force updates `wsgate_config_info`.
pub async fn reload(gw: &Arc<Gateway>) -> Result<String, ReloadError> {
    let result = apply(gw).await;
    gw.metrics.reloaded(result.is_ok());
    if result.is_ok() {
        record_config_hash(gw);
    }
    result
}

/// Sets `wsgate_config_info{hash}` from the config file in force. Read
/// after the load: a file rewritten in between shows its newer hash, which
/// the next reload puts in force anyway.
pub fn record_config_hash(gw: &Gateway) {
    let path = gw.snapshot.load().config.source.clone();
    match std::fs::read(&path) {
        Ok(bytes) => gw
            .metrics
            .set_config_hash(crate::metrics::scrape::short_hash(&bytes)),
        Err(e) => tracing::debug!(error = %e, "config file unreadable for its hash"),
    }
}

async fn apply(gw: &Arc<Gateway>) -> Result<String, ReloadError> {
    let old = gw.snapshot.load_full();
    let checked = config::load_checked(&old.config.source)?;
    checked.log_warnings();
    let cfg = checked.config;
    if cfg
        .listeners
        .iter()
        .map(|l| l.bind)
        .ne(old.config.listeners.iter().map(|l| l.bind))
    {
        tracing::warn!("listener addresses changed; they take effect at the next restart");
    }
    if cfg.workers != old.config.workers {
        tracing::warn!("`workers` changed; it takes effect at the next restart");
    }
    let summary = config::summary(&cfg);
    // Remote key sets whose source is unchanged carry over, keys included:
    // a reload while a provider is unreachable must not lose them.
    let built = Snapshot::build(cfg, &gw.shutdown, Some(&old)).await?;
    for (resolver, store) in gw.cert_resolvers.iter().zip(built.certs) {
        if let (Some(r), Some(s)) = (resolver, store) {
            r.replace(s);
        }
    }
    let snapshot = Arc::new(built.snapshot);
    gw.snapshot.store(Arc::clone(&snapshot));
    let rechecked = admit::recheck(gw, &snapshot).await;
    if rechecked.undecided > 0 {
        admit::recheck_when_keys_arrive(gw, Arc::clone(&snapshot));
    }
    Ok(format!(
        "{summary}; {} session(s) closed by the new policy",
        rechecked.closed
    ))
}
