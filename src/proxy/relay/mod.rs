//! The byte relay under the pump: frames pass through unchanged, as bytes.
//!
//! After the handshake both legs already speak the right dialect for each
//! other: client frames arrive masked and the upstream (to which wsgate is a
//! client) expects masked frames; upstream frames arrive unmasked and the
//! client expects exactly that. So the relay copies bytes and reads only frame
//! headers, which is what it needs to
//!
//! - refuse protocol violations (unmasked client frames, reserved bits,
//!   unknown opcodes, bad fragmentation) before they reach the upstream,
//! - enforce `max_message_size` before the first byte of an oversized frame
//!   is passed on,
//! - see close frames (and pass them on), and
//! - inject frames of its own between two frames, never inside one: a close
//!   between any two frames, a message (a refresh answer) only between two
//!   messages, never between the fragments of one, and
//! - take client text messages that are the gateway's (refresh), fragmented
//!   or not, up to `MAX_INTERCEPTED`.
//!
//! Each read goes into a per-thread scratch buffer and is written out at once;
//! only what the other side cannot take yet is copied into the session's own
//! buffer. An idle session therefore holds no buffer at all, and a slow reader
//! holds back its writer (one read's worth, never more).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{self, OP_PING, OP_TEXT};
use crate::metrics::Direction;
use crate::session::{CloseFrame, Side};
use scan::Dir;

mod intercept;
mod scan;
mod tally;

pub use intercept::Interceptor;
pub use tally::{Accounting, Activity, Tally};

/// One read's worth: large enough for a TLS record burst or a 16 KiB message.
const SCRATCH: usize = 32 * 1024;
/// Client text frames up to this size are looked at for in-band refresh.
const MAX_INTERCEPTED: u64 = 32 * 1024;
/// Frames up to this size are passed on only once complete, so a side that
/// dies mid-frame never leaves a torn frame at the other (which then gets a
/// clean close instead). Larger frames stream through as they arrive.
const HOLD_INCOMPLETE: u64 = 64 * 1024;
/// Reads per direction per poll before yielding to other tasks.
const READS_PER_POLL: usize = 16;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Why the relay stopped (or what it needs the pump to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Both sides sent close frames (each passed on unchanged); the first
    /// closer and its frame.
    Closed {
        by: Side,
        frame: CloseFrame,
    },
    ClientLost,
    UpstreamLost,
    TooBig,
    ClientProtocol,
    UpstreamProtocol,
    /// A client text frame the interceptor wants (already taken out).
    Intercepted(String),
}

/// Both legs of a session and the state of each direction.
pub struct Relay<'a, C, U> {
    client: C,
    upstream: U,
    c2u: Dir,
    u2c: Dir,
    max_message: u64,
    interceptor: Option<&'a dyn Interceptor>,
    acct: Accounting<'a>,
    /// Which side sent the first close frame.
    first_closer: Option<Side>,
    /// The payload of the gateway's keepalive pings, random per session so
    /// a peer's own pongs are not mistaken for answers to them.
    ping_payload: [u8; 8],
}

