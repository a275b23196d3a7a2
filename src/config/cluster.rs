//! Replica settings: `node_id`, the `cluster:` block, the `redis_url` forms
//! (one server, Sentinel, Redis Cluster) and the rule that a `scope: cluster`
//! limit needs the Redis store.
//!
//! The URL parser lives here, free of I/O, so that `wsgate check` rejects a
//! malformed URL with the same code the gateway later connects with.

use super::error::FieldPath;
use super::model::*;
use super::raw::*;
use super::validate::Ctx;

/// Where the shared Redis is, as `redis_url` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// `redis://` or `rediss://`: one server.
    Single(String),
    /// `redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/<db>]`: the
    /// sentinels are asked which server is the primary, again after every
    /// lost connection, so a failover is followed.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
    },
    /// `redis+cluster://[user:pass@]h1:p1,h2:p2`: seed nodes of a Redis Cluster.
    Cluster { nodes: Vec<String> },
}

const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

/// Parses every form of `redis_url`. The error says what was expected.
pub fn parse_redis_url(url: &str) -> Result<RedisEndpoint, String> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return ::redis::parse_redis_url(url)
            .map(|_| RedisEndpoint::Single(url.to_owned()))
            .ok_or_else(|| "not a valid redis:// URL".to_owned());
    }
    let (rest, sentinel) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("redis+cluster://") {
        (r, false)
    } else {
        return Err(
            "expected a redis:// or rediss:// URL, or redis+sentinel:// or redis+cluster://".into(),
        );
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or(("", a))) {
        Some((u, p)) => (
            Some(u.to_owned()).filter(|u| !u.is_empty()),
            Some(p.to_owned()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let default_port = if sentinel { SENTINEL_PORT } else { REDIS_PORT };
    let mut addrs = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("`{h}`: the port is not a number"))?,
            ),
            None => (h, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("a host is missing in the list of servers".into());
        }
        addrs.push((host.to_owned(), port));
    }
    if !sentinel {
        if !path.is_empty() {
            return Err("redis+cluster:// takes no path (a cluster has only database 0)".into());
        }
        let creds = match (&username, &password) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (None, Some(p)) => format!(":{p}@"),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let nodes = addrs
            .iter()
            .map(|(h, p)| format!("redis://{creds}{h}:{p}"))
            .collect();
        return Ok(RedisEndpoint::Cluster { nodes });
    }
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let master = parts
        .next()
        .ok_or("name the primary after the sentinels, e.g. redis+sentinel://h:26379/mymaster")?
        .to_owned();
    let db = match parts.next() {
        Some(d) => d
            .parse::<i64>()
            .map_err(|_| format!("`{d}`: the database is not a number"))?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err("expected redis+sentinel://hosts/<master>[/<db>]".into());
    }
    Ok(RedisEndpoint::Sentinel {
        sentinels: addrs,
        master,
        db,
        username,
        password,
    })
}

/// A node id names keys and channels in Redis and appears in session ids
/// (`<node>:<n>`), so it keeps to characters that need no escaping anywhere.
fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn node_id(cx: &mut Ctx, raw: Option<&String>, path: FieldPath) -> Option<String> {
    let id = raw?;
    if valid_node_id(id) {
        Some(id.clone())
    } else {
        cx.err(
            path,
            "1 to 64 characters among letters, digits, `.`, `_` and `-`",
        );
        None
    }
}

/// The `cluster:` block, and the checks that tie replicas to the Redis store.
pub(crate) fn cluster(
    cx: &mut Ctx,
    raw: Option<&RawCluster>,
    revocation: &RevocationConfig,
    routes: &[RouteConfig],
    root: &FieldPath,
) -> ClusterConfig {
    let shared = matches!(revocation, RevocationConfig::Redis(_));
    let path = root.key("cluster");
    let on_redis_down = cx.choice(
        &raw.and_then(|c| c.on_redis_down.clone()),
        path.key("on_redis_down"),
        &[("open", RedisDown::Open), ("closed", RedisDown::Closed)],
        RedisDown::Open,
    );
    if raw.is_some() && !shared {
        cx.err(
            path,
            "only used with `revocation: {store: redis}`, which is what replicas share",
        );
    }
    for (i, r) in routes.iter().enumerate() {
        if r.limits.scope == LimitScope::Cluster && !shared {
            cx.err(
                root.key("routes")
                    .index(i)
                    .key("limits")
                    .key("scope"),
                "`scope: cluster` counts in the shared Redis: set `revocation: {store: redis, redis_url: ...}`, or use `scope: node`",
            );
        }
    }
    ClusterConfig { on_redis_down }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        assert_eq!(
            parse_redis_url("redis://127.0.0.1:6379/0"),
            Ok(RedisEndpoint::Single("redis://127.0.0.1:6379/0".into()))
        );
        assert_eq!(
            parse_redis_url("redis+sentinel://:pw@a:1,b/main/2"),
            Ok(RedisEndpoint::Sentinel {
                sentinels: vec![("a".into(), 1), ("b".into(), SENTINEL_PORT)],
                master: "main".into(),
                db: 2,
                username: None,
                password: Some("pw".into()),
            })
        );
        assert_eq!(
            parse_redis_url("redis+cluster://a:7000,b:7001"),
            Ok(RedisEndpoint::Cluster {
                nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()]
            })
        );
        for bad in [
            "http://x",
            "redis+sentinel://a:1",
            "redis+sentinel://a:x/m",
            "redis+sentinel://a:1/m/db",
            "redis+cluster://a:1/0",
            "redis+cluster://,a",
        ] {
            assert!(parse_redis_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("gw-1.eu_west"));
        for bad in ["", "a:b", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad}");
        }
    }
}
