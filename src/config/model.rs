//! The validated configuration: what `gateway.yaml` means once every key has been
//! parsed, every `${VAR}` expanded, every relative path resolved against the
//! config file's folder and every cross-reference checked.
//!
//! Nothing here does I/O or holds a live resource. Runtime state (TLS configs,
//! decoded keys, the route table) is built *from* a [`Config`] by the modules
//! that own it, so a reload can build the new state completely before swapping.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a running gateway needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from; reloads read it again.
    pub source: PathBuf,
    pub log: LogConfig,
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    pub issuers: Vec<IssuerConfig>,
    /// Global token source order; a route may override it.
    pub token_sources: Vec<TokenSource>,
    pub routes: Vec<RouteConfig>,
    pub revocation: RevocationConfig,
    /// Extension (`revocation.retain`): the longest token lifetime to cover.
    /// A revocation is kept for this long plus the largest leeway, or longer
    /// when a covered live session's token expires later.
    pub revocation_retain: Duration,
    pub limits: Limits,
    /// Extension: a built-in echo upstream so the shipped `gateway.yaml` works
    /// with no external service.
    pub demo: Option<DemoConfig>,
    /// Extension (`workers`): I/O worker threads; `None`: one per core.
    /// Read at start only (a reload keeps the running count).
    pub workers: Option<usize>,
    /// `node_id`: this gateway's name among the replicas sharing a Redis;
    /// `None`: host name and process id, chosen at start.
    pub node_id: Option<String>,
    pub cluster: ClusterConfig,
    /// Peers whose `X-Forwarded-For` is believed (the client is the
    /// right-most address not in one of these ranges).
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// Extension (`readyz`): what `/readyz` requires of the issuers' keys.
    pub readyz: Readiness,
    /// Extension (`tracing`): OpenTelemetry export; `None`: no traces.
    /// Read at start only.
    pub tracing: Option<TracingConfig>,
}

/// `tracing:` in the config, see [`crate::telemetry::trace`].
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base address; spans go to `/v1/traces`.
    pub otlp_endpoint: String,
    /// Share of new traces sampled (a trusted client's decision wins).
    pub sample_ratio: f64,
    /// Continue the trace of a client's `traceparent` header.
    pub trust_traceparent: bool,
    pub service_name: String,
}

/// What `/readyz` requires of the issuers' keys (`readyz:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readiness {
    /// Every issuer has keys (default, the contract's reading): a pod whose
    /// routes would refuse some tokens is not ready.
    #[default]
    AllIssuers,
    /// At least one issuer has keys: one unreachable identity provider does
    /// not keep a pod out of the load balancer for the routes of the others.
    AnyIssuer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter directive: `info`, `debug`, `wsgate=debug,info`...
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Every connection starts with a PROXY protocol (v1 or v2) header,
    /// read before TLS; one without is refused.
    pub proxy_protocol: bool,
    /// SO_REUSEPORT: several processes may listen on this address.
    pub reuse_port: bool,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub sni: Vec<SniCert>,
    /// When set, clients must present a certificate chaining to this CA.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SniCert {
    /// Lower-cased server names; `*.example.com` wildcards allowed.
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// Bearer token for `/admin/*`. `None` means `/admin/*` is refused to everyone:
    /// an admin API without a token is never open.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub id: String,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When non-empty, `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// Never empty, never `none` (there is no such `Algorithm`).
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub keys: KeySource,
    /// Trust anchors for `jwks_url` / discovery over https; `None` = system roots.
    pub ca: Option<PathBuf>,
    pub leeway: Duration,
    pub required_claims: Vec<String>,
    /// Extension (`refetch_interval`, remote key sets): a token naming an
    /// unknown `kid` triggers a fetch when the last one is at least this old,
    /// so a rotated-in key is accepted within it, and a flood of random kids
    /// costs at most one fetch per interval.
    pub refetch_interval: Duration,
}

#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// HS* shared secret (bytes as written in the config).
    Secret(String),
    PublicKey(PathBuf),
    JwksFile(PathBuf),
    JwksUrl(String),
    /// OIDC discovery from `issuer` + `/.well-known/openid-configuration`.
    Discovery,
}

// The secret must never reach a log line, even at debug level.
impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::PublicKey(p) => f.debug_tuple("PublicKey").field(p).finish(),
            KeySource::JwksFile(p) => f.debug_tuple("JwksFile").field(p).finish(),
            KeySource::JwksUrl(u) => f.debug_tuple("JwksUrl").field(u).finish(),
            KeySource::Discovery => f.write_str("Discovery"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// `Authorization: Bearer <jwt>`
    Header,
    /// `Sec-WebSocket-Protocol: bearer, <jwt>[, app...]`
    Subprotocol,
    /// `?<name>=<jwt>`
    Query(String),
    /// `Cookie: <name>=<jwt>`
    Cookie(String),
    /// The first text frame: `{"token": ...}` or `{"jwt": ...}`, or the
    /// string at a JSON pointer (graphql-ws's `connection_init`).
    FirstMessage(FirstMessage),
}

