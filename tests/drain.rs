//! Graceful shutdown against the real binary: `/readyz` turns 503 at once,
//! the listeners keep accepting for `drain_delay`, the sessions are closed
//! with 1001 spread over the first half of `shutdown_grace`, the admin API
//! answers until the process exits, and the process exits.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do not
// apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn config(upstream: &str, limits: &str) -> String {
    format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {upstream}\n\
         limits:\n{limits}",
        head()
    )
}

/// `GET path` on the admin listener: its status, or `None` when the
/// connection fails.
async fn admin_status(gw: &Gateway, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    http_request(gw.admin?, &req).await.ok().map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_keeps_accepting_for_drain_delay_then_spreads_closes() {
    const SESSIONS: usize = 30;
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&config(
        &up.url(),
        "  drain_delay: 3s\n  shutdown_grace: 4s\n",
    ));
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        clients.push(
            gw.session("/echo", &token(&format!("u{i}"), json!({})))
                .await,
        );
    }
    assert_eq!(admin_status(&gw, "/readyz").await, Some(200));

    // Every client records when its close frame arrives.
    let mut closes = Vec::new();
    for mut ws in clients {
        closes.push(tokio::spawn(async move {
            let (code, _) = expect_close(&mut ws).await;
            (code, Instant::now())
        }));
    }
    // The admin listener is polled from the signal to the exit.
    let admin_addr = gw.admin.expect("admin listener");
    let pid = gw.pid;
    let prober = tokio::spawn(async move {
        let mut answered = 0usize;
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let req = "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
            match http_request(admin_addr, req).await {
                Ok(r) if r.status == 200 => answered += 1,
                _ => {
                    failures.push(Instant::now());
                    // Gone for good once the process has exited.
                    if !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                        || failures.len() > 20
                    {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (answered, failures)
    });

    let signalled = Instant::now();
    gw.sigterm();
    assert!(
        eventually(Duration::from_secs(2), || gw.logged("/readyz answers 503")).await,
        "shutdown not logged"
    );
    assert_eq!(admin_status(&gw, "/readyz").await, Some(503));
    assert_eq!(admin_status(&gw, "/healthz").await, Some(200));
    assert_eq!(admin_status(&gw, "/metrics").await, Some(200));

    // Still within drain_delay: a new session is admitted and served.
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "too slow to test the delay"
    );
    let mut late = gw.session("/echo", &token("late", json!({}))).await;
    roundtrip(&mut late, "admitted while draining").await;
    assert!(
        !gw.logged("listeners closed"),
        "listeners closed before drain_delay"
    );
    let late_close = tokio::spawn(async move { expect_close(&mut late).await.0 });

    assert!(gw.wait_for_log("listeners closed", WAIT).await);
    let closed_at = Instant::now();
    assert!(
        signalled.elapsed() >= Duration::from_millis(2900),
        "listeners closed after {:?}, before drain_delay",
        signalled.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(gw.addr()).await.is_err(),
        "listener still accepts after drain_delay"
    );
    // The admin API still answers while the sessions drain.
    assert_eq!(admin_status(&gw, "/readyz").await, Some(503));

    let mut times = Vec::new();
    for c in closes {
        let (code, at) = c.await.unwrap();
        assert_eq!(code, 1001);
        times.push(at);
    }
    assert_eq!(late_close.await.unwrap(), 1001);
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    // 31 sessions over a 2 s window: about 65 ms apart, so the spread is
    // close to 2 s; all within a few ms would be the storm this prevents.
    assert!(
        last - first >= Duration::from_millis(800),
        "closes spread over only {:?}",
        last - first
    );
    assert!(
        last.duration_since(closed_at) < Duration::from_millis(2000 + 1500),
        "last close {:?} after the listeners closed",
        last.duration_since(closed_at)
    );
    assert!(
        eventually(WAIT, || up.closed() == SESSIONS + 1).await,
        "upstreams not all closed"
    );
    assert!(up
        .conns()
        .iter()
        .all(|c| c.close.as_ref().is_some_and(|c| c.0 == 1001)));

    let status = gw.wait_exit(WAIT).await.expect("gateway did not exit");
    assert!(status.success(), "{status:?}");
    // Every session was gone before the grace ran out.
    assert!(
        closed_at.elapsed() < Duration::from_secs(4) + Duration::from_millis(1500),
        "exit {:?} after the listeners closed",
        closed_at.elapsed()
    );
    let (answered, failures) = prober.await.unwrap();
    assert!(answered > 10, "admin answered {answered} probes");
    // The admin listener only stopped answering as the process exited.
    if let Some(first_failure) = failures.first() {
        assert!(
            first_failure.duration_since(last) < Duration::from_secs(5) && *first_failure > last,
            "admin stopped answering before the sessions were closed"
        );
    }
    assert!(!gw.logged("shutdown grace elapsed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_waiters_get_1001_on_shutdown() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - id: fm\n    path: /fm\n    upstream: {}\n    token_sources: [first_message]\n\
         limits:\n  shutdown_grace: 2s\n",
        head(),
        up.url()
    ));
    let (mut ws, _) = ws_connect(&gw.ws_url("/fm"), &[]).await.expect("101");
    gw.sigterm();
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    assert!(gw.wait_exit(WAIT).await.is_some_and(|s| s.success()));
}
