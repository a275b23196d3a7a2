//! Live reload (SIGHUP and `POST /admin/reload`): the config file is read and
//! validated again, a complete new [`State`] is built (routes, rules, issuers,
//! keys) and swapped in, TLS certificates are replaced, and every live session
//! is checked against its route's new rules. Sessions that no longer qualify,
//! or whose route is gone, end with 4403 `access revoked by policy`.
//!
//! Anything invalid leaves the old configuration in force. Listener addresses
//! are not re-bound: changing them needs a restart (a warning says so).

use std::sync::Arc;

use crate::app::Gateway;
use crate::auth::Authenticator;
use crate::config::{self, AuthMode};
use crate::session::CloseReason;
use crate::state::State;
use crate::tls::CertStore;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("{0}")]
    Build(#[from] crate::state::BuildError),
    #[error("listeners[{index}].tls: {source}")]
    Tls {
        index: usize,
        #[source]
        source: crate::tls::TlsError,
    },
}

/// Applies the config file again; returns a one-line summary.
pub async fn reload(gw: &Arc<Gateway>) -> Result<String, ReloadError> {
    let old = gw.state.load_full();
    let path = old.config.source.clone();
    let cfg = config::load(&path)?;

    let mut stores = Vec::new();
    for (index, l) in cfg.listeners.iter().enumerate() {
        let store = match &l.tls {
            Some(t) => {
                Some(CertStore::load(t).map_err(|source| ReloadError::Tls { index, source })?)
            }
            None => None,
        };
        stores.push(store);
    }
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
    let auth_stop = gw.shutdown.child_token();
    let auth = Authenticator::new(&cfg.issuers, auth_stop.clone()).await?;
    let state = Arc::new(State::build(Arc::new(cfg), auth, auth_stop)?);

    for (resolver, store) in gw.cert_resolvers.iter().zip(stores) {
        if let (Some(r), Some(s)) = (resolver, store) {
            r.replace(s);
        }
    }
    gw.state.store(Arc::clone(&state));
    old.auth_stop.cancel();
    let closed = recheck_sessions(gw, &state);
    Ok(format!(
        "{summary}; {closed} session(s) closed by the new policy"
    ))
}

/// Ends the sessions the new state no longer allows. Returns how many.
fn recheck_sessions(gw: &Gateway, state: &State) -> usize {
    let mut closed = 0;
    for s in gw.registry.all() {
        let allowed = match state.route(&s.route) {
            None => false,
            Some(route) => match (route.cfg.auth, s.token()) {
                (AuthMode::None, _) => true,
                (AuthMode::Required, None) => false,
                (AuthMode::Required, Some(t)) => {
                    route
                        .cfg
                        .issuers
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&t.issuer_id))
                        && route.rules.check(&t.claims, &s.params).is_ok()
                }
            },
        };
        if !allowed && s.close(CloseReason::Policy) {
            closed += 1;
        }
    }
    closed
}