/// How the token is read from the first message, and whether that message
/// goes on to the upstream (`{first_message: {pointer, forward}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FirstMessage {
    /// An RFC 6901 JSON pointer to the token (a `Bearer ` prefix is
    /// allowed there); `None`: the `token` or `jwt` member.
    pub pointer: Option<String>,
    /// Pass the message to the upstream once the session is admitted: the
    /// application protocol needs it (graphql-ws's `connection_init`).
    pub forward: bool,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub id: String,
    /// Lower-cased; exact or `*.suffix`.
    pub host: Option<String>,
    /// As written: `/exact`, `/prefix/*`, `{name}` segments.
    pub path: String,
    pub upstream: UpstreamConfig,
    pub auth: AuthMode,
    /// Accepted issuer ids; `None` = all.
    pub issuers: Option<Vec<String>>,
    /// Overrides the global list when set.
    pub token_sources: Option<Vec<TokenSource>>,
    pub require: Vec<RequireRule>,
    /// When set, a present `Origin` must be one of these (compared case-insensitively).
    pub origins: Option<Vec<String>>,
    pub reject: RejectMode,
    /// Extension (`http`): what a plain HTTP request on the route gets.
    pub http: HttpMode,
    pub forward: ForwardConfig,
    pub session: SessionConfig,
    pub limits: RouteLimits,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Never empty.
    pub urls: Vec<UpstreamUrl>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub ca: Option<PathBuf>,
    /// Path rewrite template (`/ws/{room}`); `None` = the request path.
    pub path: Option<String>,
}

/// One parsed `ws://` / `wss://` upstream address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    /// Host as written (a name or an IP literal, without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix from the URL (without trailing `/`), usually empty.
    pub base_path: String,
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        if self.host.contains(':') {
            write!(
                f,
                "{scheme}://[{}]:{}{}",
                self.host, self.port, self.base_path
            )
        } else {
            write!(
                f,
                "{scheme}://{}:{}{}",
                self.host, self.port, self.base_path
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConnections,
    /// Extension: the same key always reaches the same URL (while it is up),
    /// so every request of a client session lands where its state lives.
    Hash(HashKey),
}

/// What `balance: hash` hashes. A request without the key falls back to
/// its client address, which is just as stable for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Query(String),
    Cookie(String),
    /// Lower-cased, valid header name.
    Header(http::HeaderName),
    /// Dotted path into the verified token's claims.
    Claim(String),
}

/// Extension (`routes[].http`): plain (non-WebSocket) HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpMode {
    /// 426 with `Upgrade: websocket` (the contract's default).
    #[default]
    Deny,
    /// Authenticated like a handshake, then proxied to the upstream's
    /// `http://` / `https://` form.
    Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequireRule {
    /// Dotted path into the claims (`realm_access.roles`).
    pub claim: String,
    pub op: RuleOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleOp {
    /// Values may contain `{param}` placeholders.
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
    /// A string (may contain `{param}`), number or bool.
    Equals(serde_json::Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectMode {
    Status,
    Close,
}

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Header name (validated, lower-cased) and value template, in file order.
    pub headers: Vec<(http::HeaderName, String)>,
    pub token: TokenForward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenForward {
    Strip,
    Keep,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub close_on_expiry: bool,
    pub refresh: bool,
    pub idle_timeout: Option<Duration>,
    pub max_message_size: usize,
    /// Keepalive: a leg silent this long is pinged; `None` (`0`) disables.
    pub ping_interval: Option<Duration>,
    /// Keepalive: how long a pinged leg has to send any frame back.
    pub ping_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub max_sessions_per_subject: Option<u32>,
    /// Sessions on this route (first-message waiters included); beyond it
    /// handshakes get 503.
    pub max_sessions: Option<usize>,
    pub scope: LimitScope,
}

/// Where `max_sessions_per_subject` is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitScope {
    /// On this gateway alone.
    #[default]
    Node,
    /// Across every replica on the same Redis.
    Cluster,
}

/// Extension `cluster:`: replicas sharing `revocation.redis_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    pub on_redis_down: RedisDown,
}

/// What a `scope: cluster` limit does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedisDown {
    /// Admit, counting on this node only (the limit still holds per node).
    #[default]
    Open,
    /// Refuse with 503: Redis is required, and `/readyz` says so.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationConfig {
    Memory,
    File(PathBuf),
    Redis(String),
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub handshake_timeout: Duration,
    pub auth_timeout: Duration,
    pub shutdown_grace: Duration,
    /// On shutdown, how long the listeners keep accepting after `/readyz`
    /// turns 503, so that load balancers see the 503 before connections are
    /// refused.
    pub drain_delay: Duration,
    /// Connections accepted but not yet a session (TLS, HTTP head, waiting
    /// for a first message); beyond it a new connection is closed at once.
    pub max_pending: usize,
}

#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where the built-in echo upstream listens.
    pub echo_bind: SocketAddr,
}

// === defaults (the CONTRACT's) ===

pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// `issuers[].refetch_interval` when not set.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;
pub const DEFAULT_MAX_PENDING: usize = 1024;
pub const DEFAULT_REVOCATION_FILE: &str = "wsgate-revocations.jsonl";
pub const DEFAULT_REVOCATION_RETAIN: Duration = Duration::from_secs(24 * 3600);
