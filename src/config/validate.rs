//! Raw document → [`Config`]: defaults, cross-references, referenced files.
//!
//! Every check records its problem in [`Ctx`] and carries on, so one run of
//! `wsgate check` lists everything that is wrong. A part that failed is left
//! out of the result; the result is only returned when nothing failed.
//! Listeners, issuers and routes live in their own files (`listeners.rs`,
//! `issuers.rs`, `routes.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, FieldPath};
use super::listeners::{admin, check_distinct_binds, demo, listeners};
use super::model::*;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::{files, issuers, risks, routes};

/// Collects problems while validating one document.
pub(crate) struct Ctx {
    /// The config file as the user named it (for messages).
    pub file: PathBuf,
    /// The folder relative paths are resolved against.
    pub dir: PathBuf,
    pub errors: Vec<ConfigError>,
    /// Risky but valid settings: `check` prints them and exits 0, `run` logs
    /// them at startup.
    pub warnings: Vec<ConfigError>,
}

impl Ctx {
    pub fn err(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(&self.file, path, message.into()));
    }

    pub fn warn(&mut self, path: FieldPath, message: impl Into<String>) {
        self.warnings
            .push(ConfigError::new(&self.file, path, message.into()));
    }

    /// `Some(v)` when present, else records "missing" with a hint.
    pub fn required<'v, T>(
        &mut self,
        value: &'v Option<T>,
        path: FieldPath,
        hint: &str,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.err(path, format!("missing; {hint}"));
        }
        value.as_ref()
    }

    /// A config-relative path, resolved against the config's folder.
    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// A file path the config names: resolved, and checked with `check`.
    pub fn file(
        &mut self,
        value: &str,
        path: FieldPath,
        check: impl FnOnce(&Path) -> Result<(), files::FileError>,
    ) -> Option<PathBuf> {
        if value.trim().is_empty() {
            self.err(path, "empty file path");
            return None;
        }
        let resolved = self.resolve(value);
        match check(&resolved) {
            Ok(()) => Some(resolved),
            Err(e) => {
                self.err(path, e.to_string());
                None
            }
        }
    }

    pub fn duration(
        &mut self,
        value: &Option<Scalar>,
        path: FieldPath,
        default: Duration,
    ) -> Duration {
        self.opt_duration(value, path).unwrap_or(default)
    }

    pub fn opt_duration(&mut self, value: &Option<Scalar>, path: FieldPath) -> Option<Duration> {
        let text = value.as_ref()?;
        match parse_duration(&text.0) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, format!("invalid duration: {e}"));
                None
            }
        }
    }

    pub fn size(&mut self, value: &Option<Scalar>, path: FieldPath, default: usize) -> usize {
        let Some(text) = value else { return default };
        match parse_size(&text.0) {
            Ok(s) => s,
            Err(e) => {
                self.err(path, format!("invalid size: {e}"));
                default
            }
        }
    }

    pub fn bind(&mut self, value: &str, path: FieldPath) -> Option<SocketAddr> {
        match value.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    path,
                    "not an IP address and port; write it like \"0.0.0.0:8443\", \"127.0.0.1:8080\" or \"[::]:8443\" (host names are not resolved)",
                );
                None
            }
        }
    }

    /// One of a fixed set of words, or the default when absent.
    pub fn choice<T: Copy>(
        &mut self,
        value: &Option<String>,
        path: FieldPath,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = value else { return default };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text.as_str()) {
            return *v;
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
        self.err(path, format!("expected one of {}", names.join(", ")));
        default
    }
}

/// More I/O worker threads than this is a typo, not a machine.
const MAX_WORKERS: u64 = 1024;

