//! Soak driver for wsgate (loopback only, bounded in count and time).
//!
//! `wsgate-soak echo --bind 127.0.0.1:PORT`
//!     WebSocket echo upstream: text and binary messages are sent back.
//!
//! `wsgate-soak drive --url ws://127.0.0.1:P/path --token JWT [--rate 200]
//!     [--long 1000] [--seconds 1800] [--messages 3] [--ping-every 10]
//!     [--max-inflight 2000] [--vanish 0.2] [--vanish-hold 15]`
//!     Opens `--long` sessions that stay connected and ping every
//!     `--ping-every` seconds, and at the same time runs churn sessions at
//!     `--rate` per second: connect, send `--messages` text messages, read the
//!     echoes, close. After `--seconds` the churn stops, the long-lived
//!     sessions are closed with 1000, and a summary line is printed. Every
//!     10 s a `stats` line goes to stdout. Exit 1 when any long-lived session
//!     was lost or more than 1% of churn sessions failed.
//!
//!     `--vanish F` (0 to 1, default 0): that fraction of the long-lived
//!     sessions (every 1/F-th one, spread over the first half of the run) and
//!     of the churn sessions (after their messages and echoes) vanish: the
//!     driver keeps the socket open but never reads, writes or closes it
//!     again, like a laptop that dropped off the network while the kernel
//!     still holds the connection. The gateway's keepalive has to find them.
//!     They are dropped only at the end, `--vanish-hold` seconds after the
//!     last one vanished (give it the gateway's ping_interval + ping_timeout
//!     and a margin, so that every one of them was pinged and timed out).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match arg(args, name) {
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("bad value for {name}: {v}");
            std::process::exit(2)
        }),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = match args.first().map(String::as_str) {
        Some("echo") => rt.block_on(echo(arg(&args, "--bind").unwrap_or_else(|| "127.0.0.1:0".into()))),
        Some("drive") => rt.block_on(drive(&args)),
        _ => {
            eprintln!("usage: wsgate-soak echo --bind ADDR | drive --url URL --token JWT [...]");
            2
        }
    };
    std::process::exit(code);
}

async fn echo(bind: String) -> i32 {
    let listener = TcpListener::bind(&bind).await.expect("bind echo");
    println!("echo listening on {}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Text(_) | Message::Binary(_) => {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            // tungstenite answers the close; drive the stream until it ends.
            let _ = ws.close(None).await;
        });
    }
}

#[derive(Default)]
struct Counters {
    churn_started: AtomicU64,
    churn_ok: AtomicU64,
    churn_failed: AtomicU64,
    churn_skipped: AtomicU64,
    long_open: AtomicU64,
    long_lost: AtomicU64,
    long_closed_ok: AtomicU64,
    pings: AtomicU64,
    pongs: AtomicU64,
    messages: AtomicU64,
    long_vanished: AtomicU64,
    churn_vanished: AtomicU64,
}

/// Vanished sessions: held, never polled, dropped at the end of the run.
type Graveyard = Arc<Mutex<Vec<Ws>>>;

/// Whether the `i`-th session of a series is one of the fraction `f` that vanish
/// (evenly spread: with 0.2, every fifth one).
fn picked(i: u64, f: f64) -> bool {
    f > 0.0 && ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
}

