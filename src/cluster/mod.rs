//! Replicas on one Redis behave as one gateway.
//!
//! Gateways with `revocation: {store: redis}` form a cluster. Each has a
//! node id and announces itself with a heartbeat:
//!
//! ```text
//! {wsgate}:nodes        sorted set: node id -> unix ms (Redis time) its lease ends
//! wsgate:cluster        channel: requests to the nodes (list, kill)
//! wsgate:reply:<req>    list: the nodes' answers to one request (expires)
//! {wsgate}:limit:<hash> per-subject counts per node (see [`leases`])
//! ```
//!
//! A node is live while its lease (renewed every [`HEARTBEAT`], lasting
//! [`NODE_TTL`]) has not ended: a crashed node drops out of the view and
//! out of the per-subject counts within [`NODE_TTL`].
//!
//! Sessions are not copied into Redis: a list or a kill is asked of the
//! nodes when an operator makes it ([`control`]), so a handshake costs no
//! Redis write (unless its route has a cluster-wide limit) and an idle
//! session no Redis memory. Revocations travel through the revocation
//! store; each node reports how many sessions it closed, so `{"closed": N}`
//! counts the whole cluster.
//!
//! - [`link`]: the connection (one server, Sentinel or Redis Cluster);
//! - [`leases`]: cluster-wide per-subject limits;
//! - [`control`]: the request channel and gathering the answers.

pub mod control;
pub mod leases;
pub mod link;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RedisDown;
use crate::session::Registry;
pub use leases::Lease;
pub use link::{Link, LinkError};

/// How often a node renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node counts as live after its last heartbeat. The contract
/// allows 10 s; five missed beats leave room for a slow Redis.
pub const NODE_TTL: Duration = Duration::from_secs(5);

/// The node set; hash-tagged to share a Redis Cluster shard with the
/// per-subject counts that read it.
pub(crate) const NODES: &str = "{wsgate}:nodes";

/// Renews this node's lease and forgets ended ones, in Redis time.
/// KEYS[1] the node set; ARGV node, lease ms.
const BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
"#;

/// The nodes whose lease has not ended. KEYS[1] the node set.
const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"#;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The default node id: host name and process id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wsgate".to_owned());
    format!("{host}-{}", std::process::id())
}

