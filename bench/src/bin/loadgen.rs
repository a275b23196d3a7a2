//! Load generator. One scenario per run; prints `RESULT {json}` on stdout.
//!
//! ```text
//! loadgen throughput --addr A [--tls-ca CA] --path P --tokens F --conns 64 --size 64 --window 16 --secs 10 --warmup 2 [--pid PID]
//! loadgen latency    --addr A [--tls-ca CA] --path P --tokens F --conns 100 --rate 2000 --secs 10 --warmup 2 [--pid PID]
//! loadgen handshake  --addr A [--tls-ca CA] --path P --tokens F --workers 32 --secs 10 [--once] [--pid PID]
//! loadgen hold       --addr A [--tls-ca CA] --path P --tokens F --levels 1000,5000,9500
//! ```
//! Common: `--sources 127.0.0.2,127.0.0.3` spreads connections over source
//! addresses; `--host` sets the Host header (default `localhost`);
//! `--deflate` offers permessage-deflate and fails unless the answer
//! accepts it. `throughput --deflate` then sends a `--size`-byte text
//! message compressed (RSV1), the same compressed bytes every time (no
//! context takeover), and reports its wire size.
//! `--progress` (throughput, handshake): every 50 ms, a line
//! `PROGRESS <unix ns> <count>` on stderr with the messages received (or
//! handshakes completed) so far, so that a counter read over any window
//! (perf stat, callgrind) can be divided by the exact count in that window.
//! Client frames carry an all-zero mask key (valid, and it keeps the load
//! generator's CPU for the proxies).
//!
//! `hold` opens sessions up to each level, prints `LEVEL n ok=.. fail=..`,
//! and waits for a line on stdin before the next level (and before exiting).
//! With `--watch`, every held session is read: pings are answered and the
//! unix time (ns) a close frame or EOF arrives is recorded; after the last
//! level, stdin takes commands: `CLOSES` prints `CLOSES n [ns, ...]` (and
//! forgets them), `QUIT` exits.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use wsgate_bench::*;

struct Common {
    target: Target,
    host: String,
    tokens: Arc<Vec<String>>,
    pid: Option<u32>,
    deflate: bool,
}

fn common(args: &Args) -> io::Result<Common> {
    let addr: SocketAddr = args
        .get("addr")
        .ok_or_else(|| io::Error::other("--addr required"))?
        .parse()
        .map_err(io::Error::other)?;
    let host = args.get("host").unwrap_or("localhost").to_owned();
    let tls = match args.get("tls-ca") {
        Some(ca) => Some((
            tls_client(ca)?,
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(io::Error::other)?,
        )),
        None => None,
    };
    let sources = args
        .get("sources")
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let tokens: Vec<String> = match args.get("tokens") {
        Some(f) => std::fs::read_to_string(f)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    Ok(Common {
        target: Target {
            addr,
            path: args.get("path").unwrap_or("/echo").to_owned(),
            tls,
            sources,
        },
        host,
        tokens: Arc::new(tokens),
        pid: args.get("pid").and_then(|p| p.parse().ok()),
        deflate: args.has("deflate"),
    })
}

impl Common {
    fn token(&self, i: usize) -> Option<&str> {
        if self.tokens.is_empty() {
            None
        } else {
            Some(&self.tokens[i % self.tokens.len()])
        }
    }

    /// Connects and upgrades session `i`; fails unless the answer is 101.
    async fn open(&self, i: usize) -> io::Result<(Conn, Vec<u8>)> {
        let mut c = connect(&self.target, i).await?;
        let offer = self.deflate.then_some(DEFLATE_OFFER);
        let up = upgrade(&mut c, &self.host, &self.target.path, self.token(i), offer).await?;
        if up.status != 101 {
            return Err(io::Error::other(format!("upgrade answered {}", up.status)));
        }
        let accepted = up
            .extensions
            .as_deref()
            .is_some_and(|e| e.starts_with("permessage-deflate"));
        if self.deflate && !accepted {
            return Err(io::Error::other(format!(
                "permessage-deflate offered, not accepted (answer: {:?})",
                up.extensions
            )));
        }
        Ok((c, up.rest))
    }
}

/// CPU seconds used by the measured process during a window.
struct CpuProbe {
    pid: Option<u32>,
    start: Option<f64>,
    at: Instant,
}

impl CpuProbe {
    fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            start: pid.and_then(proc_cpu_secs),
            at: Instant::now(),
        }
    }
    /// Share of one core used since start (1.0 = one full core).
    fn cores(&self) -> Option<f64> {
        let now = proc_cpu_secs(self.pid?)?;
        Some((now - self.start?) / self.at.elapsed().as_secs_f64())
    }
}

