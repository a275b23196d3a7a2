//! The session timers against in-memory pipes and paused tokio time:
//! expiry, idle, keepalive and kill, each decided by the pump alone.

use std::sync::atomic::AtomicU64;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::metrics::Metrics;
use crate::proxy::frame::{self, encode, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

const MASK: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

#[test]
fn absurd_deadlines_are_capped_not_overflowed() {
    let now = Instant::now();
    assert_eq!(later(now, Duration::from_secs(u64::MAX)), now + YEAR);
    assert_eq!(
        later(now, Duration::from_secs(5)),
        now + Duration::from_secs(5)
    );
    // An `exp` near i64::MAX seconds must not overflow the millisecond maths.
    let exp = i64::MAX / 2;
    let left_ms = exp
        .saturating_mul(1000)
        .saturating_sub(unix_now_ms())
        .max(0) as u64;
    assert!(later(now, Duration::from_millis(left_ms)) <= now + YEAR);
}

/// Wall-clock time that follows tokio's (paused) clock from a fixed start.
#[derive(Debug)]
struct PausedClock {
    unix_ms_at_start: i64,
    start: Instant,
}

impl WallClock for PausedClock {
    fn unix_ms(&self) -> i64 {
        self.unix_ms_at_start + self.start.elapsed().as_millis() as i64
    }
}

const T0_MS: i64 = 1_700_000_000_000;

fn settings() -> PumpSettings {
    PumpSettings {
        close_on_expiry: true,
        idle_timeout: None,
        max_message_size: 1 << 20,
        ping_interval: None,
        ping_timeout: Duration::from_secs(10),
        deflate: false,
        clock: Arc::new(PausedClock {
            unix_ms_at_start: T0_MS,
            start: Instant::now(),
        }),
    }
}

fn token(exp: i64) -> crate::auth::VerifiedToken {
    crate::auth::VerifiedToken {
        issuer_id: "test".into(),
        iss: None,
        sub: Some("alice".into()),
        jti: None,
        iat: None,
        exp: Some(exp),
        claims: crate::auth::claims::Claims::new(&serde_json::Value::Null),
        alg: jsonwebtoken::Algorithm::HS256,
        key: [0; 16],
        leeway: Duration::ZERO,
        fingerprint: String::new(),
    }
}

fn session(exp_unix_s: Option<i64>) -> SessionHandle {
    SessionHandle::new(
        1,
        "t".into(),
        "127.0.0.1:1".parse().expect("addr"),
        Default::default(),
        Default::default(),
        exp_unix_s.map(|exp| Arc::new(token(exp))),
    )
}

/// How the session ended and how long it ran (paused time).
struct Ended {
    reason: CloseReason,
    elapsed: Duration,
}

/// Runs the pump over two pipes; `peers` plays both far ends.
async fn pump_with<F, Fut>(settings: PumpSettings, session: &SessionHandle, peers: F) -> Ended
where
    F: FnOnce(DuplexStream, DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (c_near, c_far) = duplex(1 << 16);
    let (u_near, u_far) = duplex(1 << 16);
    let metrics = Metrics::new().for_session("t");
    let tally = Tally::default();
    let started = Instant::now();
    let (reason, ()) = tokio::join!(
        run(c_near, u_near, session, &settings, &metrics, &tally, None),
        peers(c_far, u_far)
    );
    Ended {
        reason,
        elapsed: started.elapsed(),
    }
}

/// Reads one frame: (opcode, unmasked payload); `None` at the end.
async fn read_frame(s: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if let Ok(Some(h)) = frame::parse(&buf) {
            let mut body = vec![0u8; h.payload_len as usize];
            s.read_exact(&mut body).await.ok()?;
            if let Some(m) = h.mask {
                frame::unmask(&mut body, m, 0);
            }
            return Some((h.opcode, body));
        }
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        buf.push(b[0]);
    }
}

/// Reads frames until a close; returns its code and every frame before it.
async fn until_close(s: &mut DuplexStream) -> (Option<u16>, Vec<(u8, Vec<u8>)>) {
    let mut before = Vec::new();
    while let Some((op, p)) = read_frame(s).await {
        if op == OP_CLOSE {
            return (frame::parse_close(&p).ok().map(|f| f.code), before);
        }
        before.push((op, p));
    }
    (None, before)
}

