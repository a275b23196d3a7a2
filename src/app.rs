//! Wiring: [`App::build`] turns a validated [`Config`] into a [`Snapshot`],
//! bound sockets and the shared [`Gateway`]; [`App::run`] serves until the shutdown future
//! resolves, then closes every session with 1001 within `shutdown_grace`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::revocation::{RevocationList, Revoker, StoreError};
use crate::session::{CloseReason, Registry};
use crate::snapshot::{BuildError, Snapshot};
use crate::tls::{CertResolver, TlsError};
use crate::workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listeners[{index}].tls: {source}")]
    Tls {
        index: usize,
        #[source]
        source: TlsError,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("revocation: {0}")]
    Revocation(#[from] StoreError),
    #[error("cannot start {count} I/O worker threads: {source}")]
    Workers {
        count: usize,
        #[source]
        source: std::io::Error,
    },
}

struct Bound {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct App {
    gw: Arc<Gateway>,
    listeners: Vec<Bound>,
    admin: Option<TcpListener>,
    demo: Option<TcpListener>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

impl App {
    /// Builds everything and binds every socket; nothing is served yet.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let shutdown = CancellationToken::new();
        let built = Snapshot::build(config, &shutdown, None).await?;
        let config = Arc::clone(&built.snapshot.config);

        let mut listeners = Vec::new();
        let mut cert_resolvers = Vec::new();
        for ((index, l), store) in config.listeners.iter().enumerate().zip(built.certs) {
            let tls = match (&l.tls, store) {
                (Some(t), Some(store)) => {
                    let resolver = CertResolver::new(store);
                    let server = crate::tls::server_config(t, Arc::clone(&resolver))
                        .map_err(|source| AppError::Tls { index, source })?;
                    cert_resolvers.push(Some(resolver));
                    Some(server)
                }
                _ => {
                    cert_resolvers.push(None);
                    None
                }
            };
            listeners.push(Bound {
                listener: bind(l.bind).await?,
                tls,
            });
        }
        let admin = match &config.admin {
            Some(a) => Some(bind(a.bind).await?),
            None => None,
        };
        let demo = match &config.demo {
            Some(d) => Some(bind(d.echo_bind).await?),
            None => None,
        };
        let count = config.workers.unwrap_or_else(Workers::default_count);
        let workers =
            Workers::start(count).map_err(|source| AppError::Workers { count, source })?;
        let registry = Registry::new();
        let revoker = Revoker::open(
            &config.revocation,
            RevocationList::new(),
            Arc::clone(&registry),
            shutdown.child_token(),
        )
        .await?;
        let gw = Arc::new(Gateway::new(
            built.snapshot,
            registry,
            revoker,
            shutdown,
            cert_resolvers,
            workers,
        ));
        crate::reload::record_config_hash(&gw);
        if let Some(cfg) = gw.snapshot.load().config.tracing.clone() {
            // A collector that cannot be set up costs the traces, not the gateway.
            match crate::telemetry::trace::Tracer::start(&cfg) {
                Ok(tracer) => {
                    let _ = gw.tracer.set(tracer);
                }
                Err(e) => tracing::error!(error = %e, "traces disabled"),
            }
        }
        Ok(Self {
            gw,
            listeners,
            admin,
            demo,
        })
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let gw = self.gw;
        gw.revoker.start();
        let conns = TaskTracker::new();
        tracing::info!(workers = gw.workers.len(), "I/O workers started");
        let accept_cancel = gw.shutdown.child_token();
        let mut accept_loops = Vec::new();
        for b in self.listeners {
            if let Ok(addr) = b.listener.local_addr() {
                tracing::info!(addr = %addr, tls = b.tls.is_some(), "listener ready");
            }
            accept_loops.push(tokio::spawn(crate::listener::serve(
                Arc::clone(&gw),
                b.listener,
                b.tls,
                conns.clone(),
                accept_cancel.clone(),
            )));
        }
        if let Some(l) = self.admin {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(addr = %addr, "admin listener ready");
            }
            accept_loops.push(tokio::spawn(crate::admin::serve(
                Arc::clone(&gw),
                l,
                conns.clone(),
                accept_cancel.clone(),
            )));
        }
        let demo_tasks = TaskTracker::new();
        let mut demo_loop = None;
        // The demo upstream outlives the sessions through it, so that they
        // close with the gateway's 1001 rather than the upstream vanishing.
        let demo_cancel = CancellationToken::new();
        if let Some(l) = self.demo {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(addr = %addr, "demo echo upstream ready");
            }
            let demo = crate::demo::serve(l, demo_tasks.clone(), demo_cancel.clone());
            demo_loop = Some(tokio::spawn(demo));
        }
        gw.set_serving(true);
        let missing = gw.snapshot.load().auth.issuers_without_keys();
        if !missing.is_empty() {
            tracing::warn!(issuers = ?missing, "issuers without keys yet: their tokens are refused until keys arrive");
        }

        shutdown.await;
        let grace = gw.snapshot.load().config.limits.shutdown_grace;
        tracing::info!(
            sessions = gw.registry.len(),
            grace_ms = grace.as_millis() as u64,
            "shutting down"
        );
        gw.set_serving(false);
        // Stop accepting first, then end every session with 1001. The demo
        // upstream stays up until the sessions through it have closed.
        accept_cancel.cancel();
        for h in accept_loops {
            let _ = h.await;
        }
        gw.shutdown.cancel();
        gw.registry.close_all(CloseReason::Shutdown);
        gw.sessions.close();
        conns.close();
        let drained = tokio::time::timeout(grace, async {
            gw.sessions.wait().await;
            conns.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = gw.registry.len(),
                "shutdown grace elapsed; exiting with sessions still open"
            );
        }
        gw.workers.stop(std::time::Duration::from_secs(1)).await;
        gw.revoker.stop().await;
        demo_cancel.cancel();
        if let Some(h) = demo_loop {
            let _ = h.await;
        }
        demo_tasks.close();
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(200), demo_tasks.wait()).await;
        tracing::info!("stopped");
    }
}

/// `wsgate run`: logging, build, serve until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> Result<(), AppError> {
    crate::telemetry::init(&config.log);
    let app = App::build(config).await?;
    crate::signals::spawn_reload(Arc::clone(app.gateway()));
    app.run(crate::signals::shutdown()).await;
    Ok(())
}
