//! Runs the whole benchmark: keys, certificate and tokens; the echo upstream,
//! HAProxy and wsgate; every scenario against every target; a table with
//! ratios on stdout and in `bench/results/<date>.md`.
//!
//! ```text
//! runner [--quick] [--pinned] [--wsgate PATH] [--haproxy PATH|none] [--out DIR] [--work DIR]
//! ```
//!
//! `--pinned` measures per core: each proxy runs alone on core 0 (`taskset`)
//! with one thread (`workers: 1`, `nbthread 1`); the runner, the echo
//! upstream and the load generator run on the other cores (children inherit
//! the runner's affinity).

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wsgate_bench::{
    free_port, haproxy_jwt_frontend, make_keys, proc_cpu_secs, proc_fds, proc_rss_kb, sign_rs256,
    spawn_ready, start_haproxy, wsgate_config_head, Args, Procs,
};

/// Sizes of a run.
struct Profile {
    name: &'static str,
    tp_secs: f64,
    tp_warmup: f64,
    /// Throughput rounds (targets take turns; medians reported).
    tp_rounds: usize,
    window: usize,
    lat_conns: usize,
    lat_rate: f64,
    lat_secs: f64,
    /// Latency rounds (targets take turns; medians reported).
    lat_rounds: usize,
    hs_secs: f64,
    hs_workers: usize,
    hs_pool: usize,
    idle_levels: Vec<usize>,
    idle_cpu_secs: f64,
}

fn profile(quick: bool) -> Profile {
    if quick {
        Profile {
            name: "quick",
            tp_secs: 2.0,
            tp_warmup: 0.5,
            tp_rounds: 1,
            window: 16,
            lat_conns: 100,
            lat_rate: 1000.0,
            lat_secs: 2.0,
            lat_rounds: 1,
            hs_secs: 2.0,
            hs_workers: 16,
            hs_pool: 1500,
            idle_levels: vec![200, 1000],
            idle_cpu_secs: 1.0,
        }
    } else {
        Profile {
            name: "full",
            tp_secs: 6.0,
            tp_warmup: 1.0,
            tp_rounds: 3,
            window: 16,
            lat_conns: 100,
            lat_rate: 2000.0,
            lat_secs: 10.0,
            lat_rounds: 5,
            hs_secs: 10.0,
            hs_workers: 32,
            hs_pool: 40000,
            idle_levels: vec![1000, 5000, 9500],
            idle_cpu_secs: 5.0,
        }
    }
}

/// Source addresses the load generator spreads its connections over.
const SOURCES: &str =
    "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9";

struct TargetInfo {
    name: &'static str,
    addr: String,
    tls: bool,
    pid: u32,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("runner: {e}");
        std::process::exit(1);
    }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
        .unwrap_or_default()
}

/// `--pinned`: the proxies' core, and the runner's (and so its children's).
struct Pinning {
    proxy: String,
    rest: String,
}

fn pinning(on: bool) -> io::Result<Option<Pinning>> {
    if !on {
        return Ok(None);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return Err(io::Error::other("--pinned needs at least two cores"));
    }
    let pin = Pinning {
        proxy: "0".into(),
        rest: format!("1-{}", cores - 1),
    };
    let me = std::process::id().to_string();
    let o = Command::new("taskset")
        .args(["-pc", &pin.rest, &me])
        .output()?;
    if !o.status.success() {
        return Err(io::Error::other("taskset failed (util-linux)"));
    }
    Ok(Some(pin))
}

/// `bin`, started on the proxies' core when pinned.
fn proxy_command(bin: &str, pin: &Option<Pinning>) -> Command {
    match pin {
        Some(p) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &p.proxy, bin]);
            c
        }
        None => Command::new(bin),
    }
}

