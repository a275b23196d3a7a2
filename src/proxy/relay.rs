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
//! - inject frames of its own (a close, a refresh answer) between two frames,
//!   never inside one.
//!
//! Each read goes into a per-thread scratch buffer and is written out at once;
//! only what the other side cannot take yet is copied into the session's own
//! buffer. An idle session therefore holds no buffer at all, and a slow reader
//! holds back its writer (one read's worth, never more).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::frame::{self, Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT};
use super::pump::{Interceptor, Tally};
use crate::metrics::{Direction, SessionMetrics};

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
    /// closer and its code. Also returned when only the first closer has.
    Closed {
        by_client: bool,
        code: u16,
        reason: String,
    },
    ClientLost,
    UpstreamLost,
    TooBig,
    ClientProtocol,
    UpstreamProtocol,
    /// A client text frame the interceptor wants (already taken out).
    Intercepted(String),
}

/// A frame held back until complete: a close, a possible refresh, or a
/// small frame split across reads.
struct Held {
    kind: HeldKind,
    header: Header,
    total: usize,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HeldKind {
    Close,
    Candidate,
    Data,
}

/// One direction: reads one side, writes the other.
#[derive(Default)]
struct Dir {
    from_client: bool,
    /// Header bytes split across reads, not yet passed on.
    partial: [u8; frame::MAX_HEADER],
    partial_len: usize,
    /// Payload bytes of the frame in flight still to pass on (or skip).
    remaining: u64,
    /// Whether the frame in flight is passed on (false while discarding).
    passing: bool,
    in_message: bool,
    message_len: u64,
    held: Option<Held>,
    /// Bytes waiting for the writer, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    needs_flush: bool,
    /// Frames of the gateway's own, emitted at the next frame boundary.
    inject: Vec<u8>,
    /// Input left after an intercepted frame, scanned before reading again.
    backlog: Vec<u8>,
    /// The reading side's close frame (code, reason), once seen.
    close_seen: Option<(u16, String)>,
    /// A close frame went out to the writing side.
    close_sent: bool,
    /// Read nothing more (closed, lost or ending).
    stopped: bool,
    /// Discard frames instead of passing them on (waiting for a close reply).
    discard: bool,
    event: Option<Event>,
    msgs: u64,
    bytes: u64,
}

/// Where forwarded bytes go during one scan: straight from the input (the
/// common case, no copy) or, once anything is skipped or added, into `out`.
struct Emit {
    fast_end: usize,
    slow: bool,
}

impl Dir {
    fn new(from_client: bool) -> Self {
        Self {
            from_client,
            ..Self::default()
        }
    }

    fn pass(&mut self, input: &[u8], range: std::ops::Range<usize>, e: &mut Emit) {
        if range.is_empty() {
            return;
        }
        if !e.slow && range.start == e.fast_end {
            e.fast_end = range.end;
        } else {
            self.go_slow(input, e);
            self.out.extend_from_slice(&input[range]);
        }
    }

    fn emit(&mut self, input: &[u8], bytes: &[u8], e: &mut Emit) {
        self.go_slow(input, e);
        self.out.extend_from_slice(bytes);
    }

    fn go_slow(&mut self, input: &[u8], e: &mut Emit) {
        if !e.slow {
            self.out.extend_from_slice(&input[..e.fast_end]);
            e.slow = true;
        }
    }

    fn protocol_error(&mut self) -> Event {
        if self.from_client {
            Event::ClientProtocol
        } else {
            Event::UpstreamProtocol
        }
    }

    /// Walks `input` frame by frame. Returns how many leading input bytes can
    /// be written straight from `input` (the rest, if any, went to `out`).
    fn scan(
        &mut self,
        input: &[u8],
        max_message: u64,
        interceptor: Option<&dyn Interceptor>,
    ) -> usize {
        let mut e = Emit {
            fast_end: 0,
            slow: false,
        };
        let mut pos = 0;
        while pos < input.len() && self.event.is_none() {
            if self.remaining > 0 {
                let n = (self.remaining.min((input.len() - pos) as u64)) as usize;
                if self.passing {
                    self.pass(input, pos..pos + n, &mut e);
                }
                self.remaining -= n as u64;
                pos += n;
                continue;
            }
            if let Some(held) = &mut self.held {
                let n = (held.total - held.bytes.len()).min(input.len() - pos);
                held.bytes.extend_from_slice(&input[pos..pos + n]);
                pos += n;
                if held.bytes.len() == held.total {
                    self.decide_held(input, &mut e, interceptor);
                    if matches!(self.event, Some(Event::Intercepted(_))) {
                        self.backlog.extend_from_slice(&input[pos..]);
                    }
                }
                continue;
            }
            // A frame boundary: the gateway's own frames may go out here.
            if !self.inject.is_empty() {
                let inject = std::mem::take(&mut self.inject);
                self.emit(input, &inject, &mut e);
            }
            if self.stopped {
                break;
            }
            pos = self.start_frame(input, pos, &mut e, max_message, interceptor);
        }
        if self.remaining == 0 && self.held.is_none() && !self.inject.is_empty() {
            let inject = std::mem::take(&mut self.inject);
            self.emit(input, &inject, &mut e);
        }
        if e.slow {
            0
        } else {
            e.fast_end
        }
    }