/// Validates a parsed document. `file` names the config in messages; `dir` is
/// where its relative paths point from. On success, the warnings come with
/// the config.
pub(crate) fn validate(
    raw: &RawConfig,
    file: &Path,
    dir: &Path,
) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let mut cx = Ctx {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let root = FieldPath::root();
    let log = log(&mut cx, raw.log.as_ref(), root.key("log"));
    let listeners = listeners(&mut cx, raw.listeners.as_deref(), root.key("listeners"));
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| admin(&mut cx, a, root.key("admin")));
    let demo = raw
        .demo
        .as_ref()
        .and_then(|d| demo(&mut cx, d, root.key("demo")));
    check_distinct_binds(&mut cx, &listeners, admin.as_ref(), demo.as_ref());
    let issuers = issuers::issuers(
        &mut cx,
        raw.issuers.as_deref().unwrap_or(&[]),
        root.key("issuers"),
    );
    let token_sources = match &raw.token_sources {
        Some(list) => token_sources(&mut cx, list, root.key("token_sources")),
        None => vec![TokenSource::Header, TokenSource::Subprotocol],
    };
    // Routes are checked against the ids as written, so that one broken issuer
    // does not also make every route naming it fail.
    let issuer_ids: Vec<&str> = raw
        .issuers
        .iter()
        .flatten()
        .filter_map(|i| i.id.as_deref())
        .collect();
    let routes = routes::routes(
        &mut cx,
        raw.routes.as_deref().unwrap_or(&[]),
        &issuer_ids,
        root.key("routes"),
    );
    let needs_issuer = raw
        .routes
        .iter()
        .flatten()
        .any(|r| r.auth.as_deref() != Some("none"));
    if needs_issuer && raw.issuers.as_ref().is_none_or(|i| i.is_empty()) {
        cx.err(
            root.key("issuers"),
            "at least one issuer is needed: some route has `auth: required` (the default); add an issuer, or set `auth: none` on every route",
        );
    }
    let revocation = revocation(&mut cx, raw.revocation.as_ref(), root.key("revocation"));
    let revocation_retain = cx.duration(
        &raw.revocation.as_ref().and_then(|r| r.retain.clone()),
        root.key("revocation").key("retain"),
        crate::config::model::DEFAULT_REVOCATION_RETAIN,
    );
    let limits = limits(&mut cx, raw.limits.as_ref(), root.key("limits"));
    let node_id = super::cluster::node_id(&mut cx, raw.node_id.as_ref(), root.key("node_id"));
    let cluster =
        super::cluster::cluster(&mut cx, raw.cluster.as_ref(), &revocation, &routes, &root);
    let workers = match raw.workers {
        None => None,
        Some(n @ 1..=MAX_WORKERS) => Some(n as usize),
        Some(_) => {
            cx.err(
                root.key("workers"),
                format!("must be between 1 and {MAX_WORKERS} (leave it out for one per core)"),
            );
            None
        }
    };
    let readyz = match raw.readyz.as_deref() {
        None | Some("all_issuers") => Readiness::AllIssuers,
        Some("any_issuer") => Readiness::AnyIssuer,
        Some(other) => {
            cx.err(
                root.key("readyz"),
                format!("unknown value `{other}`; use all_issuers or any_issuer"),
            );
            Readiness::AllIssuers
        }
    };
    let tracing = raw
        .tracing
        .as_ref()
        .and_then(|t| super::tracing::tracing(&mut cx, t, root.key("tracing")));
    risks::cookie_needs_origins(&mut cx, raw, &token_sources);
    let trusted_proxies = super::listeners::trusted_proxies(
        &mut cx,
        raw.trusted_proxies.as_deref(),
        root.key("trusted_proxies"),
    );
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    let config = Config {
        source: file.to_path_buf(),
        log,
        listeners,
        admin,
        issuers,
        token_sources,
        routes,
        revocation,
        revocation_retain,
        limits,
        demo,
        workers,
        readyz,
        trusted_proxies,
        node_id,
        cluster,
        tracing,
    };
    risks::warnings(&mut cx, &config);
    Ok((config, cx.warnings))
}

fn log(cx: &mut Ctx, raw: Option<&RawLog>, path: FieldPath) -> LogConfig {
    let level = raw
        .and_then(|l| l.level.clone())
        .unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() || level.trim().is_empty() {
        cx.err(
            path.key("level"),
            "not a log filter; use trace, debug, info, warn or error (or a directive like `wsgate=debug,info`)",
        );
    }
    let format = cx.choice(
        &raw.and_then(|l| l.format.clone()),
        path.key("format"),
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        LogFormat::Text,
    );
    LogConfig { level, format }
}

