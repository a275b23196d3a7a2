//! `store: redis`: revocations shared by every replica.
//!
//! Layout in Redis:
//! - `wsgate:revocation:<hash>`: one key per selector (hash of the selector),
//!   the entry as JSON, with a TTL of `keep_until - now`, so Redis forgets
//!   it by itself once no token it covers can be valid;
//! - `wsgate:revocations` (sorted set): the hashes scored by `keep_until`,
//!   so a catch-up reads every entry in force without `SCAN`;
//! - channel `wsgate:revocations`: every new entry is published, so all
//!   replicas apply it within milliseconds.
//!
//! A published entry may carry a `tag` (the node that made it and a request
//! id), with which every node reports how many sessions it closed.
//!
//! Each replica keeps its own [`super::RevocationList`]; a check never
//! waits on Redis. The background [`RedisStore::sync`] loop subscribes, then
//! reads every entry (catch-up: nothing published while it was away is
//! missed, since it subscribes first), then applies what is pushed. When the
//! connection is lost it keeps retrying with backoff while the replica keeps
//! enforcing what it knows; on reconnect it catches up again and writes back
//! the entries Redis lacks (made here while Redis was down, or lost by a
//! Redis restart without persistence, or by a failover that promoted a
//! replica before it had them). The connection is a
//! [`crate::cluster::Link`]: after a Sentinel failover it finds the new
//! primary, and this loop subscribes there again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::store::{BoxFuture, Known, RevocationStore, Sink, StoreError};
use super::{Revocation, Selector};
use crate::cluster::link::{Link, OP_TIMEOUT};
use crate::session::unix_now;

const KEY_PREFIX: &str = "wsgate:revocation:";
const INDEX: &str = "wsgate:revocations";
const CHANNEL: &str = "wsgate:revocations";
/// How often a quiet subscription is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct RedisStore {
    link: Link,
}