pub struct Cluster {
    node: Arc<str>,
    link: Arc<Link>,
    registry: Arc<Registry>,
    leases: Arc<leases::Leases>,
    on_redis_down: RedisDown,
    /// [`UNKNOWN`] until the first heartbeat, then [`UP`] or [`DOWN`]
    /// (logged on change).
    beating: AtomicU8,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Cluster {
    pub fn new(
        url: &str,
        node: String,
        on_redis_down: RedisDown,
        registry: Arc<Registry>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, LinkError> {
        let node: Arc<str> = node.into();
        let link = Arc::new(Link::new(url)?);
        let leases = leases::Leases::new(Arc::clone(&node), Arc::clone(&link));
        Ok(Arc::new(Self {
            node,
            link,
            registry,
            leases,
            on_redis_down,
            beating: AtomicU8::new(UNKNOWN),
            tasks: TaskTracker::new(),
            cancel,
        }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn on_redis_down(&self) -> RedisDown {
        self.on_redis_down
    }

    /// Whether Redis answered the last heartbeat.
    pub fn redis_up(&self) -> bool {
        self.beating.load(Ordering::Acquire) == UP
    }

    /// Starts the heartbeat, the request subscription and the lease releases.
    pub fn start(self: &Arc<Self>) {
        tracing::info!(node = %self.node, "cluster node starting");
        let me = Arc::clone(self);
        self.tasks.spawn(async move { me.heartbeat_loop().await });
        let me = Arc::clone(self);
        self.tasks.spawn(async move { control::serve(me).await });
        let leases = Arc::clone(&self.leases);
        self.tasks.spawn(leases.run_releases(self.cancel.clone()));
    }

    /// Leaves the cluster: the node drops out of the view at once and its
    /// per-subject places stop counting (the counts read the node set;
    /// those still held are given back too).
    pub async fn stop(&self) {
        self.cancel.cancel();
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(NODES).arg(&*self.node);
        let _ = self.link.query::<()>("leaving", &cmd).await;
        self.leases.release_all().await;
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }

    async fn heartbeat_loop(&self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let r = self.beat().await;
            let now = if r.is_ok() { UP } else { DOWN };
            let was = self.beating.swap(now, Ordering::AcqRel);
            match (was, r) {
                (UNKNOWN, Ok(())) => {
                    tracing::info!(node = %self.node, "cluster node joined: heartbeat in redis");
                }
                (UNKNOWN | UP, Err(e)) => {
                    let limits = match self.on_redis_down {
                        RedisDown::Open => "counted per node",
                        RedisDown::Closed => "refused (503) and /readyz fails",
                    };
                    tracing::warn!(error = %e, node = %self.node, "redis unreachable: the admin API sees this node only, revocations are enforced as known here, cluster-wide limits are {limits}; retrying");
                }
                (DOWN, Ok(())) => {
                    tracing::info!(node = %self.node, "redis reachable again: cluster view and cluster-wide limits restored");
                }
                _ => {}
            }
        }
    }

    /// One heartbeat: the node's lease, and the removal of nodes whose
    /// lease ended. The per-subject counts need nothing more: they read
    /// the node set.
    async fn beat(&self) -> Result<(), LinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(BEAT)
            .arg(1)
            .arg(NODES)
            .arg(&*self.node)
            .arg(NODE_TTL.as_millis() as u64);
        self.link.query("heartbeat", &cmd).await
    }

    /// The nodes whose lease has not ended, this one included.
    pub async fn live_nodes(&self) -> Result<Vec<String>, LinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LIVE).arg(1).arg(NODES);
        self.link.query("live nodes", &cmd).await
    }

    /// Takes a cluster-wide per-subject place. `Err`: Redis could not say.
    pub async fn acquire(
        &self,
        route: &str,
        iss: &str,
        sub: &str,
        limit: u32,
    ) -> Result<Option<Lease>, LinkError> {
        self.leases
            .acquire(leases::key(route, iss, sub), limit)
            .await
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

/// Joins the replica set when the revocation store is Redis. Hand
/// [`Cluster::reporter`] to the revoker so the cluster hears of every
/// tagged revocation applied here.
pub fn join(
    config: &crate::config::Config,
    registry: &Arc<Registry>,
) -> Result<Option<Arc<Cluster>>, LinkError> {
    let crate::config::RevocationConfig::Redis(url) = &config.revocation else {
        return Ok(None);
    };
    let node = config.node_id.clone().unwrap_or_else(default_node_id);
    // Not a child of the shutdown token: the node keeps beating and
    // answering while its sessions drain, and leaves in [`Cluster::stop`].
    let cluster = Cluster::new(
        url,
        node,
        config.cluster.on_redis_down,
        Arc::clone(registry),
        CancellationToken::new(),
    )?;
    Ok(Some(cluster))
}

/// Told how many sessions a tagged revocation closed on this node (the
/// revoker's `Reporter`, spelled out so this module need not import it).
pub type Report = Arc<dyn Fn(&str, usize) + Send + Sync>;

impl Cluster {
    /// Reports, for the revocation store's tagged entries, how many sessions
    /// they closed here (see [`control`]). Holds the cluster weakly.
    pub fn reporter(self: &Arc<Self>) -> Report {
        let weak = Arc::downgrade(self);
        Arc::new(move |tag: &str, closed: usize| {
            if let Some(c) = weak.upgrade() {
                c.report(tag, closed);
            }
        })
    }
}

/// A listening socket with SO_REUSEPORT (and SO_REUSEADDR), so that
/// several processes on one host share the address.
pub fn bind_reuse_port(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