async fn connect(url: &str, token: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().map_err(|_| "bad token".to_string())?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn churn_one(
    url: &str,
    token: &str,
    messages: usize,
    c: &Counters,
    vanish: Option<&Graveyard>,
) -> Result<(), String> {
    let mut ws = connect(url, token).await?;
    for i in 0..messages {
        let text = format!("churn message {i}");
        ws.send(Message::text(text.clone())).await.map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == text => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        c.messages.fetch_add(1, Relaxed);
    }
    if let Some(graveyard) = vanish {
        // Gone without a word: no close, no more reads.
        graveyard.lock().unwrap().push(ws);
        c.churn_vanished.fetch_add(1, Relaxed);
        return Ok(());
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .map_err(|e| e.to_string())?;
    // Wait for the peer's close and the end of the stream.
    while let Some(m) = ws.next().await {
        if m.is_err() {
            break;
        }
    }
    Ok(())
}

async fn long_lived(
    ws: Ws,
    ping_every: Duration,
    mut stop: watch::Receiver<bool>,
    c: Arc<Counters>,
    vanish: Option<(tokio::time::Instant, Graveyard)>,
) {
    let (mut tx, mut rx) = ws.split();
    let mut tick = tokio::time::interval(ping_every);
    tick.tick().await;
    let (vanish_at, graveyard) = match vanish {
        Some((at, g)) => (Some(at), Some(g)),
        None => (None, None),
    };
    let vanish_sleep = tokio::time::sleep_until(vanish_at.unwrap_or_else(tokio::time::Instant::now));
    tokio::pin!(vanish_sleep);
    loop {
        tokio::select! {
            _ = &mut vanish_sleep, if vanish_at.is_some() => {
                // Stop reading and writing; keep the socket until the end.
                if let (Ok(ws), Some(g)) = (rx.reunite(tx), graveyard) {
                    g.lock().unwrap().push(ws);
                }
                c.long_vanished.fetch_add(1, Relaxed);
                c.long_open.fetch_sub(1, Relaxed);
                return;
            }
            _ = stop.changed() => {
                let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "soak over".into() }))).await;
                let deadline = tokio::time::sleep(Duration::from_secs(10));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => { c.long_lost.fetch_add(1, Relaxed); break; }
                        m = rx.next() => match m {
                            Some(Ok(Message::Close(_))) | None => { c.long_closed_ok.fetch_add(1, Relaxed); break; }
                            Some(Ok(_)) => {}
                            Some(Err(_)) => { c.long_lost.fetch_add(1, Relaxed); break; }
                        }
                    }
                }
                c.long_open.fetch_sub(1, Relaxed);
                return;
            }
            _ = tick.tick() => {
                c.pings.fetch_add(1, Relaxed);
                if tx.send(Message::Ping(b"soak".to_vec().into())).await.is_err()
                    || tx.send(Message::text("keepalive")).await.is_err() {
                    break;
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Pong(_))) => { c.pongs.fetch_add(1, Relaxed); }
                Some(Ok(Message::Text(_) | Message::Ping(_))) => {}
                other => { eprintln!("long-lived session lost: {other:?}"); break; }
            }
        }
    }
    c.long_lost.fetch_add(1, Relaxed);
    c.long_open.fetch_sub(1, Relaxed);
}

