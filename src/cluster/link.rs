//! The one way wsgate talks to Redis: a [`Link`] for commands and fresh
//! subscriptions, whatever `redis_url` names (one server, Sentinel, Redis
//! Cluster).
//!
//! Reconnection is ours rather than the crate's `ConnectionManager`: that
//! one reconnects to the address it first resolved, which after a Sentinel
//! failover is the old primary (gone, or back as a read-only replica). A
//! [`Link`] drops its connection on any error that is not the server's
//! answer to the command itself, and the next call resolves the primary
//! again. Every call is bounded by [`OP_TIMEOUT`], so a Redis that hangs
//! or answers garbage costs a timeout, never a stuck gateway.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use crate::config::RedisEndpoint;

/// Bound on any single Redis round trip or connect.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("redis: {0} timed out")]
    Timeout(&'static str),
    #[error("redis_url: {0}")]
    Url(String),
}

enum Target {
    Single(redis::Client),
    /// Behind a lock: the crate's client caches its sentinel connections.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster {
        client: redis::cluster::ClusterClient,
        /// Any node can serve a subscription: a Redis Cluster delivers
        /// every `PUBLISH` to every node.
        nodes: Vec<redis::Client>,
    },
}

/// A command connection of either kind.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Link {
    target: Target,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// Whether the last command got through (for `/readyz` and logs).
    up: AtomicBool,
}

/// Errors after which the connection is not worth keeping: the server
/// answered the command itself for the others (a wrong type, a script error).
fn breaks_connection(e: &RedisError) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::ResponseError
            | ErrorKind::TypeError
            | ErrorKind::NoScriptError
            | ErrorKind::ExecAbortError
            | ErrorKind::ExtensionError
    )
}

async fn bounded<T>(
    what: &'static str,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(LinkError::Timeout(what)),
    }
}

impl Link {
    pub fn new(url: &str) -> Result<Self, LinkError> {
        let endpoint = crate::config::parse_redis_url(url).map_err(LinkError::Url)?;
        let target = match endpoint {
            RedisEndpoint::Single(u) => Target::Single(redis::Client::open(u)?),
            RedisEndpoint::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
            } => {
                let info = SentinelNodeConnectionInfo {
                    tls_mode: None,
                    redis_connection_info: Some(redis::RedisConnectionInfo {
                        db,
                        username,
                        password,
                        ..Default::default()
                    }),
                };
                let addrs: Vec<redis::ConnectionInfo> = sentinels
                    .into_iter()
                    .map(|(host, port)| redis::ConnectionInfo {
                        addr: redis::ConnectionAddr::Tcp(host, port),
                        redis: Default::default(),
                    })
                    .collect();
                let client =
                    SentinelClient::build(addrs, master, Some(info), SentinelServerType::Master)?;
                Target::Sentinel(tokio::sync::Mutex::new(client))
            }
            RedisEndpoint::Cluster { nodes } => {
                let clients = nodes
                    .iter()
                    .map(|n| redis::Client::open(n.as_str()))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(OP_TIMEOUT)
                    .response_timeout(OP_TIMEOUT)
                    .build()?;
                Target::Cluster {
                    client,
                    nodes: clients,
                }
            }
        };
        Ok(Self {
            target,
            conn: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(false),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A client for the current primary (asking the sentinels when they
    /// are in charge).
    async fn primary(&self) -> Result<redis::Client, LinkError> {
        match &self.target {
            Target::Single(c) => Ok(c.clone()),
            Target::Sentinel(s) => {
                let mut s = s.lock().await;
                bounded("asking the sentinels for the primary", s.async_get_client()).await
            }
            Target::Cluster { nodes, .. } => {
                let mut last = LinkError::Url("no cluster node".into());
                for n in nodes {
                    match bounded("connect", n.get_multiplexed_async_connection()).await {
                        Ok(_) => return Ok(n.clone()),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    async fn connect(&self) -> Result<Conn, LinkError> {
        if let Target::Cluster { client, .. } = &self.target {
            return Ok(Conn::Cluster(
                bounded("connect", client.get_async_connection()).await?,
            ));
        }
        let client = self.primary().await?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT);
        let conn = bounded(
            "connect",
            client.get_multiplexed_async_connection_with_config(&cfg),
        )
        .await?;
        Ok(Conn::Single(conn))
    }

    /// The shared command connection, (re)made on demand.
    pub async fn conn(&self) -> Result<Conn, LinkError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        match self.connect().await {
            Ok(c) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.up.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Notes the outcome of a command: a broken connection is dropped so
    /// the next call connects again (to the primary of the moment).
    pub async fn note<T>(&self, r: Result<T, LinkError>) -> Result<T, LinkError> {
        match &r {
            Ok(_) => self.up.store(true, Ordering::Release),
            Err(LinkError::Redis(e)) if !breaks_connection(e) => {
                self.up.store(true, Ordering::Release)
            }
            Err(_) => {
                self.up.store(false, Ordering::Release);
                *self.conn.lock().await = None;
            }
        }
        r
    }

    /// Runs one command or pipeline, bounded, with reconnection.
    pub async fn query<'q, T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        q: impl Into<Query<'q>>,
    ) -> Result<T, LinkError> {
        let q = q.into();
        let r = match self.conn().await {
            Ok(mut c) => match q {
                Query::Cmd(cmd) => bounded(what, cmd.query_async(&mut c)).await,
                Query::Pipe(p) => match bounded(what, p.query_async(&mut c)).await {
                    Err(LinkError::Redis(e)) if e.kind() == ErrorKind::CrossSlot => {
                        bounded(what, one_by_one(p, &mut c)).await
                    }
                    r => r,
                },
            },
            Err(e) => Err(e),
        };
        self.note(r).await
    }

    /// A new subscription connection (to the current primary).
    pub async fn pubsub(&self) -> Result<PubSub, LinkError> {
        let client = self.primary().await?;
        bounded("subscribe", client.get_async_pubsub()).await
    }
}

/// A pipeline whose keys live on several shards of a Redis Cluster, sent
/// one command at a time (each to its shard): no longer atomic, which the
/// callers allow (each command is idempotent and a catch-up repairs a
/// partial write). Every reply is returned, ignored or not, so only
/// pipelines that ignore all or none of theirs may come here.
async fn one_by_one<T: redis::FromRedisValue>(p: &Pipeline, c: &mut Conn) -> redis::RedisResult<T> {
    let mut values = Vec::new();
    for cmd in p.cmd_iter() {
        if matches!(
            cmd.args_iter().next(),
            Some(redis::Arg::Simple(b"MULTI" | b"EXEC"))
        ) {
            continue;
        }
        values.push(cmd.query_async::<Value>(c).await?);
    }
    T::from_redis_value(&Value::Array(values))
}

/// A `Cmd` or a `Pipeline`, so [`Link::query`] takes either.
pub enum Query<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

impl<'a> From<&'a Cmd> for Query<'a> {
    fn from(c: &'a Cmd) -> Self {
        Query::Cmd(c)
    }
}

impl<'a> From<&'a Pipeline> for Query<'a> {
    fn from(p: &'a Pipeline) -> Self {
        Query::Pipe(p)
    }
}