fn run() -> io::Result<()> {
    let args = Args::from_env(1);
    let quick = args.has("quick");
    let pin = pinning(args.has("pinned"))?;
    if let Some(p) = &pin {
        eprintln!(
            "== pinned: proxies on core {}, echo and load generator on {}",
            p.proxy, p.rest
        );
    }
    let p = profile(quick);
    let here = std::env::current_exe()?.parent().unwrap().to_path_buf();
    let echo_bin = here.join("echo");
    let loadgen = here.join("loadgen");
    let wsgate_bin = PathBuf::from(args.get("wsgate").unwrap_or("target/release/wsgate"));
    let haproxy_bin = args.get("haproxy").unwrap_or("haproxy").to_owned();
    let out_dir = PathBuf::from(args.get("out").unwrap_or("bench/results"));
    let work = PathBuf::from(args.get("work").unwrap_or("bench/work"));
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&out_dir)?;
    let work = work.canonicalize()?;
    let started = Instant::now();
    let date = sh("date -u +%Y-%m-%dT%H-%M-%SZ");
    let load_before = sh("cat /proc/loadavg");

    // Keys, certificate, tokens.
    let w = |f: &str| work.join(f).to_string_lossy().into_owned();
    eprintln!("== keys and certificate in {}", work.display());
    make_keys(&work)?;
    let n_sessions = *p.idle_levels.iter().max().unwrap();
    eprintln!("== signing {} + {} + 1 RS256 tokens", p.hs_pool, n_sessions);
    let priv_pem = std::fs::read(w("jwt_priv.pem"))?;
    let toks = sign_tokens(&priv_pem, p.hs_pool + n_sessions + 1)?;
    std::fs::write(w("tokens_pool.txt"), toks[..p.hs_pool].join("\n"))?;
    std::fs::write(
        w("tokens_sessions.txt"),
        toks[p.hs_pool..p.hs_pool + n_sessions].join("\n"),
    )?;
    std::fs::write(w("token_one.txt"), &toks[toks.len() - 1])?;

    let mut procs = Procs(Vec::new());
    // Echo upstream.
    let (echo_addr, echo_pid) = spawn_ready(
        Command::new(&echo_bin).stderr(Stdio::inherit()),
        "echo ready addr=",
        &mut procs,
    )?;
    eprintln!("== echo upstream at {echo_addr} (pid {echo_pid})");

    let mut targets = vec![TargetInfo {
        name: "direct",
        addr: echo_addr.clone(),
        tls: false,
        pid: echo_pid,
    }];

    // HAProxy.
    let haproxy_version = if haproxy_bin == "none" {
        None
    } else {
        Command::new(&haproxy_bin).arg("-v").output().ok().map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
    };
    match &haproxy_version {
        None => eprintln!("!! haproxy not found ({haproxy_bin}): running direct + wsgate only (apt-get install -y haproxy)"),
        Some(v) => {
            let port = free_port()?;
            let threads = if pin.is_some() { 1 } else { 2 };
            let cfg = haproxy_config(port, &echo_addr, &w("tls_combined.pem"), &w("jwt_pub.pem"), threads);
            std::fs::write(w("haproxy.cfg"), cfg)?;
            let o = Command::new(&haproxy_bin).args(["-c", "-f", &w("haproxy.cfg")]).output()?;
            if !o.status.success() {
                return Err(io::Error::other(format!(
                    "haproxy -c failed: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )));
            }
            let pid = start_haproxy(
                proxy_command(&haproxy_bin, &pin),
                &w("haproxy.cfg"),
                &w("haproxy.log"),
                port,
                &mut procs,
            )?;
            let addr = format!("127.0.0.1:{port}");
            eprintln!("== {v} at {addr} (pid {pid})");
            targets.push(TargetInfo { name: "haproxy", addr, tls: true, pid });
        }
    }

    // wsgate.
    std::fs::write(w("wsgate.yaml"), wsgate_config(&echo_addr, pin.is_some()))?;
    let check = Command::new(&wsgate_bin)
        .args(["check", "-c", &w("wsgate.yaml")])
        .output()?;
    if !check.status.success() {
        return Err(io::Error::other(format!(
            "wsgate check failed: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        )));
    }
    let mut gw = proxy_command(&wsgate_bin.to_string_lossy(), &pin)
        .args(["run", "-c", &w("wsgate.yaml")])
        // Only the readiness line at info; no per-handshake logging.
        .env("RUST_LOG", "warn,wsgate::app=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let gw_pid = gw.id();
    let gw_err = gw.stderr.take().unwrap();
    procs.0.push(gw);
    let (tx, rx) = std::sync::mpsc::channel();
    let log_path = w("wsgate.log");
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(log_path).ok();
        let mut sent = false;
        for line in BufReader::new(gw_err).lines().map_while(Result::ok) {
            if let Some(l) = log.as_mut() {
                let _ = writeln!(l, "{line}");
            }
            if !sent && line.contains("listener ready") {
                if let Some(a) = line.split("addr=").nth(1) {
                    let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_owned());
                    sent = true;
                }
            }
        }
    });
    let gw_addr = rx.recv_timeout(Duration::from_secs(20)).map_err(|_| {
        io::Error::other("wsgate did not log `listener ready` (see bench/work/wsgate.log)")
    })?;
    eprintln!("== wsgate at {gw_addr} (pid {gw_pid})");
    targets.push(TargetInfo {
        name: "wsgate",
        addr: gw_addr,
        tls: true,
        pid: gw_pid,
    });

    let base = |t: &TargetInfo, tokens: &str| -> Vec<String> {
        let mut v = vec![
            "--addr".into(),
            t.addr.clone(),
            "--path".into(),
            "/echo".into(),
            "--tokens".into(),
            w(tokens),
            "--sources".into(),
            SOURCES.into(),
            "--pid".into(),
            t.pid.to_string(),
        ];
        if t.tls {
            v.push("--tls-ca".into());
            v.push(w("tls.crt"));
        }
        v
    };

    let mut rows: Vec<Row> = Vec::new();
    // `--only idle,throughput,deflate,latency,handshakes` runs a subset.
    let only = args.get("only").map(str::to_owned);
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));

    // 1. Idle sessions, first, while every process is fresh.
    let mut notes = Vec::new();
    for t in targets.iter().filter(|_| want("idle")) {
        if t.name == "direct" {
            continue;
        }
        eprintln!("-- idle sessions: {}", t.name);
        let r = idle(&loadgen, base(t, "tokens_sessions.txt"), t.pid, &p)?;
        for (level, held, kib_per, cpu, fds) in r {
            if held < level {
                problem(format!("{}: held {held} of {level} sessions", t.name));
            }
            notes.push(format!(
                "{}: {held} sessions held (asked {level}), {kib_per:.1} KiB/session, idle CPU {:.2}% of a core, {fds} fds",
                t.name,
                cpu * 100.0
            ));
            rows.push(Row::new(
                format!("idle {level}: KiB RSS per session"),
                t.name,
                kib_per,
                false,
            ));
            rows.push(Row::new(
                format!("idle {level}: idle CPU % of a core"),
                t.name,
                cpu * 100.0,
                false,
            ));
        }
    }

    // 2. Relay throughput. On two cores shared with the load generator and
    // the echo, a run's figure moves with how the OS splits the CPU (±20 %
    // between runs), so the targets take turns over rounds and each figure is
    // the median; the per-round ratios are printed too.
    let median = |mut xs: Vec<f64>| -> f64 {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.get(xs.len() / 2).copied().unwrap_or(0.0)
    };
    let tp_rounds: usize = args.num("tp-rounds", p.tp_rounds).max(1);
    // The same sizes again with permessage-deflate negotiated end to end
    // (`--only deflate`): the proxies pass compressed frames unchanged, so
    // their messages/s should match the uncompressed rows'.
    let variants = [(64usize, false), (16384, false), (64, true), (16384, true)];
    let mut plain_msgs: Vec<(usize, &str, f64)> = Vec::new();
    for (size, deflate) in variants
        .into_iter()
        .filter(|(_, d)| want(if *d { "deflate" } else { "throughput" }))
    {
        let mut runs: Vec<Vec<Value>> = vec![Vec::new(); targets.len()];
        for round in 0..tp_rounds {
            for (ti, t) in targets.iter().enumerate() {
                eprintln!(
                    "-- throughput {size} B{}, round {}/{tp_rounds}: {}",
                    if deflate { " deflate" } else { "" },
                    round + 1,
                    t.name
                );
                let mut a = base(t, "tokens_sessions.txt");
                a.extend(
                    [
                        "--conns",
                        "64",
                        "--size",
                        &size.to_string(),
                        "--window",
                        &p.window.to_string(),
                        "--secs",
                        &p.tp_secs.to_string(),
                        "--warmup",
                        &p.tp_warmup.to_string(),
                    ]
                    .map(String::from),
                );
                if deflate {
                    a.push("--deflate".into());
                }
                let v = loadgen_run(&loadgen, "throughput", &a)?;
                if f(&v, "msgs_per_s") <= 0.0 {
                    problem(format!("{}: nothing relayed at {size} B", t.name));
                }
                check_errors(&v, t.name);
                runs[ti].push(v);
            }
        }
        let label = match (size, deflate) {
            (64, false) => "64 B",
            (_, false) => "16 KiB",
            (64, true) => "64 B deflate",
            (_, true) => "16 KiB deflate",
        };
        let per_round = |name: &str| {
            targets.iter().position(|t| t.name == name).map(|i| {
                runs[i]
                    .iter()
                    .map(|v| f(v, "msgs_per_s"))
                    .collect::<Vec<_>>()
            })
        };
        if let (Some(w), Some(h)) = (per_round("wsgate"), per_round("haproxy")) {
            notes.push(format!(
                "throughput {label}, wsgate/haproxy per round: {}",
                w.iter()
                    .zip(&h)
                    .map(|(w, h)| format!("{:.2}", w / h.max(1.0)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (ti, t) in targets.iter().enumerate() {
            let med = |k: &str| median(runs[ti].iter().map(|v| f(v, k)).collect());
            let msgs = med("msgs_per_s");
            if !deflate {
                plain_msgs.push((size, t.name, msgs));
            } else if let Some((_, _, plain)) = plain_msgs
                .iter()
                .find(|(s, n, _)| *s == size && *n == t.name)
            {
                notes.push(format!(
                    "throughput {label}: {} at {:.2}x its uncompressed {size} B msgs/s ({} B on the wire per message)",
                    t.name,
                    msgs / plain.max(1.0),
                    med("wire_size")
                ));
            }
            rows.push(Row::new(
                format!("throughput {label}: msgs/s"),
                t.name,
                msgs,
                true,
            ));
            rows.push(Row::new(
                if deflate {
                    format!("throughput {label}: MB/s (uncompressed)")
                } else {
                    format!("throughput {label}: MB/s")
                },
                t.name,
                med("mb_per_s"),
                true,
            ));
            rows.push(Row::new(
                format!("throughput {label}: proxy CPU (cores)"),
                t.name,
                med("proxy_cores"),
                false,
            ));
        }
    }

    // 3. Latency at a fixed rate. Tail percentiles of a few-second run move
    // with whatever else the machine does, so the targets take turns over
    // several rounds and each figure is the median over the rounds; "added
    // over direct" is taken within each round, then the median.
    let rounds: usize = args.num("lat-rounds", p.lat_rounds).max(1);
    // `--lat-together`: every target measured at the same time, each by its
    // own load generator, so that a burst of noise on the machine hits them
    // all alike instead of whichever had its turn.
    let together = args.has("lat-together");
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        let mut running = Vec::new();
        for (ti, t) in targets.iter().enumerate().filter(|_| want("latency")) {
            eprintln!(
                "-- latency, round {}/{rounds}: {}{}",
                round + 1,
                t.name,
                if together { " (together)" } else { "" }
            );
            let mut a = base(t, "tokens_sessions.txt");
            a.extend(
                [
                    "--conns",
                    &p.lat_conns.to_string(),
                    "--rate",
                    &p.lat_rate.to_string(),
                    "--secs",
                    &p.lat_secs.to_string(),
                    "--warmup",
                    "1",
                ]
                .map(String::from),
            );
            running.push((ti, loadgen_start(&loadgen, "latency", &a)?));
            if !together {
                // Taking turns: this target's run ends before the next starts.
                for (ti, child) in running.drain(..) {
                    runs[ti].push(latency_result(child, targets[ti].name)?);
                }
            }
        }
        for (ti, child) in running {
            runs[ti].push(latency_result(child, targets[ti].name)?);
        }
    }
    let direct_runs = targets
        .iter()
        .position(|t| t.name == "direct")
        .map(|i| runs[i].clone())
        .unwrap_or_default();
    for (ti, t) in targets.iter().enumerate() {
        let vs = &runs[ti];
        if vs.is_empty() {
            continue;
        }
        let med = |k: &str| median(vs.iter().map(|v| f(v, k)).collect());
        for (k, label) in [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")] {
            rows.push(Row::new(
                format!("latency {label} (µs)"),
                t.name,
                med(k),
                false,
            ));
        }
        // From the actual send: without what the generator's own timing adds.
        for (k, label) in [
            ("sent_p50_us", "p50"),
            ("sent_p99_us", "p99"),
            ("sent_p999_us", "p99.9"),
        ] {
            rows.push(Row::new(
                format!("latency from send {label} (µs)"),
                t.name,
                med(k),
                false,
            ));
        }
        if t.name != "direct" && direct_runs.len() == vs.len() {
            for (k, label) in [
                ("p99_us", "latency p99 added over direct (µs)"),
                (
                    "sent_p99_us",
                    "latency from send: p99 added over direct (µs)",
                ),
            ] {
                let added: Vec<f64> = vs
                    .iter()
                    .zip(&direct_runs)
                    .map(|(v, d)| f(v, k) - f(d, k))
                    .collect();
                if k == "p99_us" {
                    notes.push(format!(
                        "{}: p99 added over direct per latency round (µs): {}",
                        t.name,
                        added
                            .iter()
                            .map(|a| format!("{a:.0}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                rows.push(Row::new(label.into(), t.name, median(added), false));
            }
        }
        rows.push(Row::new(
            "latency: samples / expected".into(),
            t.name,
            median(
                vs.iter()
                    .map(|v| f(v, "samples") / f(v, "expected").max(1.0))
                    .collect(),
            ),
            true,
        ));
    }

    // 4. Handshakes per second.
    for (label, tokens, once) in [
        ("distinct tokens", "tokens_pool.txt", true),
        ("one repeated token", "token_one.txt", false),
    ]
    .into_iter()
    .filter(|_| want("handshakes"))
    {
        for t in &targets {
            eprintln!("-- handshakes, {label}: {}", t.name);
            let mut a = base(t, tokens);
            a.extend(
                [
                    "--workers",
                    &p.hs_workers.to_string(),
                    "--secs",
                    &p.hs_secs.to_string(),
                ]
                .map(String::from),
            );
            if once {
                a.push("--once".into());
            }
            let v = loadgen_run(&loadgen, "handshake", &a)?;
            if f(&v, "per_s") <= 0.0 {
                problem(format!("{}: no handshake completed ({label})", t.name));
            }
            rows.push(Row::new(
                format!("handshakes/s, {label}"),
                t.name,
                f(&v, "per_s"),
                true,
            ));
            rows.push(Row::new(
                format!("handshake p99 (µs), {label}"),
                t.name,
                f(&v, "p99_us"),
                false,
            ));
            rows.push(Row::new(
                format!("handshakes, {label}: proxy CPU (cores)"),
                t.name,
                f(&v, "proxy_cores"),
                false,
            ));
            if v["fail"].as_u64().unwrap_or(0) > 0 {
                problem(format!(
                    "{}: {} failed handshakes; last error: {}",
                    t.name, v["fail"], v["last_error"]
                ));
            }
            if v["exhausted"].as_bool() == Some(true) {
                eprintln!("   token pool exhausted before the time was up (rate is over the shorter time)");
            }
        }
    }

    let gw_rss_end = proc_rss_kb(gw_pid).unwrap_or(0);
    drop(procs);

    // Report.
    let have_haproxy = haproxy_version.is_some();
    let table = render(&rows, have_haproxy);
    let load_after = sh("cat /proc/loadavg");
    let machine = format!(
        "nproc: {}\n{}\nmemory: {}\nkernel: {}\nload average before: {load_before}\nload average after: {load_after}",
        sh("nproc"),
        sh("lscpu | head -n 15"),
        sh("free -h | sed -n 2p"),
        sh("uname -r")
    );
    let mut md = String::new();
    let mode = if pin.is_some() { ", pinned" } else { "" };
    md += &format!("# wsgate benchmark, {} run{mode}, {date}\n\n", p.name);
    if let Some(pn) = &pin {
        md += &format!(
            "Pinned: each proxy alone on core {} with one thread (`workers: 1`, `nbthread 1`); \
             echo upstream and load generator on cores {}.\n\n",
            pn.proxy, pn.rest
        );
    }
    md += &format!(
        "Command: `{}`\n\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    md += &format!(
        "Targets: direct = plain `ws://` to the echo upstream; haproxy = {}; wsgate = `{}`. \
         Both proxies terminate TLS 1.3 (ECDSA P-256 certificate, X25519, no resumption) and verify an RS256 token \
         from `Authorization: Bearer` before tunnelling to the same echo upstream.\n\n",
        haproxy_version.as_deref().unwrap_or("absent"),
        wsgate_bin.display()
    );
    md += "```text\n";
    md += &machine;
    md += "\n```\n\n";
    md += &table;
    md += "\nIdle sessions:\n\n";
    for n in &notes {
        md += &format!("- {n}\n");
    }
    md += &format!(
        "\nwsgate RSS at the end: {gw_rss_end} kB. Run took {:.0} s.\n",
        started.elapsed().as_secs_f64()
    );
    println!("\n{table}");
    for n in &notes {
        println!("{n}");
    }
    let out = out_dir.join(format!(
        "{date}-{}{}.md",
        p.name,
        if pin.is_some() { "-pinned" } else { "" }
    ));
    std::fs::write(&out, md)?;
    println!(
        "\nwritten: {} ({:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    // `--strict` (the test suite's smoke run): any problem fails the run.
    let problems = PROBLEMS.lock().map(|p| p.clone()).unwrap_or_default();
    if args.has("strict") && !problems.is_empty() {
        return Err(io::Error::other(format!(
            "{} problem(s): {}",
            problems.len(),
            problems.join("; ")
        )));
    }
    Ok(())
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// What went wrong in a run (connection errors, sessions not held, nothing
/// relayed): printed as it happens, and the exit status with `--strict`.
static PROBLEMS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn problem(what: String) {
    eprintln!("   {what}");
    if let Ok(mut p) = PROBLEMS.lock() {
        p.push(what);
    }
}

fn check_errors(v: &Value, name: &str) {
    if v["errors"].as_u64().unwrap_or(0) > 0 {
        problem(format!("{name}: {} connection errors", v["errors"]));
    }
}

struct Row {
    metric: String,
    target: &'static str,
    value: f64,
    /// Higher is better (for the ratio's reading only).
    #[allow(dead_code)]
    higher_better: bool,
}

impl Row {
    fn new(metric: String, target: &'static str, value: f64, higher_better: bool) -> Self {
        Self {
            metric,
            target,
            value,
            higher_better,
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn render(rows: &[Row], have_haproxy: bool) -> String {
    let mut metrics: Vec<&str> = Vec::new();
    for r in rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let get = |m: &str, t: &str| {
        rows.iter()
            .find(|r| r.metric == m && r.target == t)
            .map(|r| r.value)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && !a.is_nan() && !b.is_nan() => format!("{:.2}", a / b),
        _ => "—".into(),
    };
    let mut s = String::new();
    s += "| metric | direct | haproxy | wsgate | wsgate/haproxy | haproxy/direct | wsgate/direct |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|\n";
    for m in metrics {
        let d = get(m, "direct");
        let h = if have_haproxy {
            get(m, "haproxy")
        } else {
            None
        };
        let g = get(m, "wsgate");
        let cell = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "—".into());
        s += &format!(
            "| {m} | {} | {} | {} | {} | {} | {} |\n",
            cell(d),
            cell(h),
            cell(g),
            ratio(g, h),
            ratio(h, d),
            ratio(g, d)
        );
    }
    s
}

/// One latency run's result, with its problems noted (too few samples, errors).
fn latency_result(child: std::process::Child, name: &str) -> io::Result<Value> {
    let v = loadgen_wait(child, "latency")?;
    if f(&v, "samples") < 0.9 * f(&v, "expected") {
        problem(format!(
            "{name}: {} latency samples of {} expected",
            v["samples"], v["expected"]
        ));
    }
    check_errors(&v, name);
    Ok(v)
}

fn loadgen_run(bin: &Path, mode: &str, args: &[String]) -> io::Result<Value> {
    loadgen_wait(loadgen_start(bin, mode, args)?, mode)
}

fn loadgen_start(bin: &Path, mode: &str, args: &[String]) -> io::Result<std::process::Child> {
    Command::new(bin)
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

fn loadgen_wait(child: std::process::Child, mode: &str) -> io::Result<Value> {
    let o = child.wait_with_output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| {
            io::Error::other(format!(
                "loadgen {mode} gave no result (exit {:?})",
                o.status.code()
            ))
        })?;
    serde_json::from_str(line).map_err(io::Error::other)
}

/// One idle level: (asked, held, KiB per session, idle CPU in cores, fds).
type IdleLevel = (usize, usize, f64, f64, usize);

/// Opens sessions level by level; at each level measures the proxy's RSS
/// growth over its fresh baseline, its CPU while idle, and its fds.
fn idle(bin: &Path, mut a: Vec<String>, pid: u32, p: &Profile) -> io::Result<Vec<IdleLevel>> {
    let levels: Vec<String> = p.idle_levels.iter().map(|l| l.to_string()).collect();
    a.extend(["--levels".into(), levels.join(",")]);
    let rss0 = proc_rss_kb(pid).unwrap_or(0);
    let mut child = Command::new(bin)
        .arg("hold")
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for &level in &p.idle_levels {
        let line = match lines.next() {
            Some(l) => l?,
            None => break,
        };
        let held: usize = line
            .split_whitespace()
            .find_map(|x| x.strip_prefix("ok="))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(500));
        let rss = proc_rss_kb(pid).unwrap_or(0);
        let c0 = proc_cpu_secs(pid).unwrap_or(0.0);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(p.idle_cpu_secs));
        let cpu = (proc_cpu_secs(pid).unwrap_or(0.0) - c0) / t0.elapsed().as_secs_f64();
        let fds = proc_fds(pid).unwrap_or(0);
        let per = (rss.saturating_sub(rss0)) as f64 / held.max(1) as f64;
        eprintln!(
            "   {line}: RSS {rss0} -> {rss} kB, {per:.1} KiB/session, CPU {:.2}%, fds {fds}",
            cpu * 100.0
        );
        out.push((level, held, per, cpu, fds));
        writeln!(stdin)?;
    }
    drop(stdin);
    let _ = child.wait();
    // Let the proxy tear the sessions down before the next scenario.
    std::thread::sleep(Duration::from_secs(if p.name == "quick" { 1 } else { 3 }));
    Ok(out)
}

/// The tokens: subjects `user-{i}` with the role `chat`, valid for three
/// hours.
fn sign_tokens(priv_pem: &[u8], n: usize) -> io::Result<Vec<String>> {
    sign_rs256(priv_pem, n, |i, now| {
        serde_json::json!({
            "sub": format!("user-{i}"), "jti": format!("bench-{i}"), "aud": "wsgate-bench",
            "iat": now, "exp": now + 3 * 3600, "roles": ["chat"],
        })
    })
}

fn wsgate_config(echo: &str, pinned: bool) -> String {
    // Pinned: one I/O worker, like HAProxy's `nbthread 1`.
    let workers = if pinned { "workers: 1\n" } else { "" };
    format!(
        r#"{}routes:
  - id: echo
    path: /echo
    upstream: ws://{echo}
limits:
  max_sessions: 100000
  handshake_timeout: 10s
  shutdown_grace: 2s
{workers}"#,
        wsgate_config_head("the benchmark runner", "127.0.0.1:0")
    )
}

/// The same work in HAProxy 2.6: TLS termination with the same certificate,
/// the bearer token verified with `jwt_verify` (RS256), `exp` checked against
/// `date()`, the token removed, then the WebSocket tunnelled.
fn haproxy_config(
    port: u16,
    echo: &str,
    combined_pem: &str,
    pubkey: &str,
    threads: usize,
) -> String {
    let frontend = haproxy_jwt_frontend("ws", port, combined_pem, pubkey, "echo");
    format!(
        r#"# Written by the benchmark runner.
global
    maxconn 9800
    nbthread {threads}
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout tunnel 1h

{frontend}
backend echo
    server echo1 {echo} maxconn 100000
"#
    )
}
