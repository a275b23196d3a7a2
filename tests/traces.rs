//! OpenTelemetry traces against a real OTLP/HTTP receiver: a small HTTP
//! server in the test that takes the gateway's `POST /v1/traces` exports
//! and decodes their JSON. One span per handshake (route, outcome, issuer,
//! admission and upstream connect times), one per session end, and the
//! handshake span's `traceparent` on the upstream request; a client's
//! `traceparent` is continued only when the config trusts it.
// Tests measure real (wall) time and share state with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use support::{head, next_msg, roundtrip, token, ws_connect, EchoUpstream, Gateway, Ws};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// The OTLP/HTTP receiver: every span of every export, as JSON.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Value>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let rx = Receiver::default();
        let r = rx.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(r.clone().serve(conn));
            }
        });
        (rx, format!("http://{addr}"))
    }

    /// HTTP/1.1 with keep-alive; bodies are sized by Content-Length.
    async fn serve(self, mut conn: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 8192];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 8192];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
            self.take(&path, &body);
            let answer =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            if conn.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn take(&self, path: &str, body: &[u8]) {
        self.paths.lock().unwrap().push(path.to_owned());
        let Ok(export) = serde_json::from_slice::<Value>(body) else {
            panic!("not JSON: {}", String::from_utf8_lossy(body));
        };
        let mut spans = self.spans.lock().unwrap();
        for rs in export["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["resource"] = rs["resource"].clone();
                    spans.push(span);
                }
            }
        }
    }

    /// Waits for `n` spans named `name`.
    async fn wait_for(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + support::WAIT;
        loop {
            let found: Vec<Value> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s["name"] == name)
                .cloned()
                .collect();
            if found.len() >= n || tokio::time::Instant::now() > deadline {
                assert!(found.len() >= n, "{n} {name} spans expected, got {found:?}");
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An attribute's value (string, int or double) as JSON.
fn attr(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            for k in ["stringValue", "intValue", "doubleValue", "boolValue"] {
                if !v[k].is_null() {
                    return v[k].clone();
                }
            }
            Value::Null
        })
        .unwrap_or(Value::Null)
}

fn config(upstream: &str, endpoint: &str, trust: bool) -> String {
    format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {upstream}\n\
         tracing:\n  otlp_endpoint: {endpoint}\n  sample_ratio: 1.0\n  trust_traceparent: {trust}\n",
        head()
    )
}

/// A traced session: the receiver, the upstream, the gateway (whose config
/// trusts a client's `traceparent` when `trust`), and a session of `sub`
/// opened with the client's `traceparent` and one message echoed.
struct Traced {
    rx: Receiver,
    up: EchoUpstream,
    gw: Gateway,
    ws: Ws,
    /// The one `traceparent` the upstream request carried.
    sent: String,
}

async fn traced_session(trust: bool, sub: &str) -> Traced {
    let (rx, endpoint) = Receiver::start().await;
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &endpoint, trust));
    let auth = format!("Bearer {}", token(sub, json!({})));
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (mut ws, _) = ws_connect(
        &gw.ws_url("/echo"),
        &[("authorization", &auth), ("traceparent", &client_parent)],
    )
    .await
    .expect("session");
    roundtrip(&mut ws, "hello").await;
    let conn = up.conns().pop().expect("upstream connection");
    let sent = conn.header_all("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = sent[0].to_owned();
    Traced {
        rx,
        up,
        gw,
        ws,
        sent,
    }
}

#[tokio::test]
async fn handshake_and_session_spans_continue_a_trusted_trace_upstream() {
    let Traced {
        rx,
        up: _up,
        gw: _gw,
        mut ws,
        sent,
    } = traced_session(true, "alice").await;

    // The upstream got the gateway's span as its parent, in the client's trace.
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CLIENT_TRACE, "01"));
    assert_ne!(parts[2], CLIENT_SPAN);

    ws.send(Message::Close(None)).await.expect("close");
    while next_msg(&mut ws).await.is_some() {}

    let hs = rx.wait_for("wsgate.handshake", 1).await;
    let hs = &hs[0];
    assert_eq!(hs["traceId"], CLIENT_TRACE, "{hs}");
    assert_eq!(hs["parentSpanId"], CLIENT_SPAN, "{hs}");
    assert_eq!(hs["spanId"], parts[2], "{hs}");
    assert_eq!(hs["kind"], 2, "server span: {hs}");
    assert_eq!(attr(hs, "wsgate.route"), "echo");
    assert_eq!(attr(hs, "wsgate.outcome"), "ok");
    assert_eq!(attr(hs, "wsgate.issuer"), "test");
    assert!(attr(hs, "wsgate.admission_ms").as_f64().is_some(), "{hs}");
    assert!(
        attr(hs, "wsgate.upstream_connect_ms").as_f64().is_some(),
        "{hs}"
    );
    let service = hs["resource"]["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == "service.name")
        .map(|a| a["value"]["stringValue"].clone());
    assert_eq!(service, Some(json!("wsgate")));

    let session = rx.wait_for("wsgate.session", 1).await;
    let session = &session[0];
    assert_eq!(session["traceId"], CLIENT_TRACE);
    assert_eq!(session["parentSpanId"], parts[2]);
    assert_eq!(attr(session, "wsgate.close_reason"), "client");
    assert_eq!(attr(session, "wsgate.messages_to_upstream"), "1");
    assert!(rx.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));
}

#[tokio::test]
async fn an_untrusted_traceparent_starts_a_new_trace_and_refusals_are_traced() {
    let Traced {
        rx,
        up: _up,
        gw,
        ws,
        sent,
    } = traced_session(false, "bob").await;
    assert!(!sent.contains(CLIENT_TRACE), "{sent:?}");

    assert_eq!(gw.connect("/echo", "not-a-token").await.err(), Some(401));
    let spans = rx.wait_for("wsgate.handshake", 2).await;
    assert!(spans.iter().all(|s| s["traceId"] != CLIENT_TRACE));
    assert!(spans
        .iter()
        .all(|s| s["parentSpanId"].as_str().unwrap_or("").is_empty()));
    let refused = spans
        .iter()
        .find(|s| attr(s, "wsgate.outcome") == "unauthorized")
        .expect("refused handshake span");
    assert_eq!(attr(refused, "http.response.status_code"), "401");
    assert_eq!(refused["status"]["code"], 2, "error status: {refused}");
    drop(ws);
}
