//! The config in force, compiled: the route table with each route's rules,
//! templates and upstream pool, the authenticator with its keys, and the
//! listeners' certificates. [`Snapshot::build`] is the one place this is
//! built, for the start and for every reload, so the two cannot drift; a
//! reload swaps the whole snapshot in one store, and handshakes in flight
//! keep the one they loaded.

use std::sync::Arc;

use http::HeaderName;
use tokio_rustls::TlsConnector;

use crate::auth::{AuthSetupError, Authenticator};
use crate::config::{Config, HttpMode, RouteConfig, TokenSource};
use crate::route::require::Rules;
use crate::route::template::Template;
use crate::route::RouteTable;
use crate::tls::{CertStore, TlsError};
use crate::upstream::Upstreams;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("listeners[{index}].tls: {source}")]
    Tls {
        index: usize,
        #[source]
        source: TlsError,
    },
    #[error("routes[{index}]: {source}")]
    Pattern {
        index: usize,
        #[source]
        source: crate::route::pattern::PatternError,
    },
    #[error("routes[{index}] ({id}): template {template:?}: {source}")]
    Template {
        index: usize,
        id: String,
        template: String,
        #[source]
        source: crate::route::template::TemplateError,
    },
    #[error("routes[{index}] ({id}).upstream.ca: {source}")]
    UpstreamTls {
        index: usize,
        id: String,
        #[source]
        source: crate::tls::TlsError,
    },
}

/// A route ready to serve.
pub struct Route {
    pub id: Arc<str>,
    pub cfg: RouteConfig,
    pub rules: Rules,
    /// `forward.headers`, names lower-cased, values compiled.
    pub forward_headers: Vec<(HeaderName, Template)>,
    pub upstream_path: Option<Template>,
    pub upstreams: Upstreams,
    /// The route's sources, or the global ones.
    pub token_sources: Vec<TokenSource>,
    /// With `http: proxy`: the pooled client for plain requests.
    pub http: Option<crate::pool::HttpProxy>,
}

impl Route {
    /// Where the token is in the first message, when the route reads one.
    pub fn first_message(&self) -> Option<&crate::config::FirstMessage> {
        self.token_sources.iter().find_map(|s| match s {
            TokenSource::FirstMessage(spec) => Some(spec),
            _ => None,
        })
    }

    fn build(
        index: usize,
        cfg: &RouteConfig,
        global_sources: &[TokenSource],
    ) -> Result<Self, BuildError> {
        let template = |t: &str| {
            Template::parse(t).map_err(|source| BuildError::Template {
                index,
                id: cfg.id.clone(),
                template: t.to_owned(),
                source,
            })
        };
        let forward_headers = cfg
            .forward
            .headers
            .iter()
            .map(|(name, value)| Ok((name.clone(), template(value)?)))
            .collect::<Result<Vec<_>, BuildError>>()?;
        let upstream_path = cfg.upstream.path.as_deref().map(template).transpose()?;
        let tls = if cfg.upstream.urls.iter().any(|u| u.tls) {
            let client =
                crate::tls::client_config(cfg.upstream.ca.as_deref()).map_err(|source| {
                    BuildError::UpstreamTls {
                        index,
                        id: cfg.id.clone(),
                        source,
                    }
                })?;
            Some(TlsConnector::from(client))
        } else {
            None
        };
        let token_sources = cfg
            .token_sources
            .clone()
            .unwrap_or_else(|| global_sources.to_vec());
        let http = (cfg.http == HttpMode::Proxy).then(|| {
            let client = crate::pool::HttpClient::new(tls.clone(), cfg.upstream.connect_timeout);
            crate::pool::HttpProxy::new(client, &token_sources)
        });
        let upstreams = Upstreams::new(
            cfg.upstream.urls.clone(),
            cfg.upstream.balance.clone(),
            cfg.upstream.connect_timeout,
            tls,
        );
        Ok(Self {
            id: Arc::from(cfg.id.as_str()),
            rules: Rules::compile(&cfg.require),
            forward_headers,
            upstream_path,
            upstreams,
            token_sources,
            http,
            cfg: cfg.clone(),
        })
    }
}

pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: RouteTable<Arc<Route>>,
    pub auth: Arc<Authenticator>,
}

/// A freshly built snapshot and the listeners' certificates loaded with it
/// (index = listener index; `None` for plaintext listeners). Certificates are
/// handed over once: the caller installs them in the listeners' resolvers.
pub struct Built {
    pub snapshot: Snapshot,
    pub certs: Vec<Option<CertStore>>,
}

impl Snapshot {
    /// Compiles `config`. Remote key sets are fetched by tasks that stop with
    /// `shutdown`, or once no snapshot uses them; those of `previous` (the
    /// snapshot a reload replaces) with an unchanged source are kept.
    /// Nothing is bound.
    pub async fn build(
        config: Config,
        shutdown: &CancellationToken,
        previous: Option<&Snapshot>,
    ) -> Result<Built, BuildError> {
        let mut certs = Vec::with_capacity(config.listeners.len());
        for (index, l) in config.listeners.iter().enumerate() {
            let store = match &l.tls {
                Some(t) => {
                    Some(CertStore::load(t).map_err(|source| BuildError::Tls { index, source })?)
                }
                None => None,
            };
            certs.push(store);
        }
        let config = Arc::new(config);
        let mut built = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            built.push(Arc::new(Route::build(index, r, &config.token_sources)?));
        }
        let routes = RouteTable::build(
            config
                .routes
                .iter()
                .zip(built)
                .map(|(r, b)| (r.host.as_deref(), r.path.as_str(), b)),
        )
        .map_err(|source| BuildError::Pattern {
            index: source.entry.unwrap_or(0),
            source,
        })?;
        let auth = Authenticator::new(
            &config.issuers,
            shutdown.clone(),
            previous.map(|p| &*p.auth),
        )
        .await?;
        Ok(Built {
            snapshot: Self {
                config,
                routes,
                auth,
            },
            certs,
        })
    }

    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.routes().find(|r| &*r.id == id)
    }
}
