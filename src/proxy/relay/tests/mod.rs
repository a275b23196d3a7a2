//! The relay against in-memory pipes: what each side receives, byte for byte.
//! Close frames and ending are in `closes`, the gateway's own messages and
//! interception in `messages`.

use std::time::Duration;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::*;
use crate::metrics::{Metrics, SessionMetrics};
use crate::proxy::frame::{close, encode, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING};
use crate::session::CloseReason;

const MASK: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

struct Fixture {
    metrics: SessionMetrics,
    tally: Tally,
    activity: Activity,
}

impl Fixture {
    fn new() -> Self {
        Self {
            metrics: Metrics::new().for_session("t"),
            tally: Tally::default(),
            activity: Activity::default(),
        }
    }

    /// A relay between two pipes; returns it with the far ends (client, upstream).
    fn relay<'a>(
        &'a self,
        max: u64,
        icpt: Option<&'a dyn Interceptor>,
    ) -> (
        Relay<'a, DuplexStream, DuplexStream>,
        DuplexStream,
        DuplexStream,
    ) {
        let (c_near, c_far) = duplex(1 << 20);
        let (u_near, u_far) = duplex(1 << 20);
        let acct = Accounting {
            metrics: &self.metrics,
            tally: &self.tally,
            activity: &self.activity,
            start: Instant::now(),
        };
        (Relay::new(c_near, u_near, max, icpt, acct), c_far, u_far)
    }
}

async fn read_exactly(s: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("bytes arrive")
        .expect("read");
    buf
}

/// Runs the relay until `until` resolves (the relay itself never ends on
/// data alone).
async fn drive<F: std::future::Future>(
    relay: &mut Relay<'_, DuplexStream, DuplexStream>,
    until: F,
) -> F::Output {
    tokio::select! {
        ev = relay.run() => panic!("relay stopped early: {ev:?}"),
        out = until => out,
    }
}

#[tokio::test]
async fn frames_pass_unchanged_both_ways() {
    let fx = Fixture::new();
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, None);
    let mut from_client = Vec::new();
    from_client.extend_from_slice(&encode(OP_TEXT, b"hello", MASK));
    // A fragmented binary message with a ping between its fragments.
    let mut first = encode(OP_BINARY, b"ab", MASK);
    first[0] &= 0x7F; // not final
    from_client.extend_from_slice(&first);
    from_client.extend_from_slice(&encode(OP_PING, b"p", MASK));
    from_client.extend_from_slice(&encode(OP_CONTINUATION, b"cd", MASK));
    let from_upstream = encode(OP_BINARY, &[7u8; 70_000], None);
    client.write_all(&from_client).await.unwrap();
    upstream.write_all(&from_upstream).await.unwrap();
    let (up, down) = drive(&mut relay, async {
        let up = read_exactly(&mut upstream, from_client.len()).await;
        let down = read_exactly(&mut client, from_upstream.len()).await;
        (up, down)
    })
    .await;
    assert_eq!(up, from_client);
    assert_eq!(&down[..], &from_upstream[..]);
    relay.account();
    let [msgs_up, bytes_up, msgs_down, bytes_down] = fx.tally.snapshot();
    assert_eq!((msgs_up, bytes_up), (2, 9));
    assert_eq!((msgs_down, bytes_down), (1, 70_000));
}

#[tokio::test]
async fn close_handshake_passes_end_to_end() {
    let fx = Fixture::new();
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, None);
    let c_close = close(4000, "bye", MASK);
    let u_close = close(4000, "bye", None);
    client.write_all(&c_close).await.unwrap();
    let got = drive(&mut relay, read_exactly(&mut upstream, c_close.len())).await;
    assert_eq!(got, &c_close[..]);
    upstream.write_all(&u_close).await.unwrap();
    let ev = relay.run().await;
    assert_eq!(
        ev,
        Event::Closed {
            by: Side::Client,
            frame: CloseFrame::new(4000, "bye")
        }
    );
    assert_eq!(read_exactly(&mut client, u_close.len()).await, &u_close[..]);
}

#[tokio::test]
async fn oversized_message_never_reaches_the_upstream() {
    let fx = Fixture::new();
    let (mut relay, mut client, mut upstream) = fx.relay(100, None);
    let small = encode(OP_TEXT, b"ok", MASK);
    client.write_all(&small).await.unwrap();
    client
        .write_all(&encode(OP_BINARY, &[1u8; 101], MASK))
        .await
        .unwrap();
    assert_eq!(relay.run().await, Event::TooBig);
    relay
        .finish(
            Some(CloseFrame::new(1009, "message too big")),
            Some(CloseFrame::new(1001, "")),
            Duration::from_millis(200),
        )
        .await;
    drop(relay);
    let mut got = Vec::new();
    upstream.read_to_end(&mut got).await.unwrap();
    // The small message, then the gateway's close: nothing of the big one.
    assert_eq!(&got[..small.len()], &small[..]);
    let h = frame::parse(&got[small.len()..]).unwrap().unwrap();
    assert_eq!(h.opcode, OP_CLOSE);
    assert!(h.mask.is_some(), "frames to the upstream are masked");
    let mut to_client = Vec::new();
    client.read_to_end(&mut to_client).await.unwrap();
    assert_eq!(&to_client[..], &close(1009, "message too big", None)[..]);
}