pub(crate) fn token_sources(
    cx: &mut Ctx,
    raw: &[RawTokenSource],
    path: FieldPath,
) -> Vec<TokenSource> {
    if raw.is_empty() {
        cx.err(
            path.clone(),
            "empty list: no token could ever be found; list at least one source, e.g. [header]",
        );
    }
    let mut out: Vec<TokenSource> = Vec::new();
    for (i, source) in raw.iter().enumerate() {
        let p = path.index(i);
        let parsed = match source {
            RawTokenSource::Named(name) => match name.as_str() {
                "header" => Some(TokenSource::Header),
                "subprotocol" => Some(TokenSource::Subprotocol),
                "first_message" => Some(TokenSource::FirstMessage(FirstMessage::default())),
                "query" | "cookie" => {
                    cx.err(
                        p.clone(),
                        format!(
                            "`{name}` needs a parameter name: write `{{{name}: access_token}}`"
                        ),
                    );
                    None
                }
                _ => {
                    cx.err(p.clone(), "unknown token source; expected `header`, `subprotocol`, `first_message`, `{query: NAME}` or `{cookie: NAME}`");
                    None
                }
            },
            RawTokenSource::Keyed(k) => keyed_source(cx, k, p.clone()),
        };
        if let Some(s) = parsed {
            let twice = out.contains(&s)
                || (matches!(s, TokenSource::FirstMessage(_))
                    && out
                        .iter()
                        .any(|o| matches!(o, TokenSource::FirstMessage(_))));
            if twice {
                cx.err(p, "listed twice");
            } else {
                out.push(s);
            }
        }
    }
    out
}

fn keyed_source(cx: &mut Ctx, raw: &RawKeyedSource, path: FieldPath) -> Option<TokenSource> {
    if let Some(fm) = &raw.first_message {
        if raw.query.is_some() || raw.cookie.is_some() {
            cx.err(path, "one source per entry: `first_message` alone");
            return None;
        }
        let pointer = fm.pointer.clone();
        if let Some(p) = &pointer {
            if !p.starts_with('/') {
                cx.err(
                    path.key("first_message").key("pointer"),
                    "a JSON pointer (RFC 6901) starts with `/`, e.g. /payload/token",
                );
                return None;
            }
        }
        return Some(TokenSource::FirstMessage(FirstMessage {
            pointer,
            forward: fm.forward.unwrap_or(false),
        }));
    }
    let (key, name, make): (&str, &str, fn(String) -> TokenSource) = match (&raw.query, &raw.cookie)
    {
        (Some(q), None) => ("query", q, TokenSource::Query),
        (None, Some(c)) => ("cookie", c, TokenSource::Cookie),
        _ => {
            cx.err(
                path,
                "expected exactly one of `query: NAME` or `cookie: NAME`",
            );
            return None;
        }
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        cx.err(
            path.key(key),
            "expected a parameter name made of letters, digits, `-`, `_` or `.`",
        );
        return None;
    }
    Some(make(name.to_owned()))
}