/// `--progress`: reports `count` on stderr every 50 ms until the process ends.
fn progress(args: &Args, count: Arc<AtomicU64>) {
    if !args.has("progress") {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            eprintln!("PROGRESS {} {}", unix_ns(), count.load(Ordering::Relaxed));
        }
    });
}

fn emit(v: serde_json::Value) {
    println!("RESULT {v}");
    let _ = io::stdout().flush();
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let args = Args::from_env(2);
    let c = Arc::new(common(&args)?);
    match mode.as_str() {
        "throughput" => throughput(c, &args).await,
        "latency" => latency(c, &args).await,
        "handshake" => handshake(c, &args).await,
        "hold" => hold(c, &args).await,
        _ => Err(io::Error::other(
            "mode: throughput | latency | handshake | hold",
        )),
    }?;
    // Skip dropping thousands of connections one by one.
    std::process::exit(0);
}

/// Counts complete data frames in `buf[..filled]`, compacting it; returns
/// the count and, through `first8`, the first 8 payload bytes of each frame.
fn drain_frames(buf: &mut Vec<u8>, filled: &mut usize, mut on_frame: impl FnMut(&[u8])) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Some(h) = parse_header(&buf[at..*filled]) {
        let total = h.header_len + h.len;
        if *filled - at < total {
            if buf.len() < total {
                buf.copy_within(at..*filled, 0);
                *filled -= at;
                at = 0;
                buf.resize(total, 0);
            }
            break;
        }
        if matches!(h.opcode, OP_TEXT | OP_BINARY | OP_CONT) {
            n += 1;
            on_frame(&buf[at + h.header_len..at + total]);
        }
        at += total;
    }
    if at > 0 {
        buf.copy_within(at..*filled, 0);
        *filled -= at;
    }
    n
}

fn client_frame(size: usize, fill: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(size + 14);
    put_header(&mut f, true, OP_BINARY, size, Some([0; 4]));
    f.resize(f.len() + size, fill);
    f
}

/// A `size`-byte chat-like text compressed as one permessage-deflate
/// message: a text frame with RSV1, masked with the all-zero key. The words
/// are drawn pseudo-randomly from a small vocabulary, which compresses about
/// as well as chat or JSON traffic does (a few times), not as a repeated
/// line would (a hundred times).
fn compressed_frame(size: usize) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "the", "session", "token", "gateway", "message", "room", "user", "sent", "at", "standup",
        "deploy", "is", "green", "red", "see", "you", "later", "ok", "thanks", "for", "review",
        "merge", "ticket", "done", "on", "call", "today", "build", "passed", "failed", "lunch",
        "now",
    ];
    let mut text = Vec::with_capacity(size + 16);
    let mut x: u32 = 0x9e37_79b9;
    while text.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        text.extend_from_slice(WORDS[(x % 32) as usize].as_bytes());
        text.push(b' ');
    }
    text.truncate(size);
    let body = deflate_message(&text);
    let mut f = Vec::with_capacity(body.len() + 14);
    put_header(&mut f, true, OP_TEXT, body.len(), Some([0; 4]));
    f[0] |= 0x40;
    f.extend_from_slice(&body);
    f
}

