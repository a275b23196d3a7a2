//! A bounded cache of successful verifications, keyed by the SHA-256 of the
//! token, so that a client reconnecting with the same token skips the
//! signature check. The cache stores *what* was verified, never a verdict
//! about time: every hit goes through the `exp`/`nbf` checks again (see
//! [`super::Authenticator::verify`]). Entries also age out after a few
//! minutes, so a key removed from an issuer's set stops being honoured soon.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::VerifiedToken;

pub type Digest = [u8; 32];

#[derive(Clone)]
pub struct Hit {
    pub token: Arc<VerifiedToken>,
    /// Index of the issuer that verified it.
    pub issuer: usize,
}

struct Entry {
    hit: Hit,
    inserted: Instant,
}

pub struct VerifyCache {
    map: DashMap<Digest, Entry>,
    capacity: usize,
    ttl: Duration,
}

impl VerifyCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            map: DashMap::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    pub fn get(&self, key: &Digest) -> Option<Hit> {
        let (hit, fresh) = {
            let entry = self.map.get(key)?;
            (entry.hit.clone(), entry.inserted.elapsed() <= self.ttl)
        };
        // The shard guard is dropped above: removing while holding it would deadlock.
        if !fresh {
            self.map.remove(key);
            return None;
        }
        Some(hit)
    }

    pub fn remove(&self, key: &Digest) {
        self.map.remove(key);
    }

    pub fn insert(&self, key: Digest, hit: Hit, now_unix: i64) {
        if self.map.len() >= self.capacity {
            self.evict(now_unix);
        }
        let inserted = Instant::now();
        self.map.insert(key, Entry { hit, inserted });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops stale and expired entries; if the map is still full, drops an
    /// arbitrary eighth of it (cheap, and good enough for a cache whose misses
    /// only cost a signature check).
    fn evict(&self, now_unix: i64) {
        let ttl = self.ttl;
        self.map.retain(|_, e| {
            let leeway = i64::try_from(e.hit.token.leeway.as_secs()).unwrap_or(i64::MAX);
            e.inserted.elapsed() <= ttl
                && e.hit
                    .token
                    .exp
                    .is_none_or(|exp| exp.saturating_add(leeway) >= now_unix)
        });
        if self.map.len() >= self.capacity {
            let victims: Vec<Digest> = self
                .map
                .iter()
                .take((self.capacity / 8).max(1))
                .map(|e| *e.key())
                .collect();
            for key in victims {
                self.map.remove(&key);
            }
        }
    }
}
