//! `store: memory`: nothing outlives the process. The local
//! [`super::RevocationList`] already holds every entry, so this store has
//! nothing to keep; it exists so the other layers never special-case it.

use super::store::{BoxFuture, RevocationStore, StoreError};
use super::Revocation;

pub struct MemoryStore;

impl RevocationStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn add(&self, _r: Revocation, _tag: Option<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn purge(&self, _now: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
