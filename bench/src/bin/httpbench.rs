//! Plain HTTP through `http: proxy`, side by side with HAProxy 2.6 doing the
//! same work: TLS termination, an RS256 bearer token verified on every
//! request (`jwt_verify`), `exp` checked, the token removed, the request
//! forwarded over kept-alive upstream connections.
//!
//! ```text
//! httpbench [--wsgate PATH] [--haproxy PATH] [--work DIR] [--conns 32] [--secs 5] [--rounds 3]
//! httpbench upstream        # the HTTP upstream: `upstream ready addr=..`, answers 200 "ok"
//! ```
//!
//! Closed loop: each connection sends a small `GET` with its token, waits for
//! the answer, sends the next (keep-alive). The targets take turns, rounds
//! after a 1 s warm-up; medians of requests/s and p50/p99 latency, and the
//! proxy's CPU seconds per 10k requests.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wsgate_bench::*;

fn main() -> io::Result<()> {
    let args = Args::from_env(1);
    if args.items.first().map(String::as_str) == Some("upstream") {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(upstream());
    }
    run(&args)
}

/// A minimal keep-alive HTTP/1.1 origin: every request (no body) gets
/// `200 ok`. Pipelined requests in one read get one write.
async fn upstream() -> io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    println!("upstream ready addr={}", l.local_addr()?);
    loop {
        let (mut s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            const ANSWER: &[u8] =
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
            loop {
                let n = match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut out = Vec::new();
                while let Some(end) = head_end(&buf) {
                    buf.drain(..end);
                    out.extend_from_slice(ANSWER);
                }
                if !out.is_empty() && s.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn run(args: &Args) -> io::Result<()> {
    let conns: usize = args.num("conns", 32);
    let secs: u64 = args.num("secs", 5);
    let rounds: usize = args.num("rounds", 3);
    let work = PathBuf::from(args.get("work").unwrap_or("bench/work/http"));
    let wsgate = args.get("wsgate").unwrap_or("bench/work/wsgate").to_owned();
    let haproxy = args
        .get("haproxy")
        .unwrap_or("/usr/sbin/haproxy")
        .to_owned();
    std::fs::create_dir_all(&work)?;
    let w = |f: &str| work.join(f).to_string_lossy().into_owned();

    make_keys(&work)?;
    let tokens = Arc::new(sign(&std::fs::read(w("jwt_priv.pem"))?, conns)?);

    let mut procs = Procs(Vec::new());
    let me = std::env::current_exe()?;
    let (up_addr, _) = spawn_ready(
        Command::new(me).arg("upstream"),
        "upstream ready addr=",
        &mut procs,
    )?;

    let hport = free_port()?;
    std::fs::write(
        w("haproxy.cfg"),
        haproxy_config(hport, &up_addr, &w("tls_combined.pem"), &w("jwt_pub.pem")),
    )?;
    let hpid = start_haproxy(
        Command::new(&haproxy),
        &w("haproxy.cfg"),
        &w("haproxy.log"),
        hport,
        &mut procs,
    )?;

    let gport = free_port()?;
    std::fs::write(w("wsgate.yaml"), wsgate_config(gport, &up_addr))?;
    let gw = Command::new(&wsgate)
        .args(["run", "-c", &w("wsgate.yaml")])
        .stderr(Stdio::from(std::fs::File::create(w("wsgate.log"))?))
        .spawn()?;
    let gpid = gw.id();
    procs.0.push(gw);
    wait_port(&format!("127.0.0.1:{gport}"))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tls = tls_client(&w("tls.crt"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost".to_owned())
        .map_err(io::Error::other)?;
    let targets = [("haproxy", hport, hpid), ("wsgate", gport, gpid)];
    let mut results: Vec<(&str, Vec<Round>)> = targets.iter().map(|t| (t.0, Vec::new())).collect();
    for round in 0..rounds {
        for (i, (label, port, pid)) in targets.iter().enumerate() {
            let target = Target {
                addr: format!("127.0.0.1:{port}")
                    .parse()
                    .map_err(io::Error::other)?,
                path: "/api/item".into(),
                tls: Some((tls.clone(), name.clone())),
                sources: Vec::new(),
            };
            let r = rt.block_on(load(target, Arc::clone(&tokens), conns, secs, *pid))?;
            eprintln!("round {round} {label}: {:.0} req/s p50 {} us p99 {} us, {:.2} CPU s/10k req, errors {}",
                r.rps, r.p50_us, r.p99_us, r.cpu_per_10k, r.errors);
            results[i].1.push(r);
        }
    }
    println!("| target | requests/s | p50 | p99 | CPU s per 10k requests | errors |");
    println!("|---|---|---|---|---|---|");
    for (label, rs) in &results {
        let med = |f: fn(&Round) -> f64| {
            let mut v: Vec<f64> = rs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {label} | {:.0} | {:.0} µs | {:.0} µs | {:.2} | {} |",
            med(|r| r.rps),
            med(|r| r.p50_us as f64),
            med(|r| r.p99_us as f64),
            med(|r| r.cpu_per_10k),
            rs.iter().map(|r| r.errors).sum::<u64>()
        );
    }
    Ok(())
}

struct Round {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_per_10k: f64,
    errors: u64,
}

async fn load(
    target: Target,
    tokens: Arc<Vec<String>>,
    conns: usize,
    secs: u64,
    pid: u32,
) -> io::Result<Round> {
    let warm = Duration::from_secs(1);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..conns {
        let target = target.clone();
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
            target.path,
            tokens[n % tokens.len()]
        )
        .into_bytes();
        let (stop, measuring) = (Arc::clone(&stop), Arc::clone(&measuring));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let errors = 0u64;
            let mut c = match connect(&target, n).await {
                Ok(c) => c,
                Err(_) => return (lat, 1),
            };
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                if c.write_all(&req).await.is_err() {
                    return (lat, errors + 1);
                }
                buf.clear();
                let ok = loop {
                    let n = match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = head_end(&buf) {
                        // The upstream's body is 2 bytes ("ok").
                        if buf.len() >= end + 2 {
                            break buf.starts_with(b"HTTP/1.1 200");
                        }
                    }
                };
                if !ok {
                    return (lat, errors + 1);
                }
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t0.elapsed().as_micros() as u64);
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(warm).await;
    let cpu0 = proc_cpu_secs(pid).unwrap_or(0.0);
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_secs(pid).unwrap_or(0.0) - cpu0;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(io::Error::other)?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let n = all.len() as f64;
    Ok(Round {
        rps: n / elapsed,
        p50_us: pct(&all, 0.50),
        p99_us: pct(&all, 0.99),
        cpu_per_10k: if n > 0.0 { cpu / n * 10_000.0 } else { 0.0 },
        errors,
    })
}

/// `n` tokens for the audience `wsgate-bench`, valid for an hour.
fn sign(priv_pem: &[u8], n: usize) -> io::Result<Vec<String>> {
    sign_rs256(priv_pem, n, |i, now| {
        serde_json::json!({
            "sub": format!("user-{i}"), "aud": "wsgate-bench", "iat": now, "exp": now + 3600,
        })
    })
}

/// File names are relative to the config's folder, the work folder.
fn wsgate_config(port: u16, upstream: &str) -> String {
    format!(
        r#"{}routes:
  - id: api
    path: /api/*
    upstream: ws://{upstream}
    http: proxy
"#,
        wsgate_config_head("httpbench", &format!("127.0.0.1:{port}"))
    )
}

/// The WebSocket benchmark's HAProxy config (`runner.rs`, the same front
/// end), with HTTP keep-alive on both sides instead of `http-server-close`,
/// as wsgate pools its upstream connections.
fn haproxy_config(port: u16, upstream: &str, combined_pem: &str, pubkey: &str) -> String {
    let frontend = haproxy_jwt_frontend("api", port, combined_pem, pubkey, "api");
    format!(
        r#"# Written by httpbench.
global
    maxconn 9800
    nbthread 2
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

{frontend}
backend api
    http-reuse always
    server up1 {upstream} maxconn 100000
"#
    )
}