#[tokio::test]
async fn unmasked_client_frame_is_a_protocol_error() {
    let fx = Fixture::new();
    let (mut relay, mut client, _upstream) = fx.relay(1 << 20, None);
    client
        .write_all(&encode(OP_TEXT, b"x", None))
        .await
        .unwrap();
    assert_eq!(relay.run().await, Event::ClientProtocol);
}

#[tokio::test]
async fn close_waits_for_the_frame_in_flight() {
    let fx = Fixture::new();
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 30, None);
    // A large frame streams; only part of it has arrived when the session ends.
    let big = encode(OP_BINARY, &vec![9u8; 200_000], None);
    upstream.write_all(&big[..100_000]).await.unwrap();
    drive(&mut relay, async {
        read_exactly(&mut client, 50_000).await
    })
    .await;
    let rest = big[100_000..].to_vec();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        upstream.write_all(&rest).await.unwrap();
        upstream
    });
    relay
        .finish(
            Some(CloseFrame::new(4401, "token expired")),
            Some(CloseFrame::new(1001, "")),
            Duration::from_millis(500),
        )
        .await;
    let _upstream = writer.await.unwrap();
    drop(relay);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    let expected_close = close(4401, "token expired", None);
    assert_eq!(got.len(), big.len() - 50_000 + expected_close.len());
    assert_eq!(
        &got[got.len() - expected_close.len()..],
        &expected_close[..]
    );
}

#[tokio::test]
async fn upstream_dying_mid_frame_leaves_no_torn_frame() {
    let fx = Fixture::new();
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, None);
    let f = encode(OP_BINARY, &[5u8; 1000], None);
    upstream.write_all(&f[..400]).await.unwrap();
    drop(upstream);
    assert_eq!(relay.run().await, Event::UpstreamLost);
    relay
        .finish(
            Some(CloseFrame::new(1014, "upstream connection lost")),
            None,
            Duration::from_millis(200),
        )
        .await;
    drop(relay);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(&got[..], &close(1014, "upstream connection lost", None)[..]);
}

struct Echoer;

impl Interceptor for Echoer {
    fn wants(&self, text: &str) -> bool {
        text.contains("gw:")
    }
    fn answer<'a>(
        &'a self,
        text: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>> {
        Box::pin(async move { format!("answered {text}") })
    }
}

#[tokio::test]
async fn intercepted_frames_are_answered_not_forwarded() {
    let fx = Fixture::new();
    let icpt = Echoer;
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, Some(&icpt));
    let before = encode(OP_TEXT, b"app1", MASK);
    let after = encode(OP_TEXT, b"app2", MASK);
    let mut burst = before.to_vec();
    burst.extend_from_slice(&encode(OP_TEXT, b"gw:refresh", MASK));
    burst.extend_from_slice(&after);
    client.write_all(&burst).await.unwrap();
    let ev = relay.run().await;
    let Event::Intercepted(text) = ev else {
        panic!("expected an interception, got {ev:?}");
    };
    let answer = icpt.answer(text).await;
    relay.send_to_client(&answer);
    let (up, down) = drive(&mut relay, async {
        let up = read_exactly(&mut upstream, before.len() + after.len()).await;
        let reply = encode(OP_TEXT, b"answered gw:refresh", None);
        let down = read_exactly(&mut client, reply.len()).await;
        (up, (down, reply))
    })
    .await;
    let mut expected = before.to_vec();
    expected.extend_from_slice(&after);
    assert_eq!(up, expected);
    assert_eq!(&down.0[..], &down.1[..]);
}

/// A small deterministic generator: these tests must not depend on a seed
/// that changes between runs.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Feeds `input` to one direction's scanner in the given chunk sizes and
/// returns what it passes on.
fn scan_in_chunks(dir: &mut Dir, input: &[u8], cuts: &[usize], max: u64) -> Vec<u8> {
    scan_in_chunks_with(dir, input, cuts, max, None)
}

/// [`scan_in_chunks`] with an interceptor; stops at the first event (the
/// scanner reads nothing more after one).
fn scan_in_chunks_with(
    dir: &mut Dir,
    input: &[u8],
    cuts: &[usize],
    max: u64,
    icpt: Option<&dyn Interceptor>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = cut.clamp(start, input.len());
        let chunk = &input[start..end];
        let direct = dir.scan(chunk, max, icpt);
        out.extend_from_slice(&chunk[..direct]);
        out.append(&mut dir.out);
        start = end;
        if dir.event.is_some() {
            break;
        }
    }
    out
}

