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
//! Each replica keeps its own [`super::RevocationList`]; a check never
//! waits on Redis. The background [`RedisStore::sync`] loop subscribes, then
//! reads every entry (catch-up: nothing published while it was away is
//! missed, since it subscribes first), then applies what is pushed. When the
//! connection is lost it keeps retrying with backoff while the replica keeps
//! enforcing what it knows; on reconnect it catches up again and writes back
//! the entries Redis lacks (made here while Redis was down, or lost by a
//! Redis restart without persistence).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::store::{BoxFuture, Known, RevocationStore, Sink, StoreError};
use super::{Revocation, Selector};
use crate::session::unix_now;

const KEY_PREFIX: &str = "wsgate:revocation:";
const INDEX: &str = "wsgate:revocations";
const CHANNEL: &str = "wsgate:revocations";
/// Bound on any single Redis round trip or connect.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a quiet subscription is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct RedisStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
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
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::RedisUnavailable(what)),
    }
}

impl RedisStore {
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The shared command connection, created on first use; it reconnects
    /// by itself after an error.
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(500);
        let c = timed(
            "connect timed out",
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Stores one entry with its TTL; `only_new` leaves an existing one alone.
    async fn write(&self, r: &Revocation, only_new: bool) -> Result<(), StoreError> {
        let ttl_ms = (r.keep_until - unix_now()).saturating_mul(1000);
        if ttl_ms <= 0 {
            return Ok(());
        }
        let json = serde_json::to_string(r).map_err(|_| StoreError::RedisUnavailable("encode"))?;
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
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(&json).ignore();
        let mut conn = self.conn().await?;
        timed("write timed out", pipe.query_async::<()>(&mut conn)).await
    }

    /// Every entry in force in Redis, with the hashes it has.
    async fn read_all(&self) -> Result<(Vec<Revocation>, HashSet<String>), StoreError> {
        let mut conn = self.conn().await?;
        let now = unix_now();
        timed(
            "purge timed out",
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(INDEX)
                .arg("-inf")
                .arg(now)
                .query_async::<()>(&mut conn),
        )
        .await?;
        let hashes: Vec<String> = timed(
            "read timed out",
            redis::cmd("ZRANGE")
                .arg(INDEX)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await?;
        if hashes.is_empty() {
            return Ok((Vec::new(), HashSet::new()));
        }
        let keys: Vec<String> = hashes.iter().map(|h| format!("{KEY_PREFIX}{h}")).collect();
        let values: Vec<Option<String>> = timed(
            "read timed out",
            redis::cmd("MGET").arg(&keys).query_async(&mut conn),
        )
        .await?;
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
            sink(r);
        }
        let now = unix_now();
        for r in known() {
            if r.keep_until > now && !present.contains(&hash(&r.selector)) {
                self.write(&r, true).await?;
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
        let mut pubsub = timed("connect timed out", self.client.get_async_pubsub()).await?;
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
                    match msg.get_payload::<String>().map(|s| serde_json::from_str::<Revocation>(&s)) {
                        Ok(Ok(r)) => sink(r),
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

    fn add(&self, r: Revocation) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.write(&r, false).await })
    }

    fn purge(&self, now: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            timed(
                "purge timed out",
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(INDEX)
                    .arg("-inf")
                    .arg(now)
                    .query_async::<()>(&mut conn),
            )
            .await
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
