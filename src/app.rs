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
use crate::session::Registry;
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
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::LinkError),
    #[error("cannot start {count} I/O worker threads: {source}")]
    Workers {
        count: usize,
        #[source]
        source: std::io::Error,
    },
}

struct Bound {
    listener: TcpListener,
    settings: crate::listener::Settings,
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

/// A listener with SO_REUSEPORT when asked, so that several processes
/// share the port (the kernel spreads new connections over them).
async fn bind_listener(l: &crate::config::ListenerConfig) -> Result<TcpListener, AppError> {
    if !l.reuse_port {
        return bind(l.bind).await;
    }
    crate::cluster::bind_reuse_port(l.bind).map_err(|source| AppError::Bind {
        addr: l.bind,
        source,
    })
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
                listener: bind_listener(l).await?,
                settings: crate::listener::Settings {
                    tls,
                    proxy_protocol: l.proxy_protocol,
                },
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
        let cluster = crate::cluster::join(&config, &registry)?;
        if let Some(c) = &cluster {
            revoker.set_reporter(c.reporter());
        }
        let gw = Arc::new(
            Gateway::new(
                built.snapshot,
                registry,
                revoker,
                shutdown,
                cert_resolvers,
                workers,
            )
            .with_cluster(cluster),
        );
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

    /// Serves until `shutdown` resolves, then drains (see [`crate::drain`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let gw = self.gw;
        gw.revoker.start();
        if let Some(c) = &gw.cluster {
            c.start();
        }
        let conns = TaskTracker::new();
        tracing::info!(workers = gw.workers.len(), "I/O workers started");
        let accept_cancel = gw.shutdown.child_token();
        let mut accept_loops = Vec::new();
        for b in self.listeners {
            if let Ok(addr) = b.listener.local_addr() {
                tracing::info!(
                    addr = %addr,
                    tls = b.settings.tls.is_some(),
                    proxy_protocol = b.settings.proxy_protocol,
                    "listener ready"
                );
            }
            accept_loops.push(tokio::spawn(crate::listener::serve(
                Arc::clone(&gw),
                b.listener,
                b.settings,
                conns.clone(),
                accept_cancel.clone(),
            )));
        }
        // The admin listener has its own token and connections: it answers
        // (`/readyz` 503, `/metrics`, session lists) until the process exits.
        let admin_conns = TaskTracker::new();
        let admin_cancel = CancellationToken::new();
        let mut admin_loop = None;
        if let Some(l) = self.admin {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(addr = %addr, "admin listener ready");
            }
            admin_loop = Some(tokio::spawn(crate::admin::serve(
                Arc::clone(&gw),
                l,
                admin_conns.clone(),
                admin_cancel.clone(),
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
        let memory = tokio::spawn(crate::memory::watch(Arc::clone(&gw)));
        let missing = gw.snapshot.load().auth.issuers_without_keys();
        if !missing.is_empty() {
            tracing::warn!(issuers = ?missing, "issuers without keys yet: their tokens are refused until keys arrive");
        }

        shutdown.await;
        drain(&gw, accept_loops, accept_cancel, &conns).await;

        gw.shutdown.cancel();
        let _ = memory.await;
        gw.workers.stop(std::time::Duration::from_secs(1)).await;
        gw.revoker.stop().await;
        if let Some(c) = &gw.cluster {
            c.stop().await;
        }
        demo_cancel.cancel();
        if let Some(h) = demo_loop {
            let _ = h.await;
        }
        demo_tasks.close();
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(200), demo_tasks.wait()).await;
        admin_cancel.cancel();
        if let Some(h) = admin_loop {
            let _ = h.await;
        }
        admin_conns.close();
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(200), admin_conns.wait()).await;
        tracing::info!("stopped");
    }
}

/// The graceful part of a shutdown: `/readyz` 503 at once, listeners open
/// for `drain_delay`, then closed; sessions closed with 1001 over the first
/// half of `shutdown_grace`; returns when they are all gone or the grace
/// has passed.
async fn drain(
    gw: &Gateway,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
    accept_cancel: CancellationToken,
    conns: &TaskTracker,
) {
    let limits = gw.snapshot.load().config.limits.clone();
    gw.drain.begin();
    tracing::info!(
        sessions = gw.registry.len(),
        drain_delay_ms = limits.drain_delay.as_millis() as u64,
        grace_ms = limits.shutdown_grace.as_millis() as u64,
        "shutting down: /readyz answers 503"
    );
    // Load balancers take the instance out of rotation on the 503; until
    // they do, new connections are still served rather than refused.
    tokio::time::sleep(limits.drain_delay).await;
    accept_cancel.cancel();
    for h in accept_loops {
        let _ = h.await;
    }
    gw.set_serving(false);
    tracing::info!(sessions = gw.registry.len(), "listeners closed");

    let deadline = tokio::time::Instant::now() + limits.shutdown_grace;
    gw.sessions.close();
    conns.close();
    let drained = tokio::time::timeout_at(deadline, async {
        tokio::join!(
            gw.drain
                .close_sessions(&gw.registry, limits.shutdown_grace / 2),
            async {
                gw.sessions.wait().await;
                conns.wait().await;
            }
        )
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = gw.registry.len(),
            "shutdown grace elapsed; exiting with sessions still open"
        );
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