#[test]
fn valid_frame_streams_pass_unchanged_however_they_are_split() {
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for round in 0..2_000 {
        let mut input = Vec::new();
        let frames = 1 + next(&mut state) % 6;
        for _ in 0..frames {
            let len = match next(&mut state) % 4 {
                0 => next(&mut state) % 126,
                1 => 126 + next(&mut state) % 1000,
                2 => 65_536 + next(&mut state) % 2000,
                _ => next(&mut state) % 10,
            } as usize;
            let payload: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            let op = if next(&mut state) % 2 == 0 {
                OP_TEXT
            } else {
                OP_BINARY
            };
            input.extend_from_slice(&encode(
                op,
                &payload,
                Some((next(&mut state) as u32).to_be_bytes()),
            ));
        }
        let mut cuts: Vec<usize> = (0..next(&mut state) % 8)
            .map(|_| (next(&mut state) as usize) % (input.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut dir = Dir::new(true);
        let got = scan_in_chunks(&mut dir, &input, &cuts, u64::MAX);
        assert!(dir.event.is_none(), "round {round}: {:?}", dir.event);
        assert_eq!(got.len(), input.len(), "round {round}");
        assert!(got == input, "round {round}: bytes changed");
    }
}

/// A random frame stream that is mostly valid: data frames of every
/// length form, fragments, control frames, RSV1, now and then a frame
/// that breaks a rule (a wrong mask, an unknown opcode, a stray
/// continuation).
fn mixed_stream(state: &mut u64, from_client: bool) -> Vec<u8> {
    let mut input = Vec::new();
    for _ in 0..1 + next(state) % 8 {
        let len = match next(state) % 6 {
            0 | 1 => next(state) % 126,
            2 => 126 + next(state) % 700,
            3 if next(state) % 4 == 0 => 65_536 + next(state) % 100,
            _ => next(state) % 12,
        } as usize;
        let roll = next(state) % 20;
        let op = match roll {
            0..=6 => OP_TEXT,
            7..=12 => OP_BINARY,
            13..=15 => OP_CONTINUATION,
            16 => OP_PING,
            17 => super::frame::OP_PONG,
            18 => OP_CLOSE,
            _ => 3,
        };
        let control = op & 0x8 != 0;
        let len = if control { len.min(125) } else { len };
        let mut payload: Vec<u8> = (0..len).map(|_| next(state) as u8).collect();
        if op == OP_TEXT && next(state) % 5 == 0 {
            payload = b"{\"type\":\"gw:x\"}".to_vec();
        }
        if op == OP_CLOSE {
            payload = vec![0x03, 0xE8];
        }
        let masked = from_client != (next(state) % 40 == 0);
        let mask = masked.then(|| (next(state) as u32).to_be_bytes());
        let mut frame = encode(op, &payload, mask).to_vec();
        if !control && next(state) % 3 == 0 {
            frame[0] &= 0x7F; // not the last fragment
        }
        if next(state) % 10 == 0 {
            frame[0] |= 0x40; // RSV1
        }
        input.extend_from_slice(&frame);
    }
    input
}

/// The plain-frame loop is a shortcut through the general path: on any
/// stream, cut anywhere, in either direction, with or without
/// compression and an interceptor, both must pass on the same bytes and
/// end in the same state.
#[test]
fn the_plain_frame_loop_decides_as_the_general_path() {
    let echoer = Echoer;
    let mut state = 0x2545_F491_4F6C_DD1D;
    for round in 0..4_000 {
        let from_client = next(&mut state) % 2 == 0;
        let input = mixed_stream(&mut state, from_client);
        let mut cuts: Vec<usize> = (0..next(&mut state) % 6)
            .map(|_| (next(&mut state) as usize) % (input.len() + 1))
            .collect();
        cuts.sort_unstable();
        let deflate = next(&mut state) % 3 == 0;
        let icpt: Option<&dyn Interceptor> = (next(&mut state) % 2 == 0).then_some(&echoer as _);
        let max = if next(&mut state) % 4 == 0 {
            200
        } else {
            u64::MAX
        };
        let run = |general_only: bool| {
            let mut dir = Dir::new(from_client);
            dir.deflate = deflate;
            dir.general_only = general_only;
            let out = scan_in_chunks_with(&mut dir, &input, &cuts, max, icpt);
            let state = (
                dir.event.clone(),
                (dir.msgs, dir.bytes, dir.message_len, dir.remaining),
                (dir.in_message, dir.seen, dir.active, dir.passing),
                (dir.held.is_some(), dir.partial_len, dir.backlog.clone()),
            );
            (out, state)
        };
        let (fast_out, fast_state) = run(false);
        let (general_out, general_state) = run(true);
        assert!(fast_out == general_out, "round {round}: bytes differ");
        assert_eq!(fast_state, general_state, "round {round}");
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_scanner() {
    let mut state = 0xD1B5_4A32_D192_ED03;
    for _ in 0..5_000 {
        let len = (next(&mut state) % 300) as usize;
        let input: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
        let cuts = [len / 3, len / 2];
        for from_client in [true, false] {
            let mut dir = Dir::new(from_client);
            let got = scan_in_chunks(&mut dir, &input, &cuts, 1000);
            // Whatever happens, nothing is invented.
            assert!(got.len() <= input.len());
        }
    }
}

mod closes;
mod messages;