async fn throughput(c: Arc<Common>, args: &Args) -> io::Result<()> {
    let conns: usize = args.num("conns", 64);
    let size: usize = args.num("size", 64);
    let window: usize = args.num("window", 16);
    let secs: f64 = args.num("secs", 10.0);
    let warmup: f64 = args.num("warmup", 2.0);
    let received = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut opened = Vec::new();
    for i in 0..conns {
        opened.push(c.open(i).await?);
    }
    let frame = if c.deflate {
        compressed_frame(size)
    } else {
        client_frame(size, b'x')
    };
    let wire_size = frame.len() - parse_header(&frame).map_or(0, |h| h.header_len);
    progress(args, received.clone());
    for (conn, rest) in opened {
        let (mut r, mut w) = tokio::io::split(conn);
        let credits = Arc::new((AtomicUsize::new(window), Notify::new()));
        let frame = frame.clone();
        let (cr, stop_w, errs) = (credits.clone(), stop.clone(), errors.clone());
        tokio::spawn(async move {
            let mut out = Vec::with_capacity(frame.len() * window);
            while !stop_w.load(Ordering::Relaxed) {
                let k = cr.0.swap(0, Ordering::AcqRel);
                if k == 0 {
                    cr.1.notified().await;
                    continue;
                }
                out.clear();
                for _ in 0..k {
                    out.extend_from_slice(&frame);
                }
                if w.write_all(&out).await.is_err() {
                    errs.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        });
        let (recv, stop_r, errs) = (received.clone(), stop.clone(), errors.clone());
        tokio::spawn(async move {
            let mut buf = rest;
            let mut filled = buf.len();
            buf.resize(filled.max(64 * 1024), 0);
            while !stop_r.load(Ordering::Relaxed) {
                let n = drain_frames(&mut buf, &mut filled, |_| {});
                if n > 0 {
                    recv.fetch_add(n as u64, Ordering::Relaxed);
                    credits.0.fetch_add(n, Ordering::AcqRel);
                    credits.1.notify_one();
                }
                if filled == buf.len() {
                    let l = buf.len();
                    buf.resize(l * 2, 0);
                }
                match r.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => {
                        errs.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(n) => filled += n,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let c0 = received.load(Ordering::Relaxed);
    let probe = CpuProbe::start(c.pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let c1 = received.load(Ordering::Relaxed);
    let el = t0.elapsed().as_secs_f64();
    let cores = probe.cores();
    stop.store(true, Ordering::Relaxed);
    let msgs = (c1 - c0) as f64 / el;
    emit(serde_json::json!({
        "msgs_per_s": msgs,
        "mb_per_s": msgs * size as f64 / 1e6,
        "errors": errors.load(Ordering::Relaxed),
        "proxy_cores": cores,
        "conns": conns, "size": size, "window": window, "secs": el,
        "deflate": c.deflate, "wire_size": wire_size,
    }));
    Ok(())
}

async fn latency(c: Arc<Common>, args: &Args) -> io::Result<()> {
    let conns: usize = args.num("conns", 100);
    let rate: f64 = args.num("rate", 2000.0);
    let secs: f64 = args.num("secs", 10.0);
    let warmup: f64 = args.num("warmup", 2.0);
    let size: usize = args.num("size", 64).max(16);
    let mut opened = Vec::new();
    for i in 0..conns {
        opened.push(c.open(i).await?);
    }
    let mut pairs = Vec::with_capacity(conns);
    let epoch = Instant::now() + Duration::from_millis(100);
    let measure_from = epoch + Duration::from_secs_f64(warmup);
    let measure_to = measure_from + Duration::from_secs_f64(secs);
    let period = Duration::from_secs_f64(conns as f64 / rate);
    let errors = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let probe_at = measure_from;
    // One pacer thread keeps the schedule for every connection: a runtime
    // timer fires up to a millisecond late (its wheel has 1 ms slots), an OS
    // sleep within tens of microseconds, so the scheduled send time is close
    // to the actual one and the round trip measured from the schedule keeps
    // what the target costs, not the generator's timer.
    let mut pace = Vec::with_capacity(conns);
    for (conn, rest) in opened {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        pace.push(tx);
        let (r, w) = tokio::io::split(conn);
        pairs.push((r, w, rest, rx));
    }
    let step = period.div_f64(conns as f64);
    let stop_at = measure_to + Duration::from_millis(200);
    std::thread::spawn(move || {
        for j in 0u64.. {
            let at = epoch + step.mul_f64(j as f64);
            if at > stop_at {
                break;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let ns = at.duration_since(epoch).as_nanos() as u64;
            if pace[(j % conns as u64) as usize].send(ns).is_err() {
                break;
            }
        }
        // Dropping the senders ends the writers.
    });
    for (mut r, mut w, rest, mut rx) in pairs {
        let errs = errors.clone();
        tokio::spawn(async move {
            let mut frame = client_frame(size, b'y');
            let off = frame.len() - size;
            while let Some(ns) = rx.recv().await {
                frame[off..off + 8].copy_from_slice(&ns.to_le_bytes());
                // The actual send time too, for the round trip from the send.
                let sent_ns = Instant::now().duration_since(epoch).as_nanos() as u64;
                frame[off + 8..off + 16].copy_from_slice(&sent_ns.to_le_bytes());
                if w.write_all(&frame).await.is_err() {
                    errs.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        });
        let errs = errors.clone();
        readers.push(tokio::spawn(async move {
            let mut samples: Vec<u64> = Vec::new();
            let mut from_send: Vec<u64> = Vec::new();
            let mut buf = rest;
            let mut filled = buf.len();
            buf.resize(filled.max(16 * 1024), 0);
            loop {
                let now = Instant::now();
                drain_frames(&mut buf, &mut filled, |p| {
                    if p.len() >= 16 {
                        let ns = u64::from_le_bytes(p[..8].try_into().unwrap());
                        let sched = epoch + Duration::from_nanos(ns);
                        let ns = u64::from_le_bytes(p[8..16].try_into().unwrap());
                        let sent = epoch + Duration::from_nanos(ns);
                        if sched >= measure_from && sched < measure_to {
                            samples.push(now.duration_since(sched).as_micros() as u64);
                            from_send.push(now.duration_since(sent).as_micros() as u64);
                        }
                    }
                });
                if now > measure_to + Duration::from_millis(500) {
                    return (samples, from_send);
                }
                if filled == buf.len() {
                    let l = buf.len();
                    buf.resize(l * 2, 0);
                }
                let read =
                    tokio::time::timeout(Duration::from_millis(200), r.read(&mut buf[filled..]))
                        .await;
                match read {
                    Err(_) => continue,
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        errs.fetch_add(1, Ordering::Relaxed);
                        return (samples, from_send);
                    }
                    Ok(Ok(n)) => filled += n,
                }
            }
        }));
    }
    tokio::time::sleep_until(probe_at.into()).await;
    let probe = CpuProbe::start(c.pid);
    tokio::time::sleep_until(measure_to.into()).await;
    let cores = probe.cores();
    let mut all = Vec::new();
    let mut sent = Vec::new();
    for r in readers {
        let (a, b) = r.await.unwrap_or_default();
        all.extend(a);
        sent.extend(b);
    }
    all.sort_unstable();
    sent.sort_unstable();
    let expected = (rate * secs) as u64;
    emit(serde_json::json!({
        "p50_us": pct(&all, 0.50), "p99_us": pct(&all, 0.99), "p999_us": pct(&all, 0.999),
        "max_us": all.last().copied().unwrap_or(0),
        "sent_p50_us": pct(&sent, 0.50), "sent_p99_us": pct(&sent, 0.99), "sent_p999_us": pct(&sent, 0.999),
        "samples": all.len(), "expected": expected,
        "errors": errors.load(Ordering::Relaxed),
        "proxy_cores": cores,
        "conns": conns, "rate": rate, "secs": secs,
    }));
    Ok(())
}

async fn handshake(c: Arc<Common>, args: &Args) -> io::Result<()> {
    let workers: usize = args.num("workers", 32);
    let secs: f64 = args.num("secs", 10.0);
    // `--once`: each token of the pool is used at most once.
    let once = args.has("once");
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let fail = Arc::new(AtomicU64::new(0));
    let last_err = Arc::new(std::sync::Mutex::new(String::new()));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let probe = CpuProbe::start(c.pid);
    progress(args, ok.clone());
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (c, next, ok, fail, last_err) = (
            c.clone(),
            next.clone(),
            ok.clone(),
            fail.clone(),
            last_err.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if once && i >= c.tokens.len() {
                    break;
                }
                let s = Instant::now();
                match c.open(i).await {
                    Ok((conn, _)) => {
                        lat.push(s.elapsed().as_micros() as u64);
                        ok.fetch_add(1, Ordering::Relaxed);
                        abort_on_drop(&conn);
                    }
                    Err(e) => {
                        fail.fetch_add(1, Ordering::Relaxed);
                        *last_err.lock().unwrap() = e.to_string();
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let el = t0.elapsed().as_secs_f64();
    let cores = probe.cores();
    lat.sort_unstable();
    let n = ok.load(Ordering::Relaxed);
    emit(serde_json::json!({
        "per_s": n as f64 / el, "ok": n, "fail": fail.load(Ordering::Relaxed),
        "last_error": *last_err.lock().unwrap(),
        "p50_us": pct(&lat, 0.5), "p99_us": pct(&lat, 0.99),
        "proxy_cores": cores, "workers": workers, "secs": el,
        "exhausted": once && next.load(Ordering::Relaxed) >= c.tokens.len(),
    }));
    Ok(())
}

async fn hold(c: Arc<Common>, args: &Args) -> io::Result<()> {
    let levels: Vec<usize> = args
        .get("levels")
        .unwrap_or("1000")
        .split(',')
        .filter_map(|x| x.parse().ok())
        .collect();
    let parallel: usize = args.num("parallel", 64);
    let watch = args.has("watch");
    let closes: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let mut held: Vec<Conn> = Vec::new();
    let mut watched = 0usize;
    let fail = Arc::new(AtomicU64::new(0));
    let stdin = io::stdin();
    for level in levels {
        let t0 = Instant::now();
        let mut i = held.len();
        while held.len() + watched < level {
            let batch = (level - held.len() - watched).min(parallel);
            let mut js = Vec::new();
            for _ in 0..batch {
                let c = c.clone();
                let n = i;
                i += 1;
                js.push(tokio::spawn(async move { c.open(n).await }));
            }
            let mut failed_batch = 0;
            for j in js {
                match j.await {
                    Ok(Ok((conn, _))) if watch => {
                        watched += 1;
                        tokio::spawn(watch_closes(conn, closes.clone()));
                    }
                    Ok(Ok((conn, _))) => held.push(conn),
                    Ok(Err(e)) => {
                        if fail.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("hold: first failure: {e}");
                        }
                        failed_batch += 1;
                    }
                    Err(_) => {
                        fail.fetch_add(1, Ordering::Relaxed);
                        failed_batch += 1;
                    }
                }
            }
            if failed_batch == batch {
                break; // the target refuses more
            }
        }
        println!(
            "LEVEL {level} ok={} fail={} secs={:.2}",
            held.len() + watched,
            fail.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64()
        );
        io::stdout().flush()?;
        let mut line = String::new();
        // Wait for the runner to take its measurements.
        let l = tokio::task::block_in_place(|| stdin.lock().read_line(&mut line))?;
        if l == 0 {
            break;
        }
    }
    if !watch {
        return Ok(());
    }
    loop {
        let mut line = String::new();
        let l = tokio::task::block_in_place(|| stdin.lock().read_line(&mut line))?;
        match line.trim() {
            "CLOSES" => {
                let got = std::mem::take(&mut *closes.lock().unwrap());
                println!("CLOSES {} {}", got.len(), serde_json::json!(got));
                io::stdout().flush()?;
            }
            _ if l == 0 => break,
            "QUIT" => break,
            _ => {}
        }
    }
    Ok(())
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Holds one session: answers pings, records when it is closed.
async fn watch_closes(mut conn: Conn, closes: Arc<std::sync::Mutex<Vec<u64>>>) {
    let mut buf = vec![0u8; 256];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match conn.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        let mut at = 0;
        while let Some(h) = parse_header(&buf[at..filled]) {
            if filled - at < h.header_len + h.len {
                break;
            }
            let payload = buf[at + h.header_len..at + h.header_len + h.len].to_vec();
            at += h.header_len + h.len;
            match h.opcode {
                OP_CLOSE => {
                    closes.lock().unwrap().push(unix_ns());
                    return;
                }
                OP_PING => {
                    let mut pong = Vec::new();
                    put_header(&mut pong, true, OP_PONG, payload.len(), Some([0; 4]));
                    pong.extend_from_slice(&payload);
                    if conn.write_all(&pong).await.is_err() {
                        break;
                    }
                }
                _ => {}
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
    closes.lock().unwrap().push(unix_ns());
}