    /// Parses the header at `pos` (with any bytes left from the last read)
    /// and decides what happens to its frame. Returns the new position.
    fn start_frame(
        &mut self,
        input: &[u8],
        pos: usize,
        e: &mut Emit,
        max_message: u64,
        interceptor: Option<&dyn Interceptor>,
    ) -> usize {
        let mut head = [0u8; frame::MAX_HEADER];
        let have = self.partial_len;
        head[..have].copy_from_slice(&self.partial[..have]);
        let take = (frame::MAX_HEADER - have).min(input.len() - pos);
        head[have..have + take].copy_from_slice(&input[pos..pos + take]);
        let header = match frame::parse(&head[..have + take]) {
            Ok(Some(h)) => h,
            Ok(None) => {
                // Keep the split header back: nothing of a frame is passed
                // on before it is known to be acceptable.
                self.partial[have..have + take].copy_from_slice(&input[pos..pos + take]);
                self.partial_len = have + take;
                return input.len();
            }
            Err(_) => {
                self.event = Some(self.protocol_error());
                return input.len();
            }
        };
        let in_input = header.len - have;
        self.partial_len = 0;
        if header.mask.is_some() != self.from_client {
            self.event = Some(self.protocol_error());
            return input.len();
        }
        let is_data = matches!(header.opcode, OP_TEXT | OP_BINARY | OP_CONTINUATION);
        if is_data {
            let continuation = header.opcode == OP_CONTINUATION;
            if continuation != self.in_message {
                self.event = Some(self.protocol_error());
                return input.len();
            }
            if self.message_len.saturating_add(header.payload_len) > max_message && !self.discard {
                self.event = Some(Event::TooBig);
                return input.len();
            }
            self.in_message = !header.fin;
            self.message_len = if header.fin {
                0
            } else {
                self.message_len + header.payload_len
            };
            self.bytes += header.payload_len;
            if header.fin {
                self.msgs += 1;
            }
        }
        let candidate = self.from_client
            && interceptor.is_some()
            && header.opcode == OP_TEXT
            && header.fin
            && header.payload_len <= MAX_INTERCEPTED;
        let body_start = pos + in_input;
        let incomplete = ((input.len() - body_start) as u64) < header.payload_len;
        let kind = if header.opcode == OP_CLOSE {
            Some(HeldKind::Close)
        } else if candidate && !self.discard {
            Some(HeldKind::Candidate)
        } else if incomplete && !self.discard && header.payload_len <= HOLD_INCOMPLETE {
            Some(HeldKind::Data)
        } else {
            None
        };
        if let Some(kind) = kind {
            let mut bytes = Vec::with_capacity(header.len + header.payload_len as usize);
            bytes.extend_from_slice(&head[..have]);
            bytes.extend_from_slice(&input[pos..pos + in_input]);
            self.held = Some(Held {
                kind,
                header,
                total: header.len + header.payload_len as usize,
                bytes,
            });
            if header.payload_len == 0 {
                self.decide_held(input, e, interceptor);
            }
            return pos + in_input;
        }
        self.passing = !self.discard;
        if self.passing {
            if have > 0 {
                let split = head;
                self.emit(input, &split[..have], e);
            }
            self.pass(input, pos..pos + in_input, e);
        }
        self.remaining = header.payload_len;
        pos + in_input
    }