impl<'a, C, U> Relay<'a, C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(
        client: C,
        upstream: U,
        max_message: u64,
        interceptor: Option<&'a dyn Interceptor>,
        acct: Accounting<'a>,
    ) -> Self {
        Self {
            client,
            upstream,
            c2u: Dir::new(true),
            u2c: Dir::new(false),
            max_message,
            interceptor,
            acct,
            first_closer: None,
            ping_payload: rand::random(),
        }
    }

    /// Lets compressed messages (RSV1) through both ways: `permessage-deflate`
    /// was agreed end to end.
    pub fn with_deflate(mut self, on: bool) -> Self {
        self.c2u.deflate = on;
        self.u2c.deflate = on;
        self
    }

    /// The first close frame seen, if any, and who sent it.
    pub fn first_close(&self) -> Option<(Side, CloseFrame)> {
        let by = self.first_closer?;
        let seen = match by {
            Side::Client => &self.c2u.close_seen,
            Side::Upstream => &self.u2c.close_seen,
        };
        seen.clone().map(|frame| (by, frame))
    }

    /// Pings `side` (keepalive), between frames. Its pong, matched by
    /// payload, is taken out rather than passed on.
    pub fn send_ping(&mut self, side: Side) {
        let (to, from, mask) = match side {
            Side::Client => (&mut self.u2c, &mut self.c2u, None),
            Side::Upstream => (&mut self.c2u, &mut self.u2c, Some(frame::random_mask())),
        };
        to.inject
            .extend_from_slice(&frame::encode(OP_PING, &self.ping_payload, mask));
        from.await_pong = Some(self.ping_payload);
    }

    /// Stops reading `side`: it was asked to close and did not answer in
    /// time, so [`Self::finish`] waits for nothing more from it.
    pub fn give_up_on(&mut self, side: Side) {
        match side {
            Side::Client => self.c2u.stopped = true,
            Side::Upstream => self.u2c.stopped = true,
        }
    }

    /// A text message from the gateway to the client, sent between two
    /// messages of the upstream's.
    pub fn send_to_client(&mut self, text: &str) {
        let f = frame::encode(OP_TEXT, text.as_bytes(), None);
        self.u2c.inject_msg.extend_from_slice(&f);
    }

    /// Relays until something ends the session or needs the pump.
    pub async fn run(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_relay(cx)).await
    }

    /// Drives both directions; only the client's frames may be intercepted.
    fn poll_dirs(
        &mut self,
        cx: &mut Context<'_>,
        interceptor: Option<&dyn Interceptor>,
    ) -> (Poll<()>, Poll<()>) {
        let Self {
            client,
            upstream,
            c2u,
            u2c,
            max_message,
            ..
        } = self;
        (
            poll_dir(cx, c2u, client, upstream, *max_message, interceptor),
            poll_dir(cx, u2c, upstream, client, *max_message, None),
        )
    }

    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let (a, b) = self.poll_dirs(cx, self.interceptor);
        self.account();
        if self.first_closer.is_none() {
            if self.c2u.close_seen.is_some() {
                self.first_closer = Some(Side::Client);
            } else if self.u2c.close_seen.is_some() {
                self.first_closer = Some(Side::Upstream);
            }
        }
        if let Some(ev) = self.c2u.event.take().or_else(|| self.u2c.event.take()) {
            // A side that broke the protocol or vanished is failed (RFC 6455
            // §7.1.7): nothing more is read from it and it owes no close
            // reply, so `finish` closes its connection as soon as the
            // gateway's close frame is out, without waiting for the other side.
            match ev {
                Event::ClientProtocol | Event::ClientLost => self.c2u.stopped = true,
                Event::UpstreamProtocol | Event::UpstreamLost => self.u2c.stopped = true,
                Event::Closed { .. } | Event::TooBig | Event::Intercepted(_) => {}
            }
            return Poll::Ready(ev);
        }
        if a.is_ready() || b.is_ready() {
            // poll_dir is Ready only with an event, taken above.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let done = |d: &Dir| d.close_seen.is_some() && d.out.is_empty() && !d.needs_flush;
        if done(&self.c2u) && done(&self.u2c) {
            if let Some((by, frame)) = self.first_close() {
                return Poll::Ready(Event::Closed { by, frame });
            }
        }
        Poll::Pending
    }

    /// Moves the per-read counts into metrics and the session tally.
    fn account(&mut self) {
        for (d, dir) in [
            (&mut self.c2u, Direction::to_upstream),
            (&mut self.u2c, Direction::to_client),
        ] {
            if d.msgs > 0 || d.bytes > 0 {
                self.acct.metrics.relayed_many(dir, d.msgs, d.bytes);
                self.acct.tally.add_many(dir, d.msgs, d.bytes);
                d.msgs = 0;
                d.bytes = 0;
            }
            if d.seen || d.active {
                let now = self.acct.start.elapsed().as_millis() as u64;
                let from = if d.from_client {
                    Side::Client
                } else {
                    Side::Upstream
                };
                if d.seen {
                    self.acct
                        .activity
                        .heard_from(from)
                        .store(now, Ordering::Relaxed);
                }
                if d.active {
                    self.acct.activity.relayed.store(now, Ordering::Relaxed);
                }
                d.seen = false;
                d.active = false;
            }
        }
    }

    /// Ends the session: each side that has not had a close frame from the
    /// gateway gets one (`to_client` / `to_upstream`; `None` = that side is
    /// gone), between frames; then both close handshakes may complete. Each
    /// side's connection is shut down as soon as its handshake is complete
    /// (or nothing is owed either way), all within `wait`: the caller drops
    /// both connections afterwards, whatever is left.
    pub async fn finish(
        &mut self,
        to_client: Option<CloseFrame>,
        to_upstream: Option<CloseFrame>,
        wait: std::time::Duration,
    ) {
        for (d, spec, mask) in [
            (&mut self.u2c, to_client, false),
            (&mut self.c2u, to_upstream, true),
        ] {
            // The side this direction reads is answered (or gone): its
            // frames are no longer passed on, only read for its close. A
            // reader that failed (lost, oversized, protocol) is not read again.
            let broken = d.event.take().is_some();
            d.discard = true;
            // Fragments held for the interceptor were never passed on.
            d.assembly = None;
            // A message of the gateway's goes out before the close if the
            // direction is between two messages now; otherwise never.
            if d.at_frame_boundary() && !d.in_message {
                let msgs = std::mem::take(&mut d.inject_msg);
                d.inject.extend_from_slice(&msgs);
            }
            d.inject_msg = Vec::new();
            d.stopped = d.stopped || broken || d.close_seen.is_some();
            if d.stopped {
                // Its reader is done: a frame it left half-read is dropped
                // (held ones were never passed on) ...
                d.held = None;
                if d.remaining > 0 {
                    // ... unless part of it already went out: then no close
                    // frame can follow on that connection.
                    d.inject.clear();
                    continue;
                }
            }
            match spec {
                Some(f) if !d.close_sent => {
                    let m = mask.then(frame::random_mask);
                    d.inject
                        .extend_from_slice(&frame::close(f.code, &f.reason, m));
                    d.close_sent = true;
                }
                _ => {}
            }
        }
        let mut shut = [false; 2];
        let _ = tokio::time::timeout(
            wait,
            std::future::poll_fn(|cx| self.poll_finish(cx, &mut shut)),
        )
        .await;
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>, shut: &mut [bool; 2]) -> Poll<()> {
        // A frame in flight toward a side is completed before its close goes
        // out; then each side is read (and discarded) until its close reply.
        let _ = self.poll_dirs(cx, None);
        // A side is done once everything owed to it is written and it has
        // nothing more to say: its close arrived, its reader ended, or it was
        // never sent a close (so it owes no answer).
        let done = |to: &Dir, from: &Dir| {
            to.inject.is_empty()
                && to.out.is_empty()
                && !to.needs_flush
                && (from.close_seen.is_some()
                    || from.stopped
                    || from.event.is_some()
                    || !to.close_sent)
        };
        let client_done = done(&self.u2c, &self.c2u);
        let upstream_done = done(&self.c2u, &self.u2c);
        // Shut each side down as soon as it is done, not when both are:
        // a client waiting for the TCP close after its close frame must not
        // wait for the upstream's answer.
        if client_done && !shut[0] {
            shut[0] = Pin::new(&mut self.client).poll_shutdown(cx).is_ready();
        }
        if upstream_done && !shut[1] {
            shut[1] = Pin::new(&mut self.upstream).poll_shutdown(cx).is_ready();
        }
        if shut[0] && shut[1] {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Drives one direction as far as it can go without blocking. `Ready`
/// means `d.event` was set.
fn poll_dir<R, W>(
    cx: &mut Context<'_>,
    d: &mut Dir,
    reader: &mut R,
    writer: &mut W,
    max_message: u64,
    interceptor: Option<&dyn Interceptor>,
) -> Poll<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let lost = |d: &Dir| {
        if d.from_client {
            Event::UpstreamLost
        } else {
            Event::ClientLost
        }
    };
    for _ in 0..READS_PER_POLL {
        if d.event.is_some() {
            return Poll::Ready(());
        }
        // 1. What is owed to the writer goes first.
        while d.out_pos < d.out.len() {
            match Pin::new(&mut *writer).poll_write(cx, &d.out[d.out_pos..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    d.event = Some(lost(d));
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => d.out_pos += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if !d.out.is_empty() {
            // Keep a small buffer for the next burst; give a large one back.
            if d.out.capacity() > SCRATCH {
                d.out = Vec::new();
            } else {
                d.out.clear();
            }
            d.out_pos = 0;
            d.needs_flush = true;
        }
        if d.needs_flush {
            match Pin::new(&mut *writer).poll_flush(cx) {
                Poll::Ready(Ok(())) => d.needs_flush = false,
                Poll::Ready(Err(_)) => {
                    d.event = Some(lost(d));
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        // 2. Input left over from an interception.
        if !d.backlog.is_empty() {
            let backlog = std::mem::take(&mut d.backlog);
            let direct = d.scan(&backlog, max_message, interceptor);
            d.out.extend_from_slice(&backlog[..direct]);
            continue;
        }
        // Frames of the gateway's own go out at once when no frame is in
        // flight (the scan places them when one completes).
        if d.injects_ready() {
            if !d.in_message {
                let msgs = std::mem::take(&mut d.inject_msg);
                d.out.extend_from_slice(&msgs);
            }
            let frames = std::mem::take(&mut d.inject);
            d.out.extend_from_slice(&frames);
            continue;
        }
        if d.stopped {
            return Poll::Pending;
        }
        // 3. Read, scan, and write straight from the scratch buffer.
        let step = SCRATCH_BUF.with(|cell| {
            let Ok(mut scratch) = cell.try_borrow_mut() else {
                return Step::Yield;
            };
            let mut rb = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Pending => return Step::Pending,
                Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Step::Eof,
                Poll::Ready(Err(_)) => return Step::Pending,
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Step::Eof;
            }
            let input = &scratch[..n];
            let direct = d.scan(input, max_message, interceptor);
            let mut written = 0;
            while written < direct {
                match Pin::new(&mut *writer).poll_write(cx, &input[written..direct]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Step::WriteLost,
                    Poll::Ready(Ok(k)) => written += k,
                    Poll::Pending => break,
                }
            }
            if written < direct {
                // Whatever the writer could not take waits in the session's
                // own buffer, ahead of anything scanned into `out`.
                let mut rest = input[written..direct].to_vec();
                rest.append(&mut d.out);
                d.out = rest;
            } else if direct > 0 {
                d.needs_flush = true;
            }
            Step::Progress
        });
        match step {
            Step::Progress => {}
            Step::Pending => return Poll::Pending,
            Step::Yield => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Step::WriteLost => {
                d.event = Some(lost(d));
                return Poll::Ready(());
            }
            Step::Eof => {
                d.stopped = true;
                if d.close_seen.is_none() && d.event.is_none() {
                    d.event = Some(if d.from_client {
                        Event::ClientLost
                    } else {
                        Event::UpstreamLost
                    });
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
        }
    }
    // Out of budget for this poll: let other sessions run, come back soon.
    cx.waker().wake_by_ref();
    Poll::Pending
}

enum Step {
    Progress,
    Pending,
    Yield,
    Eof,
    WriteLost,
}

#[cfg(test)]
mod tests;