#[tokio::test(start_paused = true)]
async fn expiry_closes_no_earlier_than_exp() {
    let exp = T0_MS / 1000 + 90;
    let s = &session(Some(exp));
    let ended = pump_with(settings(), s, |mut c, mut u| async move {
        assert_eq!(until_close(&mut c).await.0, Some(4401));
        assert_eq!(until_close(&mut u).await.0, Some(1001));
    })
    .await;
    assert_eq!(ended.reason, CloseReason::Expired);
    assert!(
        ended.elapsed >= Duration::from_secs(90),
        "{:?}",
        ended.elapsed
    );
    assert!(
        ended.elapsed < Duration::from_secs(92),
        "{:?}",
        ended.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_moves_the_expiry() {
    let s = &session(Some(T0_MS / 1000 + 10));
    let ended = pump_with(settings(), s, |mut c, u| async move {
        // The upstream stays connected (and silent) throughout.
        let _upstream = u;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let exp = T0_MS / 1000 + 60;
        s.refresh(Arc::new(token(exp)), Some(exp));
        assert_eq!(until_close(&mut c).await.0, Some(4401));
    })
    .await;
    assert_eq!(ended.reason, CloseReason::Expired);
    assert!(
        ended.elapsed >= Duration::from_secs(60),
        "{:?}",
        ended.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn idle_counts_every_frame_pings_included() {
    let mut st = settings();
    st.idle_timeout = Some(Duration::from_secs(30));
    let s = &session(None);
    let ended = pump_with(st, s, |mut c, mut u| async move {
        // A client that only pings, every 3 s, for a minute: never idle.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.write_all(&encode(OP_PING, b"hi", MASK))
                .await
                .expect("ping");
            assert_eq!(read_frame(&mut u).await.map(|f| f.0), Some(OP_PING));
        }
        // Then silence: idle after 30 s.
        assert_eq!(until_close(&mut c).await.0, Some(1001));
    })
    .await;
    assert_eq!(ended.reason, CloseReason::Idle);
    assert!(
        ended.elapsed >= Duration::from_secs(90),
        "{:?}",
        ended.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn an_answering_peer_survives_keepalive_and_its_pongs_stay_with_the_gateway() {
    let mut st = settings();
    st.ping_interval = Some(Duration::from_secs(30));
    st.idle_timeout = Some(Duration::from_secs(100));
    let s = &session(None);
    let pongs_to_upstream = &AtomicU64::new(0);
    let ended = pump_with(st, s, |mut c, mut u| async move {
        // Both legs answer every ping; the session ends idle after 100 s
        // all the same (the keepalive pongs do not count as traffic).
        let client = async {
            let mut pings = 0;
            while let Some((op, p)) = read_frame(&mut c).await {
                match op {
                    OP_PING => {
                        pings += 1;
                        c.write_all(&encode(OP_PONG, &p, MASK)).await.expect("pong");
                    }
                    OP_CLOSE => break,
                    _ => {}
                }
            }
            pings
        };
        let upstream = async {
            while let Some((op, p)) = read_frame(&mut u).await {
                match op {
                    OP_PING => u.write_all(&encode(OP_PONG, &p, None)).await.expect("pong"),
                    OP_PONG => {
                        pongs_to_upstream.fetch_add(1, Ordering::Relaxed);
                    }
                    OP_CLOSE => break,
                    _ => {}
                }
            }
        };
        let (pings, ()) = tokio::join!(client, upstream);
        assert!(pings >= 3, "{pings} pings");
    })
    .await;
    assert_eq!(ended.reason, CloseReason::Idle);
    assert_eq!(pongs_to_upstream.load(Ordering::Relaxed), 0);
}

/// One leg stops answering pings while the other answers them: the pump
/// keeps both legs alive the same way, so either is found out alike.
async fn a_silent_leg_is_unresponsive(silent: Side) {
    let mut st = settings();
    st.ping_interval = Some(Duration::from_secs(30));
    st.ping_timeout = Duration::from_secs(10);
    let s = &session(None);
    let ended = pump_with(st, s, |c, u| async move {
        // Client frames are masked, upstream frames are not. The client is
        // told why the session ends; the upstream is told it goes away.
        let (mut answering, mut quiet, mask) = match silent {
            Side::Client => (u, c, None),
            Side::Upstream => (c, u, MASK),
        };
        let (answering_close, quiet_close) = match silent {
            Side::Client => ((1001, ""), 1011),
            Side::Upstream => ((1011, "peer unresponsive"), 1001),
        };
        let answering = async {
            while let Some((op, p)) = read_frame(&mut answering).await {
                match op {
                    OP_PING => answering
                        .write_all(&encode(OP_PONG, &p, mask))
                        .await
                        .expect("pong"),
                    OP_CLOSE => {
                        let close = frame::parse_close(&p).expect("a valid close");
                        assert_eq!((close.code, close.reason.as_str()), answering_close);
                        break;
                    }
                    _ => {}
                }
            }
        };
        let quiet = async {
            // Reads (so the close can arrive) but never answers a ping.
            let (code, before) = until_close(&mut quiet).await;
            assert_eq!(code, Some(quiet_close));
            assert_eq!(before.iter().filter(|f| f.0 == OP_PING).count(), 1);
        };
        tokio::join!(answering, quiet);
    })
    .await;
    assert_eq!(ended.reason, CloseReason::Unresponsive, "{silent:?}");
    // Pinged at 30 s, given up at 40 s, then at most the close wait.
    assert!(
        ended.elapsed >= Duration::from_secs(40),
        "{silent:?}: {:?}",
        ended.elapsed
    );
    assert!(
        ended.elapsed <= Duration::from_secs(40) + CLOSE_HANDSHAKE_WAIT,
        "{silent:?}: {:?}",
        ended.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_is_unresponsive() {
    a_silent_leg_is_unresponsive(Side::Client).await;
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_never_answers_is_unresponsive() {
    a_silent_leg_is_unresponsive(Side::Upstream).await;
}

#[tokio::test(start_paused = true)]
async fn a_kill_ends_the_session_with_its_reason() {
    let s = &session(None);
    let ended = pump_with(settings(), s, |mut c, mut u| async move {
        c.write_all(&encode(OP_TEXT, b"x", MASK))
            .await
            .expect("send");
        assert_eq!(read_frame(&mut u).await.map(|f| f.0), Some(OP_TEXT));
        s.close(CloseReason::Terminated);
        assert_eq!(until_close(&mut c).await.0, Some(4403));
        // The client answers: its connection ends at once.
        c.write_all(&frame::close(4403, "", MASK))
            .await
            .expect("answer");
        assert_eq!(until_close(&mut u).await.0, Some(1001));
    })
    .await;
    assert_eq!(ended.reason, CloseReason::Terminated);
}