async fn drive(args: &[String]) -> i32 {
    let url = arg(args, "--url").expect("--url");
    let token = arg(args, "--token").expect("--token");
    let rate: u64 = num(args, "--rate", 200);
    let long: usize = num(args, "--long", 1000);
    let seconds: u64 = num(args, "--seconds", 1800);
    let messages: usize = num(args, "--messages", 3);
    let ping_every = Duration::from_secs(num(args, "--ping-every", 10));
    let max_inflight: usize = num(args, "--max-inflight", 2000);
    let vanish: f64 = num(args, "--vanish", 0.0);
    let vanish_hold = Duration::from_secs(num(args, "--vanish-hold", 15));
    if !(0.0..=1.0).contains(&vanish) {
        eprintln!("--vanish must be between 0 and 1");
        return 2;
    }
    let graveyard: Graveyard = Arc::new(Mutex::new(Vec::new()));

    let c = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();

    // Long-lived sessions, opened at up to 200 per second.
    let mut long_tasks = Vec::with_capacity(long);
    let mut open_fail = 0u64;
    for i in 0..long {
        match connect(&url, &token).await {
            Ok(ws) => {
                c.long_open.fetch_add(1, Relaxed);
                // Vanishers go at evenly spread moments over the first half of the run.
                let v = picked(i as u64, vanish).then(|| {
                    let k = (i as f64 * vanish).floor();
                    let n = (long as f64 * vanish).floor().max(1.0);
                    let at = tokio::time::Instant::now()
                        + Duration::from_secs(5)
                        + Duration::from_secs_f64(seconds as f64 / 2.0 * k / n);
                    (at, graveyard.clone())
                });
                long_tasks.push(tokio::spawn(long_lived(ws, ping_every, stop_rx.clone(), c.clone(), v)));
            }
            Err(e) => {
                open_fail += 1;
                eprintln!("long-lived connect {i} failed: {e}");
            }
        }
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    println!("long-lived open: {} (failed {open_fail}) after {:.1}s", c.long_open.load(Relaxed), started.elapsed().as_secs_f64());

    // Reporter.
    let rep = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(10));
            t.tick().await;
            loop {
                t.tick().await;
                println!(
                    "stats t={:.0} churn_started={} churn_ok={} churn_failed={} churn_skipped={} long_open={} long_lost={} pings={} pongs={} messages={} vanished={}",
                    started.elapsed().as_secs_f64(),
                    c.churn_started.load(Relaxed), c.churn_ok.load(Relaxed), c.churn_failed.load(Relaxed),
                    c.churn_skipped.load(Relaxed), c.long_open.load(Relaxed), c.long_lost.load(Relaxed),
                    c.pings.load(Relaxed), c.pongs.load(Relaxed), c.messages.load(Relaxed),
                    c.long_vanished.load(Relaxed) + c.churn_vanished.load(Relaxed),
                );
            }
        })
    };

    // Churn.
    let inflight = Arc::new(Semaphore::new(max_inflight));
    let churn_start = Instant::now();
    let end = churn_start + Duration::from_secs(seconds);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut errors_shown = 0;
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => { eprintln!("SIGTERM: stopping early"); break; }
        }
        while let Ok(e) = err_rx.try_recv() {
            if errors_shown < 20 {
                eprintln!("churn session failed: {e}");
                errors_shown += 1;
            }
        }
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            c.churn_skipped.fetch_add(1, Relaxed);
            continue;
        };
        let n = c.churn_started.fetch_add(1, Relaxed);
        let v = picked(n, vanish).then(|| graveyard.clone());
        let (url, token, c, err_tx) = (url.clone(), token.clone(), c.clone(), err_tx.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(15), churn_one(&url, &token, messages, &c, v.as_ref())).await;
            match r {
                Ok(Ok(())) => { c.churn_ok.fetch_add(1, Relaxed); }
                Ok(Err(e)) => { c.churn_failed.fetch_add(1, Relaxed); let _ = err_tx.send(e); }
                Err(_) => { c.churn_failed.fetch_add(1, Relaxed); let _ = err_tx.send("timeout".into()); }
            }
            drop(permit);
        });
    }
    let churn_secs = churn_start.elapsed().as_secs_f64();
    // Let in-flight churn sessions finish.
    let _ = tokio::time::timeout(Duration::from_secs(20), inflight.acquire_many(max_inflight as u32)).await;

    let _ = stop_tx.send(true);
    for t in long_tasks {
        let _ = t.await;
    }
    rep.abort();
    // The vanished sessions: every one has gone by now (the churn sessions
    // have finished and the long-lived ones have stopped), so hold them for
    // `--vanish-hold`, long enough for the gateway's keepalive to time out
    // the last of them, then drop them.
    let vanished = c.long_vanished.load(Relaxed) + c.churn_vanished.load(Relaxed);
    if vanished > 0 {
        tokio::time::sleep(vanish_hold).await;
        let n = std::mem::take(&mut *graveyard.lock().unwrap()).len();
        println!("dropped {n} vanished sessions after holding them {}s", vanish_hold.as_secs());
    }
    let started_n = c.churn_started.load(Relaxed);
    let failed = c.churn_failed.load(Relaxed);
    let lost = c.long_lost.load(Relaxed);
    println!(
        "summary churn_seconds={churn_secs:.0} churn_started={started_n} churn_ok={} churn_failed={failed} churn_skipped={} churn_rate={:.1}/s long_requested={long} long_open_failed={open_fail} long_closed_ok={} long_lost={lost} pings={} pongs={} messages={} long_vanished={} churn_vanished={} vanished={vanished}",
        c.churn_ok.load(Relaxed), c.churn_skipped.load(Relaxed), started_n as f64 / churn_secs.max(1.0),
        c.long_closed_ok.load(Relaxed), c.pings.load(Relaxed), c.pongs.load(Relaxed), c.messages.load(Relaxed),
        c.long_vanished.load(Relaxed), c.churn_vanished.load(Relaxed),
    );
    if lost > 0 || open_fail > 0 || failed * 100 > started_n {
        1
    } else {
        0
    }
}
