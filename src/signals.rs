//! SIGTERM/SIGINT end the process gracefully; SIGHUP asks for a reload.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves at the first SIGTERM or SIGINT.
pub async fn shutdown() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C is the only way to stop.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads the configuration on every SIGHUP until shutdown.
pub fn spawn_reload(gw: std::sync::Arc<crate::gateway::Gateway>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload only through the admin API");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => break,
                r = hup.recv() => if r.is_none() { break },
            }
            match crate::reload::reload(&gw).await {
                Ok(summary) => tracing::info!(%summary, "configuration reloaded (SIGHUP)"),
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the previous configuration stays in force")
                }
            }
        }
    });
}
