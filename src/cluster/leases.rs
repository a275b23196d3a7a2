//! `max_sessions_per_subject` with `scope: cluster`: counted in Redis, one
//! hash per (route, iss, sub), with one count per node and that node's
//! lease expiry:
//!
//! ```text
//! wsgate:limit:<hash>   <node> -> sessions held   <node>:exp -> unix ms
//! ```
//!
//! Taking a place is one Lua script (check and increment are atomic, so
//! concurrent handshakes on several replicas never exceed the limit). The
//! script drops the counts of nodes whose lease expired: a crashed
//! replica's sessions stop counting once its lease runs out, since only a
//! live node renews its leases (with its heartbeat). Leases are kept per
//! node and subject, not per session, so the renewal costs one command per
//! subject held, and a handshake costs one round trip.
//!
//! Releases are queued and sent by a background task: a closing session
//! never waits on Redis.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::link::{Link, LinkError};

const KEY_PREFIX: &str = "wsgate:limit:";

/// Checks the live counts and takes one place when under `limit`.
/// KEYS[1] the subject; ARGV node, limit, lease ms. Returns 1 or 0.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HGETALL', KEYS[1])
local counts, exps = {}, {}
for i = 1, #h, 2 do
  local n = string.match(h[i], '^(.*):exp$')
  if n then exps[n] = tonumber(h[i + 1]) else counts[h[i]] = tonumber(h[i + 1]) or 0 end
end
local total = 0
for n, c in pairs(counts) do
  local e = exps[n]
  if n ~= node and (e == nil or e <= now) then
    redis.call('HDEL', KEYS[1], n, n .. ':exp')
  else
    total = total + c
  end
end
if total >= limit then return 0 end
redis.call('HINCRBY', KEYS[1], node, 1)
redis.call('HSET', KEYS[1], node .. ':exp', now + ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return 1
"#;

/// Gives one place back. KEYS[1] the subject; ARGV node.
const RELEASE: &str = r#"
local c = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if c <= 0 then redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. ':exp') end
return c
"#;

/// Extends this node's lease. KEYS[1] the subject; ARGV node, lease ms,
/// count held here (restored when Redis lost it, e.g. in a failover).
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1] .. ':exp', now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
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
    ttl: Duration,
    held: DashMap<String, u32>,
    releases: mpsc::UnboundedSender<String>,
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
        // Closed receiver: the gateway is stopping and its leases lapse.
        let _ = self.leases.releases.send(std::mem::take(&mut self.key));
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Acquired {
    Taken,
    Full,
}

impl Leases {
    pub fn new(
        node: Arc<str>,
        link: Arc<Link>,
        ttl: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = Arc::new(Self {
            node,
            link,
            ttl,
            held: DashMap::new(),
            releases: tx,
        });
        (me, rx)
    }

    /// Takes a place under `limit` for the subject `key`.
    pub async fn acquire(
        self: &Arc<Self>,
        key: String,
        limit: u32,
    ) -> Result<Option<Lease>, LinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ACQUIRE)
            .arg(1)
            .arg(&key)
            .arg(&*self.node)
            .arg(limit)
            .arg(self.ttl.as_millis() as u64);
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

    /// Extends every lease this node holds (one pipeline).
    pub async fn renew(&self) -> Result<(), LinkError> {
        let held: Vec<(String, u32)> = self
            .held
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        for chunk in held.chunks(1000) {
            let mut pipe = redis::pipe();
            for (key, n) in chunk {
                pipe.cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(key)
                    .arg(&*self.node)
                    .arg(self.ttl.as_millis() as u64)
                    .arg(*n)
                    .ignore();
            }
            self.link.query::<()>("lease renewal", &pipe).await?;
        }
        Ok(())
    }

    /// Sends queued releases until the queue closes, batching what piled
    /// up. A release that fails is not retried: the count is put right by
    /// the lease expiring only if the node stops; while it lives, the
    /// renewal keeps its (then too high) count. The log says so.
    pub async fn run_releases(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<String>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 1000).await > 0 {
            let mut pipe = redis::pipe();
            for key in batch.drain(..) {
                pipe.cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(key)
                    .arg(&*self.node)
                    .ignore();
            }
            if let Err(e) = self.link.query::<()>("lease release", &pipe).await {
                tracing::warn!(error = %e, "per-subject places not given back in redis; they count until this node's lease lapses or it restarts");
            }
        }
    }

    /// Gives back every place at once (graceful stop).
    pub async fn release_all(&self) {
        let mut pipe = redis::pipe();
        for e in self.held.iter() {
            pipe.cmd("HDEL")
                .arg(e.key())
                .arg(&*self.node)
                .arg(format!("{}:exp", self.node))
                .ignore();
        }
        let _ = self.link.query::<()>("lease release", &pipe).await;
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