/// What the channel carries: the entry, and the tag of the node that made it.
#[derive(Serialize, Deserialize)]
struct Published {
    #[serde(flatten)]
    entry: Revocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

/// The stable id of a selector in Redis.
fn hash(sel: &Selector) -> String {
    let bytes = serde_json::to_vec(sel).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

async fn timed<T>(
    what: &'static str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| StoreError::Redis(e.into())),
        Err(_) => Err(StoreError::RedisUnavailable(what)),
    }
}

impl RedisStore {
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            link: Link::new(url)?,
        })
    }

    /// Stores one entry with its TTL; `only_new` leaves an existing one alone.
    async fn write(
        &self,
        r: &Revocation,
        only_new: bool,
        tag: Option<String>,
    ) -> Result<(), StoreError> {
        let ttl_ms = (r.keep_until - unix_now()).saturating_mul(1000);
        if ttl_ms <= 0 {
            return Ok(());
        }
        let json = serde_json::to_string(r).map_err(|_| StoreError::RedisUnavailable("encode"))?;
        let message = serde_json::to_string(&Published {
            entry: r.clone(),
            tag,
        })
        .map_err(|_| StoreError::RedisUnavailable("encode"))?;
        let h = hash(&r.selector);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let set = pipe
            .cmd("SET")
            .arg(format!("{KEY_PREFIX}{h}"))
            .arg(&json)
            .arg("PX")
            .arg(ttl_ms);
        if only_new {
            set.arg("NX");
        }
        set.ignore();
        pipe.cmd("ZADD")
            .arg(INDEX)
            .arg("GT")
            .arg(r.keep_until)
            .arg(&h)
            .ignore();
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(&message).ignore();
        Ok(self.link.query::<()>("revocation write", &pipe).await?)
    }

    /// Every entry in force in Redis, with the hashes it has.
    async fn read_all(&self) -> Result<(Vec<Revocation>, HashSet<String>), StoreError> {
        let now = unix_now();
        let mut purge = redis::cmd("ZREMRANGEBYSCORE");
        purge.arg(INDEX).arg("-inf").arg(now);
        self.link.query::<()>("revocation purge", &purge).await?;
        let mut range = redis::cmd("ZRANGE");
        range.arg(INDEX).arg(0).arg(-1);
        let hashes: Vec<String> = self.link.query("revocation read", &range).await?;
        if hashes.is_empty() {
            return Ok((Vec::new(), HashSet::new()));
        }
        let keys: Vec<String> = hashes.iter().map(|h| format!("{KEY_PREFIX}{h}")).collect();
        // One GET per key in a pipeline rather than an MGET: the keys may
        // live on different shards of a Redis Cluster.
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("GET").arg(k);
        }
        let values: Vec<Option<String>> = self.link.query("revocation read", &pipe).await?;
        let mut entries = Vec::new();
        let mut present = HashSet::new();
        for (h, v) in hashes.into_iter().zip(values) {
            let Some(v) = v else { continue };
            match serde_json::from_str::<Revocation>(&v) {
                Ok(r) => {
                    present.insert(h);
                    entries.push(r);
                }
                Err(e) => {
                    tracing::warn!(key = %h, error = %e, "unreadable revocation in redis skipped")
                }
            }
        }
        Ok((entries, present))
    }

    /// Reads everything (into `sink`) and writes back what Redis lacks.
    async fn catch_up(&self, sink: &Sink, known: &Known) -> Result<usize, StoreError> {
        let (entries, present) = self.read_all().await?;
        let n = entries.len();
        for r in entries {
            sink(r, None);
        }
        let now = unix_now();
        for r in known() {
            if r.keep_until > now && !present.contains(&hash(&r.selector)) {
                self.write(&r, true, None).await?;
            }
        }
        Ok(n)
    }

    /// One subscription, from connect until it is lost or cancelled.
    async fn subscribed(
        &self,
        sink: &Sink,
        known: &Known,
        cancel: &CancellationToken,
        connected: &mut Option<bool>,
    ) -> Result<(), StoreError> {
        let mut pubsub = self.link.pubsub().await?;
        timed("subscribe timed out", pubsub.subscribe(CHANNEL)).await?;
        let n = self.catch_up(sink, known).await?;
        if *connected != Some(true) {
            tracing::info!(
                entries = n,
                "redis revocation store connected and caught up"
            );
            *connected = Some(true);
        }
        let (mut ctl, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(StoreError::RedisUnavailable("subscription closed"));
                    };
                    match msg.get_payload::<String>().map(|s| serde_json::from_str::<Published>(&s)) {
                        Ok(Ok(p)) => sink(p.entry, p.tag),
                        Ok(Err(e)) => tracing::warn!(error = %e, "unreadable revocation message skipped"),
                        Err(e) => tracing::warn!(error = %e, "unreadable revocation message skipped"),
                    }
                }
                _ = ping.tick() => {
                    timed("ping timed out", ctl.ping::<redis::Value>()).await?;
                }
            }
        }
    }
}

impl RevocationStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    /// A Redis that is down at start does not stop the gateway: it starts
    /// with what it has and the sync loop catches up once Redis is back.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(async {
            match self.read_all().await {
                Ok((entries, _)) => Ok(entries),
                Err(e) => {
                    tracing::warn!(error = %e, "redis unreachable at start; revocations are caught up once it is back");
                    Ok(Vec::new())
                }
            }
        })
    }

    fn add(&self, r: Revocation, tag: Option<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.write(&r, false, tag).await })
    }

    fn purge(&self, now: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut purge = redis::cmd("ZREMRANGEBYSCORE");
            purge.arg(INDEX).arg("-inf").arg(now);
            Ok(self.link.query::<()>("revocation purge", &purge).await?)
        })
    }

    fn sync(
        self: Arc<Self>,
        sink: Sink,
        known: Known,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // None until the first attempt: each change is logged once.
            let mut connected = None;
            let mut backoff = BACKOFF_MIN;
            while !cancel.is_cancelled() {
                let started = tokio::time::Instant::now();
                if let Err(e) = self
                    .subscribed(&sink, &known, &cancel, &mut connected)
                    .await
                {
                    if connected != Some(false) {
                        tracing::warn!(error = %e, "redis revocation store unreachable; enforcing the revocations known here and retrying");
                        connected = Some(false);
                    }
                }
                if started.elapsed() > BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        })
    }
}
