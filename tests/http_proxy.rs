//! Plain HTTP on a route with `http: proxy`: admitted like a handshake,
//! proxied to a real HTTP server (hyper) with the handshake's forward rules,
//! bodies streamed, framing ambiguities refused.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body_len: u64,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A hyper HTTP/1.1 server that counts each request body as it streams in
/// (never holding it), records the request and answers `name len`, with a
/// few hop-by-hop headers of its own.
struct HttpUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HttpUpstream {
    async fn start(name: &'static str) -> HttpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(answer(name, req, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        HttpUpstream { addr, seen }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

async fn answer(
    name: &str,
    req: Request<Incoming>,
    log: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    log.lock().push(Seen {
        path,
        headers,
        body_len,
    });
    Response::builder()
        .header("x-upstream", name)
        .header("connection", "x-up-hop")
        .header("x-up-hop", "1")
        .header("keep-alive", "timeout=5")
        .body(Full::new(Bytes::from(format!("{name} {body_len}"))))
        .expect("response")
}

fn config(route_extra: &str, upstream: &str) -> String {
    format!(
        "{}routes:\n  - id: api\n    path: /api/*\n    upstream: {upstream}\n    http: proxy\n    token_sources: [header, {{query: access_token}}, {{cookie: access_token}}]\n    origins: [\"https://app.test\"]\n    forward:\n      headers:\n        X-User-Id: \"{{claims.sub}}\"\n{route_extra}  - id: ws\n    path: /ws\n    upstream: {upstream}\n",
        head()
    )
}

fn get(path: &str, lines: &[(&str, &str)]) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n");
    for (k, v) in lines {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_token_is_proxied_and_without_one_is_401() {
    let up = HttpUpstream::start("a").await;
    let gw = Gateway::start(&config("", &up.ws_url()));
    let t = token("alice", json!({}));

    let r = http_request(
        gw.addr(),
        &get("/api/x?q=1", &[("Authorization", &format!("Bearer {t}"))]),
    )
    .await
    .expect("response");
    assert_eq!((r.status, r.body.as_str()), (200, "a 0"), "{r:?}");
    let r = http_request(gw.addr(), &get(&format!("/api/x?access_token={t}"), &[]))
        .await
        .expect("response");
    assert_eq!(r.status, 200, "{r:?}");
    let r = http_request(
        gw.addr(),
        &get("/api/x", &[("Cookie", &format!("access_token={t}"))]),
    )
    .await
    .expect("response");
    assert_eq!(r.status, 200, "{r:?}");

    let r = http_request(gw.addr(), &get("/api/x", &[]))
        .await
        .expect("response");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"wsgate\"")
    );
    let r = http_request(
        gw.addr(),
        &get("/api/x", &[("Authorization", "Bearer nope")]),
    )
    .await
    .expect("response");
    assert_eq!(r.status, 401);
    let r = http_request(
        gw.addr(),
        &get(
            "/api/x",
            &[
                ("Authorization", &format!("Bearer {t}")),
                ("Origin", "https://evil.test"),
            ],
        ),
    )
    .await
    .expect("response");
    assert_eq!(r.status, 403);
    assert_eq!(
        up.seen().len(),
        3,
        "refused requests never reach the upstream"
    );

    // A WebSocket route keeps the contract's 426 for plain requests.
    let r = http_request(
        gw.addr(),
        &get("/ws", &[("Authorization", &format!("Bearer {t}"))]),
    )
    .await
    .expect("response");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("upgrade"), Some("websocket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_spoofed_identity_and_hop_by_hop_headers_are_dropped_both_ways() {
    let up = HttpUpstream::start("a").await;
    let gw = Gateway::start(&config("", &up.ws_url()));
    let t = token("alice", json!({}));
    let r = http_request(
        gw.addr(),
        &get(
            &format!("/api/x?keep=1&access_token={t}"),
            &[
                ("Authorization", &format!("Bearer {t}")),
                ("Cookie", &format!("a=1; access_token={t}")),
                ("X_User_Id", "admin"),
                ("x-user-id", "admin"),
                ("X_Forwarded_For", "10.6.6.6"),
                ("Forwarded", "for=10.6.6.6"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic eDp5"),
                ("TE", "trailers"),
                ("X-Keep-Me", "yes"),
            ],
        ),
    )
    .await
    .expect("response");
    assert_eq!(r.status, 200, "{r:?}");
    for hop in ["x-up-hop", "keep-alive"] {
        assert_eq!(r.header(hop), None, "{hop} reached the client: {r:?}");
    }
    let seen = up.seen().pop().expect("one request");
    assert_eq!(seen.path, "/api/x?keep=1");
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x-keep-me"), Some("yes"));
    assert_eq!(seen.header("cookie"), Some("a=1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    for (name, value) in &seen.headers {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            ![
                "authorization",
                "x-hop",
                "keep-alive",
                "proxy-authorization",
                "te",
                "forwarded"
            ]
            .contains(&folded.as_str()),
            "{name} reached the upstream"
        );
        assert!(
            !value.contains(&t),
            "the token reached the upstream in {name}"
        );
        assert!(
            value != "admin" && value != "10.6.6.6",
            "spoofed {name}: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_connection_is_kept_alive_and_unreachable_upstreams_are_502() {
    let up = HttpUpstream::start("a").await;
    let gw = Gateway::start(&config("", &up.ws_url()));
    let t = token("alice", json!({}));
    let auth = format!("Bearer {t}");
    let mut s = TcpStream::connect(gw.addr()).await.expect("connect");
    for i in 0..3 {
        s.write_all(get(&format!("/api/{i}"), &[("Authorization", &auth)]).as_bytes())
            .await
            .expect("write");
        let r = tokio::time::timeout(WAIT, read_response(&mut s))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(r.status, 200, "request {i} on one connection: {r:?}");
    }

    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let gw = Gateway::start(&config("", &format!("ws://{dead}")));
    let r = http_request(gw.addr(), &get("/api/x", &[("Authorization", &auth)]))
        .await
        .expect("response");
    assert_eq!(r.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_streams_through_with_flat_memory() {
    const TOTAL: u64 = 50 * 1024 * 1024;
    let up = HttpUpstream::start("a").await;
    let gw = Gateway::start(&config("", &up.ws_url()));
    let t = token("alice", json!({}));
    let mut s = TcpStream::connect(gw.addr()).await.expect("connect");
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\nContent-Length: {TOTAL}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let before = gw.rss_kib();
    let mut peak = before;
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0u64;
    while sent < TOTAL {
        s.write_all(&chunk).await.expect("body");
        sent += chunk.len() as u64;
        if sent % (4 * 1024 * 1024) == 0 {
            peak = peak.max(gw.rss_kib());
        }
    }
    let r = tokio::time::timeout(WAIT, read_response(&mut s))
        .await
        .expect("in time")
        .expect("response");
    let after = gw.rss_kib();
    assert_eq!((r.status, r.body.clone()), (200, format!("a {TOTAL}")));
    let growth = peak.max(after).saturating_sub(before);
    eprintln!("rss before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        growth < 32 * 1024,
        "RSS grew by {growth} KiB during a 50 MB upload"
    );
}

/// Writes `raw`, then reads everything the gateway sends until it closes.
async fn exchange(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the gateway kept the connection open: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_refused_and_nothing_after_them_is_parsed() {
    let up = HttpUpstream::start("a").await;
    let gw = Gateway::start(&config("", &up.ws_url()));
    let t = token("alice", json!({}));
    let smuggled =
        format!("GET /api/smuggled HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\n\r\n");
    // CL.TE: a front end reading Content-Length and a back end reading
    // chunked would disagree. hyper drops the Content-Length before the
    // gateway sees the request (chunked wins, RFC 9112 §6.3) and closes the
    // connection after the answer, so the bytes behind are never read.
    let cl_te = format!(
        "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let out = exchange(gw.addr(), &cl_te).await;
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "a second response: {out:?}"
    );
    // The upstream got the chunked reading: an empty body.
    assert!(up.seen().iter().all(|s| s.body_len == 0), "{:?}", up.seen());
    let refused = [
        // A coding list that does not end in chunked, or hides it.
        format!(
            "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Chunked with a junk chunk size.
        format!(
            "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        // Two different lengths.
        format!(
            "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n{smuggled}"
        ),
    ];
    for raw in &refused {
        let out = exchange(gw.addr(), raw).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{raw:?} got {out:?}");
        assert_eq!(
            out.matches("HTTP/1.1 ").count(),
            1,
            "a second response: {out:?}"
        );
    }
    assert!(
        up.seen().iter().all(|s| !s.path.contains("smuggled")),
        "a smuggled request reached the upstream: {:?}",
        up.seen()
    );
    gw.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_hash_sends_every_request_of_one_key_to_one_upstream() {
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let upstream = format!(
        "\n      urls: [{}, {}]\n      balance: hash\n      hash_key: {{query: room}}",
        a.ws_url(),
        b.ws_url()
    );
    let gw = Gateway::start(&config("", &upstream));
    let t = token("alice", json!({}));
    let auth = format!("Bearer {t}");
    let mut by_room = std::collections::HashMap::new();
    for room in 0..8 {
        for _ in 0..3 {
            let r = http_request(
                gw.addr(),
                &get(&format!("/api/x?room={room}"), &[("Authorization", &auth)]),
            )
            .await
            .expect("response");
            assert_eq!(r.status, 200);
            let name = r.header("x-upstream").expect("named").to_owned();
            let first = by_room.entry(room).or_insert_with(|| name.clone());
            assert_eq!(*first, name, "room {room} moved between upstreams");
        }
    }
    let used: std::collections::HashSet<_> = by_room.values().collect();
    assert_eq!(
        used.len(),
        2,
        "eight keys all hashed to one upstream: {by_room:?}"
    );
}
