//! A built-in echo upstream (`demo: { echo: "127.0.0.1:9001" }`), so the
//! shipped `gateway.yaml` can be tried with no other service. It is a real
//! WebSocket server on its own socket: the gateway reaches it exactly as it
//! would reach any upstream.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Selects the first offered subprotocol, like most application servers.
// The callback's error type is tungstenite's; its size is not ours to choose.
#[allow(clippy::result_large_err)]
fn pick(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if let Some(first) = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|p| p.trim().parse().ok())
    {
        resp.headers_mut().insert("sec-websocket-protocol", first);
    }
    Ok(resp)
}

pub async fn serve(listener: TcpListener, tasks: TaskTracker, cancel: CancellationToken) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, pick).await else {
                return;
            };
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => break,
                    m = ws.next() => m,
                };
                match msg {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    }
                    // Reading on after a close lets the WebSocket layer send
                    // its reply; the stream ends once the handshake is done.
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            if cancel.is_cancelled() {
                let _ = ws.close(None).await;
            }
        });
    }
}
