//! `max_sessions_per_subject` with `scope: cluster`: counted in Redis, one
//! hash per (route, iss, sub) with one count per node:
//!
//! ```text
//! {wsgate}:limit:<hash>   <node> -> sessions held there
//! ```
//!
//! Taking a place is one Lua script (check and increment are atomic, so
//! concurrent handshakes on several replicas never exceed the limit). The
//! script drops the counts of nodes whose heartbeat lease in
//! [`super::NODES`] has ended: a crashed replica's sessions stop counting
//! once it drops out of the cluster, with no per-subject lease to renew.
//! So a node's upkeep is its one heartbeat whatever it holds, and a
//! handshake costs one round trip. Every time is Redis's own (`TIME`), so
//! clock skew between the replicas does not matter.
//!
//! The `{wsgate}` hash tag keeps a subject's hash and the node set on one
//! shard of a Redis Cluster, which a script touching both needs.
//!
//! Releases are counted per subject and sent by a background task: a
//! closing session never waits on Redis, and what waits is bounded by the
//! number of subjects, not of closes. A failover that loses the last writes leaves a
//! count too low until those sessions close (the limit is briefly softer,
//! never stricter).

use std::sync::Arc;

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::link::{Link, LinkError};
use super::NODES;

const KEY_PREFIX: &str = "{wsgate}:limit:";

/// Checks the live counts and takes one place when under `limit`.
/// KEYS[1] the subject, KEYS[2] the node set; ARGV node, limit.
/// Returns 1 (taken) or 0 (full).
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, limit = ARGV[1], tonumber(ARGV[2])
local h = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #h, 2 do
  local n, c = h[i], tonumber(h[i + 1]) or 0
  local live = n == node
  if not live then
    local lease = tonumber(redis.call('ZSCORE', KEYS[2], n))
    live = lease ~= nil and lease > now
  end
  if live then
    total = total + c
  else
    redis.call('HDEL', KEYS[1], n)
  end
end
if total >= limit then return 0 end
redis.call('HINCRBY', KEYS[1], node, 1)
return 1
"#;

/// Gives places back. KEYS[1] the subject; ARGV node, how many.
const RELEASE: &str = r#"
local c = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if c <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return c
"#;

/// The Redis key of one subject on one route.
pub fn key(route: &str, iss: &str, sub: &str) -> String {
    let mut h = Sha256::new();
    for part in [route, iss, sub] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_PREFIX}{hex}")
}

/// The places this node holds, by subject key.
pub struct Leases {
    node: Arc<str>,
    link: Arc<Link>,
    held: DashMap<String, u32>,
    /// Places given back here and not yet in Redis, by subject.
    releasing: DashMap<String, u32>,
    released: Notify,
}

/// One place taken in Redis, given back when dropped (with its session).
pub struct Lease {
    leases: Arc<Leases>,
    key: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.held.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        *self
            .leases
            .releasing
            .entry(std::mem::take(&mut self.key))
            .or_insert(0) += 1;
        self.leases.released.notify_one();
    }
}

impl Leases {
    pub fn new(node: Arc<str>, link: Arc<Link>) -> Arc<Self> {
        Arc::new(Self {
            node,
            link,
            held: DashMap::new(),
            releasing: DashMap::new(),
            released: Notify::new(),
        })
    }

    /// Takes a place under `limit` for the subject `key`.
    pub async fn acquire(
        self: &Arc<Self>,
        key: String,
        limit: u32,
    ) -> Result<Option<Lease>, LinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ACQUIRE)
            .arg(2)
            .arg(&key)
            .arg(NODES)
            .arg(&*self.node)
            .arg(limit);
        let taken: i64 = self.link.query("per-subject limit", &cmd).await?;
        if taken != 1 {
            return Ok(None);
        }
        *self.held.entry(key.clone()).or_insert(0) += 1;
        Ok(Some(Lease {
            leases: Arc::clone(self),
            key,
        }))
    }

    /// Sends the places given back, batched, until `cancel` (at stop the
    /// node leaves the set, and its counts stop counting). A release that
    /// fails is not retried: the count stays too high until this node
    /// leaves the cluster (the log says so).
    pub async fn run_releases(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.released.notified() => {}
            }
            let keys: Vec<String> = self.releasing.iter().map(|e| e.key().clone()).collect();
            let mut pipe = redis::pipe();
            for key in keys {
                if let Some((key, n)) = self.releasing.remove(&key) {
                    pipe.cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(key)
                        .arg(&*self.node)
                        .arg(n)
                        .ignore();
                }
            }
            if pipe.cmd_iter().next().is_none() {
                continue;
            }
            if let Err(e) = self.link.query::<()>("lease release", &pipe).await {
                tracing::warn!(error = %e, "per-subject places not given back in redis; they count until this node leaves the cluster");
            }
        }
    }

    /// Gives back every place at once (graceful stop).
    pub async fn release_all(&self) {
        let mut pipe = redis::pipe();
        for e in self.held.iter() {
            pipe.cmd("HDEL").arg(e.key()).arg(&*self.node).ignore();
        }
        if pipe.cmd_iter().next().is_some() {
            let _ = self.link.query::<()>("lease release", &pipe).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key("r", "ab", "c"), key("r", "a", "bc"));
        assert_eq!(key("r", "i", "s"), key("r", "i", "s"));
    }
}