fn revocation(cx: &mut Ctx, raw: Option<&RawRevocation>, path: FieldPath) -> RevocationConfig {
    let Some(raw) = raw else {
        return RevocationConfig::File(cx_default_file(&cx.dir));
    };
    #[derive(Clone, Copy)]
    enum Store {
        Memory,
        File,
        Redis,
    }
    let store = cx.choice(
        &raw.store,
        path.key("store"),
        &[
            ("memory", Store::Memory),
            ("file", Store::File),
            ("redis", Store::Redis),
        ],
        Store::File,
    );
    let reject_key = |cx: &mut Ctx, present: bool, key: &str, for_store: &str| {
        if present {
            cx.err(
                path.key(key),
                format!("only used by `store: {for_store}`; remove it or change the store"),
            );
        }
    };
    match store {
        Store::Memory => {
            reject_key(cx, raw.path.is_some(), "path", "file");
            reject_key(cx, raw.redis_url.is_some(), "redis_url", "redis");
            RevocationConfig::Memory
        }
        Store::File => {
            reject_key(cx, raw.redis_url.is_some(), "redis_url", "redis");
            let file = match &raw.path {
                Some(p) => cx.resolve(p),
                None => cx_default_file(&cx.dir),
            };
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    cx.err(
                        path.key("path"),
                        format!(
                            "folder {} does not exist; create it or change the path",
                            parent.display()
                        ),
                    );
                }
            }
            RevocationConfig::File(file)
        }
        Store::Redis => {
            reject_key(cx, raw.path.is_some(), "path", "file");
            let url = cx.required(
                &raw.redis_url,
                path.key("redis_url"),
                "add `redis_url: redis://127.0.0.1:6379/0`",
            );
            match url {
                Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                    // The client `run` opens, without connecting: it parses
                    // host, port, database and credentials. Its messages are
                    // fixed texts that never quote the URL (which may hold a
                    // password).
                    match ::redis::Client::open(u.as_str()) {
                        Ok(_) => RevocationConfig::Redis(u.clone()),
                        Err(e) => {
                            cx.err(
                                path.key("redis_url"),
                                format!("not a usable Redis URL ({e}); write it like redis://[:PASSWORD@]HOST[:PORT][/DB]"),
                            );
                            RevocationConfig::Memory
                        }
                    }
                }
                // Sentinel and Cluster forms, and anything else.
                Some(u) => match super::cluster::parse_redis_url(u) {
                    Ok(_) => RevocationConfig::Redis(u.clone()),
                    Err(e) => {
                        cx.err(path.key("redis_url"), e);
                        RevocationConfig::Memory
                    }
                },
                None => RevocationConfig::Memory,
            }
        }
    }
}

fn cx_default_file(dir: &Path) -> PathBuf {
    dir.join(DEFAULT_REVOCATION_FILE)
}

fn limits(cx: &mut Ctx, raw: Option<&RawLimits>, path: FieldPath) -> Limits {
    let none = RawLimits {
        max_sessions: None,
        handshake_timeout: None,
        auth_timeout: None,
        shutdown_grace: None,
        drain_delay: None,
        max_pending: None,
    };
    let raw = raw.unwrap_or(&none);
    let max_sessions = match raw.max_sessions.map(usize::try_from) {
        None => DEFAULT_MAX_SESSIONS,
        Some(Ok(0)) | Some(Err(_)) => {
            cx.err(
                path.key("max_sessions"),
                "must be at least 1 (0 would refuse every session)",
            );
            DEFAULT_MAX_SESSIONS
        }
        Some(Ok(n)) => n,
    };
    let positive = |cx: &mut Ctx, value: &Option<Scalar>, key: &str, default: Duration| {
        let d = cx.duration(value, path.key(key), default);
        if d.is_zero() {
            cx.err(path.key(key), "must be longer than 0");
        }
        d
    };
    let handshake_timeout = positive(
        cx,
        &raw.handshake_timeout,
        "handshake_timeout",
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let auth_timeout = positive(cx, &raw.auth_timeout, "auth_timeout", DEFAULT_AUTH_TIMEOUT);
    let shutdown_grace = cx.duration(
        &raw.shutdown_grace,
        path.key("shutdown_grace"),
        DEFAULT_SHUTDOWN_GRACE,
    );
    let drain_delay = cx.duration(
        &raw.drain_delay,
        path.key("drain_delay"),
        DEFAULT_DRAIN_DELAY,
    );
    let max_pending = match raw.max_pending.map(usize::try_from) {
        None => DEFAULT_MAX_PENDING,
        Some(Ok(0)) | Some(Err(_)) => {
            cx.err(
                path.key("max_pending"),
                "must be at least 1 (0 would refuse every connection)",
            );
            DEFAULT_MAX_PENDING
        }
        Some(Ok(n)) => n,
    };
    Limits {
        max_sessions,
        handshake_timeout,
        auth_timeout,
        shutdown_grace,
        drain_delay,
        max_pending,
    }
}
