//! The one interface every revocation store implements.
//!
//! A store persists and shares entries; it never answers a check (the local
//! [`super::RevocationList`] does, so a handshake never waits on disk or
//! network). The [`super::Revoker`] drives a store through three moments:
//! `load` once at start, `add` for every entry made on this gateway, and
//! `sync` in the background, which hands entries made elsewhere (another
//! replica, a Redis catch-up) to the revoker and `purge`s expired ones.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Revocation;
use crate::config::RevocationConfig;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Receives entries that a store learned from elsewhere, with the tag the
/// node that made it attached (see [`RevocationStore::add`]), if any.
pub type Sink = Arc<dyn Fn(Revocation, Option<String>) + Send + Sync>;

/// Gives the entries this gateway holds, so a store can re-publish them
/// (e.g. after Redis lost its data).
pub type Known = Arc<dyn Fn() -> Vec<Revocation> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("revocation file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("revocation file {path}: cannot encode entry: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("redis revocation store: {0}")]
    Redis(#[from] crate::cluster::LinkError),
    #[error("redis revocation store: {0}")]
    RedisUnavailable(&'static str),
    #[error("revocation store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Persists and shares revocations.
pub trait RevocationStore: Send + Sync {
    /// A short name for logs: `memory`, `file`, `redis`.
    fn kind(&self) -> &'static str;

    /// Every entry in force, read once at start.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>>;

    /// Stores (and, for a shared store, publishes) one new entry. Only
    /// returns once the entry is durable as far as this store can tell.
    /// A shared store hands `tag` to the other nodes' sinks with the entry
    /// (the cluster uses it to collect how many sessions each closed).
    fn add(&self, r: Revocation, tag: Option<String>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Forgets entries whose `keep_until` is at or before `now`.
    fn purge(&self, now: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Runs until `cancel`: hands entries made elsewhere to `sink`.
    /// Stores that share nothing return at once.
    fn sync(
        self: Arc<Self>,
        sink: Sink,
        known: Known,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        let _ = (sink, known, cancel);
        Box::pin(async {})
    }
}

/// Opens the store the config names.
pub fn open(cfg: &RevocationConfig) -> Result<Arc<dyn RevocationStore>, StoreError> {
    Ok(match cfg {
        RevocationConfig::Memory => Arc::new(super::memory::MemoryStore),
        RevocationConfig::File(path) => Arc::new(super::file::FileStore::new(path.clone())),
        RevocationConfig::Redis(url) => Arc::new(super::redis::RedisStore::new(url)?),
    })
}
