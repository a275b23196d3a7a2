//! `gateway.yaml` as written: one struct per mapping, one field per key,
//! `deny_unknown_fields` everywhere so that a typo (`requre:`) is an error and
//! never a silently dropped rule.
//!
//! No meaning lives here. Keys are mostly `Option` even when required, so that
//! `validate` can report every missing key at once, with its path, instead of
//! serde stopping at the first one. Enumerations (`balance`, `auth`...) stay
//! strings for the same reason and for better messages.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub log: Option<RawLog>,
    pub listeners: Option<Vec<RawListener>>,
    pub admin: Option<RawAdmin>,
    pub issuers: Option<Vec<RawIssuer>>,
    pub token_sources: Option<Vec<RawTokenSource>>,
    pub routes: Option<Vec<RawRoute>>,
    pub revocation: Option<RawRevocation>,
    pub limits: Option<RawLimits>,
    pub demo: Option<RawDemo>,
    pub workers: Option<u64>,
    pub readyz: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    /// Replicas on one Redis: this gateway's name among them.
    pub node_id: Option<String>,
    /// Extension: how the replica set behaves when Redis is unreachable.
    pub cluster: Option<RawCluster>,
    pub tracing: Option<RawTracing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub on_redis_down: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub trust_traceparent: Option<bool>,
    pub service_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub bind: Option<String>,
    pub tls: Option<RawTls>,
    pub proxy_protocol: Option<bool>,
    pub reuse_port: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub sni: Option<Vec<RawSni>>,
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSni {
    pub names: Option<Vec<String>>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub id: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub keys: Option<RawKeys>,
    pub ca: Option<String>,
    pub leeway: Option<Scalar>,
    pub required_claims: Option<Vec<String>>,
    pub refetch_interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub secret: Option<String>,
    pub public_key: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub discovery: Option<bool>,
}

/// `header` | `subprotocol` | `first_message` | `{query: NAME}` | `{cookie: NAME}`.
#[derive(Debug)]
pub enum RawTokenSource {
    /// A bare word; checked against the known names in `validate`.
    Named(String),
    Keyed(RawKeyedSource),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyedSource {
    pub query: Option<String>,
    pub cookie: Option<String>,
    pub first_message: Option<RawFirstMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirstMessage {
    pub pointer: Option<String>,
    pub forward: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<RawUpstream>,
    pub auth: Option<String>,
    pub issuers: Option<Vec<String>>,
    pub token_sources: Option<Vec<RawTokenSource>>,
    pub require: Option<Vec<RawRequire>>,
    pub origins: Option<Vec<String>>,
    pub reject: Option<String>,
    /// Extension: `deny` (default) | `proxy`, for plain HTTP requests.
    pub http: Option<String>,
    pub forward: Option<RawForward>,
    pub session: Option<RawSession>,
    pub limits: Option<RawRouteLimits>,
}

/// `upstream: ws://host:port` or the long form.
#[derive(Debug)]
pub enum RawUpstream {
    Url(String),
    Long(RawUpstreamLong),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamLong {
    pub urls: Option<Vec<String>>,
    pub balance: Option<String>,
    /// With `balance: hash`: what the hash is taken of.
    pub hash_key: Option<RawHashKey>,
    pub connect_timeout: Option<Scalar>,
    pub ca: Option<String>,
    pub path: Option<String>,
}

/// `client_ip` | `{query: NAME}` | `{cookie: NAME}` | `{header: NAME}` | `{claim: PATH}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHashKey {
    Named(String),
    Keyed(RawKeyedHashKey),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyedHashKey {
    pub query: Option<String>,
    pub cookie: Option<String>,
    pub header: Option<String>,
    pub claim: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    pub claim: Option<String>,
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
    pub equals: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub headers: Option<OrderedMap<String>>,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub close_on_expiry: Option<bool>,
    pub refresh: Option<bool>,
    pub idle_timeout: Option<Scalar>,
    pub max_message_size: Option<Scalar>,
    pub ping_interval: Option<Scalar>,
    pub ping_timeout: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    pub max_sessions_per_subject: Option<u64>,
    pub max_sessions: Option<u64>,
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub store: Option<String>,
    pub path: Option<String>,
    pub redis_url: Option<String>,
    /// Extension: how long an entry is kept at least (the longest token lifetime).
    pub retain: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_sessions: Option<u64>,
    pub handshake_timeout: Option<Scalar>,
    pub auth_timeout: Option<Scalar>,
    pub shutdown_grace: Option<Scalar>,
    pub drain_delay: Option<Scalar>,
    pub max_pending: Option<u64>,
}

/// Extension: `demo: { echo: "127.0.0.1:9001" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub echo: Option<String>,
}

/// A duration or size as text. A plain unsigned number is accepted too, since
/// YAML reads `max_message_size: 1024` or `leeway: 0` as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

/// A mapping whose order matters (`forward.headers` is applied in file order).
#[derive(Debug)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

// === impl Deserialize (shape only) ===

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string such as 30s or 16MiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawTokenSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTokenSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "`header`, `subprotocol`, `first_message`, `{query: NAME}` or `{cookie: NAME}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTokenSource, E> {
                Ok(RawTokenSource::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTokenSource, A::Error> {
                RawKeyedSource::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawTokenSource::Keyed)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUpstream;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a ws:// or wss:// URL, or a mapping with `urls`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUpstream, E> {
                Ok(RawUpstream::Url(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawUpstream, A::Error> {
                RawUpstreamLong::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawUpstream::Long)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