    fn decide_held(&mut self, input: &[u8], e: &mut Emit, interceptor: Option<&dyn Interceptor>) {
        let Some(held) = self.held.take() else {
            return;
        };
        if held.kind == HeldKind::Data {
            self.emit(input, &held.bytes, e);
            return;
        }
        let mut payload = held.bytes[held.header.len..].to_vec();
        if let Some(mask) = held.header.mask {
            frame::unmask(&mut payload, mask, 0);
        }
        if held.kind == HeldKind::Close {
            let (code, reason) = frame::parse_close(&payload);
            if !self.discard {
                self.emit(input, &held.bytes, e);
                self.close_sent = true;
            }
            self.close_seen = Some((code, reason));
            self.stopped = true;
            return;
        }
        if let (Some(icpt), Ok(text)) = (interceptor, std::str::from_utf8(&payload)) {
            if icpt.wants(text) {
                self.event = Some(Event::Intercepted(text.to_owned()));
                return;
            }
        }
        self.emit(input, &held.bytes, e);
    }
}

/// Where the relay reports what it passed on.
pub struct Accounting<'a> {
    pub metrics: &'a SessionMetrics,
    pub tally: &'a Tally,
    /// Milliseconds since `start` of the last frame either way (idle timeout).
    pub last_activity: &'a AtomicU64,
    pub start: Instant,
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
    /// Which side sent the first close frame (true: the client).
    first_closer: Option<bool>,
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
        }
    }

    /// The first close frame seen, if any: (by client, code, reason).
    pub fn first_close(&self) -> Option<(bool, u16, String)> {
        let by_client = self.first_closer?;
        let seen = if by_client {
            &self.c2u.close_seen
        } else {
            &self.u2c.close_seen
        };
        seen.as_ref().map(|(c, r)| (by_client, *c, r.clone()))
    }

    /// A text frame from the gateway to the client, sent between frames.
    pub fn send_to_client(&mut self, text: &str) {
        let f = frame::encode(OP_TEXT, text.as_bytes(), None);
        self.u2c.inject.extend_from_slice(&f);
    }

    /// Relays until something ends the session or needs the pump.
    pub async fn run(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_relay(cx)).await
    }

    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let Self {
            client,
            upstream,
            c2u,
            u2c,
            max_message,
            interceptor,
            ..
        } = self;
        let a = poll_dir(cx, c2u, client, upstream, *max_message, *interceptor);
        let b = poll_dir(cx, u2c, upstream, client, *max_message, None);
        self.account();
        if self.first_closer.is_none() {
            if self.c2u.close_seen.is_some() {
                self.first_closer = Some(true);
            } else if self.u2c.close_seen.is_some() {
                self.first_closer = Some(false);
            }
        }
        if let Some(ev) = self.c2u.event.take().or_else(|| self.u2c.event.take()) {
            return Poll::Ready(ev);
        }
        if a.is_ready() || b.is_ready() {
            // poll_dir is Ready only with an event, taken above.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let done = |d: &Dir| d.close_seen.is_some() && d.out.is_empty() && !d.needs_flush;
        if done(&self.c2u) && done(&self.u2c) {
            if let Some((by_client, code, reason)) = self.first_close() {
                return Poll::Ready(Event::Closed {
                    by_client,
                    code,
                    reason,
                });
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
                self.acct.last_activity.store(
                    self.acct.start.elapsed().as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Ends the session: each side that has not had a close frame from the
    /// gateway gets one (`to_client` / `to_upstream`; `None` = that side is
    /// gone), between frames; then both close handshakes may complete, bounded
    /// by `wait`.
    pub async fn finish(
        &mut self,
        to_client: Option<(u16, String)>,
        to_upstream: Option<(u16, String)>,
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
                Some((code, reason)) if !d.close_sent => {
                    let m = mask.then(frame::random_mask);
                    d.inject.extend_from_slice(&frame::close(code, &reason, m));
                    d.close_sent = true;
                }
                _ => {}
            }
        }
        let _ = tokio::time::timeout(wait, std::future::poll_fn(|cx| self.poll_finish(cx))).await;
        let _ = tokio::time::timeout(wait, async {
            let _ = std::future::poll_fn(|cx| Pin::new(&mut self.client).poll_shutdown(cx)).await;
            let _ = std::future::poll_fn(|cx| Pin::new(&mut self.upstream).poll_shutdown(cx)).await;
        })
        .await;
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Self {
            client,
            upstream,
            c2u,
            u2c,
            max_message,
            ..
        } = self;
        // A frame in flight toward a side is completed before its close goes
        // out; then each side is read (and discarded) until its close reply.
        let _ = poll_dir(cx, c2u, client, upstream, *max_message, None);
        let _ = poll_dir(cx, u2c, upstream, client, *max_message, None);
        let settled = |d: &Dir| {
            (d.close_seen.is_some() || d.stopped || d.event.is_some())
                && d.inject.is_empty()
                && d.out.is_empty()
                && !d.needs_flush
        };
        if settled(c2u) && settled(u2c) {
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
        if !d.inject.is_empty() && d.remaining == 0 && d.held.is_none() {
            let inject = std::mem::take(&mut d.inject);
            d.out.extend_from_slice(&inject);
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
#[path = "relay_tests.rs"]
mod tests;
