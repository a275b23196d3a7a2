//! `/metrics` stays cheap with many live sessions: nothing in a scrape is
//! per session (families are per route, scrape-time figures per issuer),
//! so scraping a gateway holding 2,000 sessions takes well under 50 ms.
//! And the metrics people look for are there: build, process, reloads,
//! config hash, upstream connects and errors, pending connections.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do not
// apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use support::{head, http_request, token, EchoUpstream, Gateway, Ws};

/// Sessions held during the timed scrapes: as many as the test budget of a
/// debug build on a shared 2-core machine allows in a few seconds.
const SESSIONS: usize = 2_000;
const SCRAPES: usize = 20;

async fn scrape(gw: &Gateway) -> (Duration, String) {
    let addr = gw.admin.expect("admin listener");
    let started = Instant::now();
    let r = http_request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("scrape");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    (took, r.body)
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_with_two_thousand_sessions_is_cheap() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {}\nlimits:\n  max_sessions: 100000\n",
        head(),
        up.url()
    ));
    let tok = token("load", json!({}));
    let mut held: Vec<Ws> = Vec::with_capacity(SESSIONS);
    // In batches, so the accept queue never overflows.
    while held.len() < SESSIONS {
        let batch = (SESSIONS - held.len()).min(100);
        let opened = join_all((0..batch).map(|_| gw.connect("/echo", &tok))).await;
        for ws in opened {
            held.push(ws.unwrap_or_else(|status| panic!("session refused with {status}")));
        }
    }
    let (_, text) = scrape(&gw).await;
    assert_eq!(
        value(&text, "wsgate_sessions_active{route=\"echo\"}"),
        Some(SESSIONS as f64),
        "{text}"
    );
    let mut times = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        times.push(scrape(&gw).await.0);
    }
    times.sort();
    let median = times[SCRAPES / 2];
    eprintln!(
        "scrape with {SESSIONS} sessions: min {:?}, median {median:?}, max {:?}",
        times[0],
        times[SCRAPES - 1]
    );
    assert!(
        median < Duration::from_millis(50),
        "median scrape {median:?} with {SESSIONS} sessions"
    );
    drop(held);
}

#[tokio::test]
async fn the_metrics_people_look_for_are_exposed() {
    let up = EchoUpstream::start().await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {}\n  - id: dead\n    path: /dead\n    upstream: ws://127.0.0.1:1\n",
        head(),
        up.url()
    ));
    let tok = token("alice", json!({}));
    let ws = gw.session("/echo", &tok).await;
    assert_eq!(gw.connect("/dead", &tok).await.err(), Some(502));
    assert_eq!(gw.admin("POST", "/admin/reload", None).await.status, 200);
    std::fs::write(gw.config_path(), "listeners: [").expect("break the config");
    assert_eq!(gw.admin("POST", "/admin/reload", None).await.status, 400);

    // A session that ends, so every family the dashboard queries has a series.
    drop(ws);
    let deadline = Instant::now() + support::WAIT;
    let text = loop {
        let (_, text) = scrape(&gw).await;
        if text.contains("wsgate_session_closes_total{") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let version = env!("CARGO_PKG_VERSION");
    for series in [
        format!("wsgate_build_info{{version=\"{version}\"}} 1"),
        "wsgate_reloads_total{outcome=\"ok\"} 1".to_owned(),
        "wsgate_reloads_total{outcome=\"error\"} 1".to_owned(),
        "wsgate_upstream_errors_total{route=\"dead\",kind=\"refused\"} 1".to_owned(),
        "wsgate_upstream_connect_duration_seconds_count{route=\"echo\"} 1".to_owned(),
        "wsgate_upstream_connect_duration_seconds_count{route=\"dead\"} 1".to_owned(),
        "wsgate_pending_connections ".to_owned(),
        "wsgate_key_age_seconds{issuer=\"test\"} ".to_owned(),
        "wsgate_config_info{hash=\"".to_owned(),
        "process_cpu_seconds_total ".to_owned(),
        "process_resident_memory_bytes ".to_owned(),
        "process_open_fds ".to_owned(),
    ] {
        assert!(text.contains(&series), "missing {series} in\n{text}");
    }
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("wsgate_config_info{hash=\""))
        .and_then(|l| l.split('"').next())
        .expect("config hash");
    assert_eq!(hash.len(), 12);
    assert!(
        value(&text, "process_open_fds").is_some_and(|n| n >= 4.0),
        "{text}"
    );
    every_dashboard_metric_is_exposed(&text);
}

/// The Grafana dashboard queries only metrics the gateway exposes.
fn every_dashboard_metric_is_exposed(scrape: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/wsgate.json");
    let dashboard = std::fs::read_to_string(path).expect("dashboard JSON");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in exprs {
        for (i, _) in expr
            .match_indices("wsgate_")
            .chain(expr.match_indices("process_"))
        {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Histograms are queried by their `_bucket` series; scrape-time
            // families (key fetches) have their `# TYPE` line even when empty.
            let family = name.trim_end_matches("_bucket").trim_end_matches("_total");
            assert!(
                scrape.contains(&format!("{name}{{"))
                    || scrape.contains(&format!("{name} "))
                    || scrape.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {name}, which /metrics does not expose"
            );
        }
    }
}
