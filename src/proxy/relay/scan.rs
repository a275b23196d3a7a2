//! Frame scanning for one direction of the relay: walks the bytes of each
//! read frame by frame, decides per frame whether it passes straight on, is
//! held until complete (a close, a possible refresh, a small frame split
//! across reads) or refused, and places the gateway's own frames: control
//! frames (a close) at frame boundaries, messages (a refresh answer) at
//! message boundaries only, since RFC 6455 allows nothing but control
//! frames between the fragments of a message.

use super::super::frame::{self, Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PONG, OP_TEXT};
use super::{Event, Interceptor, HOLD_INCOMPLETE, MAX_INTERCEPTED};
use crate::session::CloseFrame;

/// A frame held back until complete: a close, a possible refresh, or a
/// small frame split across reads.
pub(super) struct Held {
    kind: HeldKind,
    header: Header,
    total: usize,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum HeldKind {
    Close,
    /// A pong that may answer the gateway's own ping.
    Pong,
    Candidate,
    Data,
}

/// One direction: reads one side, writes the other.
#[derive(Default)]
pub(super) struct Dir {
    pub(super) from_client: bool,
    /// `permessage-deflate` was agreed: a data message's first frame may
    /// carry RSV1 (RFC 7692 §6); the frames pass on as they are.
    pub(super) deflate: bool,
    /// Header bytes split across reads, not yet passed on.
    pub(super) partial: [u8; frame::MAX_HEADER],
    pub(super) partial_len: usize,
    /// Payload bytes of the frame in flight still to pass on (or skip).
    pub(super) remaining: u64,
    /// Whether the frame in flight is passed on (false while discarding).
    pub(super) passing: bool,
    pub(super) in_message: bool,
    pub(super) message_len: u64,
    /// Boxed, as `assembly`: rarely set, and every session holds two
    /// directions for its whole life.
    pub(super) held: Option<Box<Held>>,
    /// Bytes waiting for the writer, from `out_pos`.
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) needs_flush: bool,
    /// Control frames of the gateway's own, emitted at the next frame boundary.
    pub(super) inject: Vec<u8>,
    /// Messages of the gateway's own, emitted at the next message boundary.
    pub(super) inject_msg: Vec<u8>,
    /// A fragmented client text message that may be for the interceptor,
    /// held until its last fragment (bounded by `MAX_INTERCEPTED`).
    pub(super) assembly: Option<Box<Assembly>>,
    /// Input left after an intercepted frame, scanned before reading again.
    pub(super) backlog: Vec<u8>,
    /// The reading side's close frame, once seen.
    pub(super) close_seen: Option<CloseFrame>,
    /// A close frame went out to the writing side.
    pub(super) close_sent: bool,
    /// Read nothing more (closed, lost or ending).
    pub(super) stopped: bool,
    /// Discard frames instead of passing them on (waiting for a close reply).
    pub(super) discard: bool,
    pub(super) event: Option<Event>,
    pub(super) msgs: u64,
    pub(super) bytes: u64,
    /// A frame of any kind was read since the last accounting (keepalive).
    pub(super) seen: bool,
    /// A frame was passed on since the last accounting (idle timeout).
    pub(super) active: bool,
    /// The payload of the gateway's ping to the reading side, until its pong.
    pub(super) await_pong: Option<[u8; 8]>,
    /// Tests only: every frame takes the general path, to check that the
    /// plain-frame loop decides exactly as it does.
    #[cfg(test)]
    pub(super) general_only: bool,
}

/// The fragments of a client text message held so far: as they came (to
/// pass on unchanged if the message is not the gateway's) and unmasked.
#[derive(Default)]
pub(super) struct Assembly {
    raw: Vec<u8>,
    text: Vec<u8>,
}

/// Whether text that begins this way can still be a JSON object: most
/// fragmented application messages are released at their first fragment.
fn may_be_object(text: &[u8]) -> bool {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        None => true,
        Some(b) => *b == b'{',
    }
}

/// Where forwarded bytes go during one scan: straight from the input (the
/// common case, no copy) or, once anything is skipped or added, into `out`.
struct Emit {
    fast_end: usize,
    slow: bool,
}

impl Dir {
    pub(super) fn new(from_client: bool) -> Self {
        Self {
            from_client,
            ..Self::default()
        }
    }

    /// Inlined: most frames only extend the range written from the input.
    #[inline(always)]
    fn pass(&mut self, input: &[u8], range: std::ops::Range<usize>, e: &mut Emit) {
        if range.is_empty() {
            return;
        }
        if !e.slow && range.start == e.fast_end {
            e.fast_end = range.end;
        } else {
            self.pass_slow(input, range, e);
        }
    }

    #[inline(never)]
    fn pass_slow(&mut self, input: &[u8], range: std::ops::Range<usize>, e: &mut Emit) {
        self.go_slow(input, e);
        self.out.extend_from_slice(&input[range]);
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

    /// Whether nothing of a frame is in flight or held back.
    pub(super) fn at_frame_boundary(&self) -> bool {
        self.remaining == 0 && self.held.is_none()
    }

    /// Whether the gateway's own frames are waiting and may go out now.
    pub(super) fn injects_ready(&self) -> bool {
        self.at_frame_boundary()
            && (!self.inject.is_empty() || (!self.in_message && !self.inject_msg.is_empty()))
    }

    /// Emits the gateway's frames that may go out at this frame boundary:
    /// messages only between messages, then control frames.
    /// Inlined: at almost every frame boundary there is nothing to emit.
    #[inline(always)]
    fn emit_injects(&mut self, input: &[u8], e: &mut Emit) {
        if !self.inject.is_empty() || !self.inject_msg.is_empty() {
            self.emit_injects_now(input, e);
        }
    }

    #[inline(never)]
    fn emit_injects_now(&mut self, input: &[u8], e: &mut Emit) {
        if !self.in_message && !self.inject_msg.is_empty() {
            let msgs = std::mem::take(&mut self.inject_msg);
            self.emit(input, &msgs, e);
        }
        if !self.inject.is_empty() {
            let frames = std::mem::take(&mut self.inject);
            self.emit(input, &frames, e);
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
    pub(super) fn scan(
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
                }
            } else {
                // A frame boundary: the gateway's own frames may go out here.
                self.emit_injects(input, &mut e);
                if self.stopped {
                    break;
                }
                let next =
                    self.plain_frames(input, pos, &mut e, max_message, interceptor.is_some());
                if next > pos {
                    pos = next;
                    continue;
                }
                pos = self.start_frame(input, pos, &mut e, max_message, interceptor);
            }
            if matches!(self.event, Some(Event::Intercepted(_))) {
                // The pump answers before the rest is looked at.
                self.backlog.extend_from_slice(&input[pos..]);
            }
        }
        if self.at_frame_boundary() {
            self.emit_injects(input, &mut e);
        }
        if e.slow {
            0
        } else {
            e.fast_end
        }
    }

    /// The common case, in a tight loop: complete data frames that pass on
    /// as they are, one after the other, while nothing is held, split,
    /// assembled, discarded or waiting to be injected. Each is checked as
    /// [`Self::start_frame`] would check it; the first frame that needs
    /// more than that (a control frame, a 64-bit length, a frame not yet
    /// complete, a client text frame the interceptor may want, anything
    /// refused) is left to `start_frame`. Returns the position after the
    /// frames passed.
    #[inline]
    fn plain_frames(
        &mut self,
        input: &[u8],
        mut pos: usize,
        e: &mut Emit,
        max_message: u64,
        intercepting: bool,
    ) -> usize {
        #[cfg(test)]
        if self.general_only {
            return pos;
        }
        if self.partial_len != 0
            || self.discard
            || self.assembly.is_some()
            || !self.inject.is_empty()
            || !self.inject_msg.is_empty()
        {
            return pos;
        }
        while let [b0, b1, ..] = input[pos..] {
            let opcode = b0 & 0x0F;
            let fin = b0 & 0x80 != 0;
            let rsv_ok = b0 & 0x70 == 0
                || (b0 & 0x70 == 0x40 && self.deflate && matches!(opcode, OP_TEXT | OP_BINARY));
            let opcode_ok = if self.in_message {
                opcode == OP_CONTINUATION
            } else {
                opcode == OP_BINARY || (opcode == OP_TEXT && !(self.from_client && intercepting))
            };
            if !rsv_ok || !opcode_ok || (b1 & 0x80 != 0) != self.from_client {
                break;
            }
            let mask_len = if self.from_client { 4 } else { 0 };
            let (payload_len, head_len) = match b1 & 0x7F {
                127 => break,
                126 => match input.get(pos + 2..pos + 4) {
                    Some(&[hi, lo]) => {
                        let n = u16::from_be_bytes([hi, lo]) as u64;
                        if n < 126 {
                            break;
                        }
                        (n, 4 + mask_len)
                    }
                    _ => break,
                },
                n => (n as u64, 2 + mask_len),
            };
            let end = pos + head_len + payload_len as usize;
            if end > input.len() || self.message_len + payload_len > max_message {
                break;
            }
            self.seen = true;
            self.active = true;
            self.passing = true;
            self.in_message = !fin;
            self.bytes += payload_len;
            if fin {
                self.message_len = 0;
                self.msgs += 1;
            } else {
                self.message_len += payload_len;
            }
            self.pass(input, pos..end, e);
            pos = end;
        }
        pos
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
        let take = (frame::MAX_HEADER - have).min(input.len() - pos);
        // The usual case, a header that starts in this read, is parsed where
        // it lies; only one split across reads is put together first.
        let parsed = if have == 0 {
            frame::parse(&input[pos..pos + take])
        } else {
            head[..have].copy_from_slice(&self.partial[..have]);
            head[have..have + take].copy_from_slice(&input[pos..pos + take]);
            frame::parse(&head[..have + take])
        };
        let header = match parsed {
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
        // RSV1 marks a compressed message: only on a message's first frame,
        // and only when compression was agreed.
        if header.rsv1 && !(self.deflate && matches!(header.opcode, OP_TEXT | OP_BINARY)) {
            self.event = Some(self.protocol_error());
            return input.len();
        }
        let maybe_ours = header.opcode == OP_PONG && self.await_pong.is_some();
        self.seen = true;
        self.active |= !maybe_ours;
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
        let held_so_far = self.assembly.as_ref().map(|a| a.text.len() as u64);
        let candidate = self.from_client
            && interceptor.is_some()
            && match (header.opcode, held_so_far) {
                (OP_TEXT, _) => header.payload_len <= MAX_INTERCEPTED,
                (OP_CONTINUATION, Some(n)) => n + header.payload_len <= MAX_INTERCEPTED,
                _ => false,
            };
        if !candidate && header.opcode == OP_CONTINUATION {
            // Too long to be the gateway's: what was held goes on first.
            self.release_assembly(input, e);
        }
        let body_start = pos + in_input;
        let incomplete = ((input.len() - body_start) as u64) < header.payload_len;
        let kind = if header.opcode == OP_CLOSE {
            Some(HeldKind::Close)
        } else if maybe_ours && !self.discard {
            Some(HeldKind::Pong)
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
            self.held = Some(Box::new(Held {
                kind,
                header,
                total: header.len + header.payload_len as usize,
                bytes,
            }));
            if header.payload_len == 0 {
                self.decide_held(input, e, interceptor);
            }
            return pos + in_input;
        }
        self.passing = !self.discard;
        // As much of the payload as this read holds goes with the header, in
        // one step; the rest follows as it arrives.
        let here = header.payload_len.min((input.len() - body_start) as u64) as usize;
        if self.passing {
            if have > 0 {
                let split = head;
                self.emit(input, &split[..have], e);
            }
            self.pass(input, pos..body_start + here, e);
        }
        self.remaining = header.payload_len - here as u64;
        body_start + here
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
        if held.kind == HeldKind::Pong {
            if self.await_pong.is_some_and(|p| p[..] == payload[..]) {
                // The answer to the gateway's keepalive ping: not the other
                // side's business.
                self.await_pong = None;
                return;
            }
            self.active = true;
            self.emit(input, &held.bytes, e);
            return;
        }
        if held.kind == HeldKind::Close {
            // Only close frames are inspected: a malformed one fails the
            // connection (1002 to its sender) instead of being passed on.
            let seen = match frame::parse_close(&payload) {
                Ok(seen) => seen,
                Err(_) if !self.discard => {
                    self.event = Some(self.protocol_error());
                    return;
                }
                // Already ending: a malformed answer still ends the wait.
                Err(_) => CloseFrame::new(1002, ""),
            };
            if !self.discard {
                self.emit(input, &held.bytes, e);
                self.close_sent = true;
            }
            self.close_seen = Some(seen);
            self.stopped = true;
            return;
        }
        if !held.header.fin || self.assembly.is_some() {
            let a = self.assembly.get_or_insert_with(Box::default);
            a.raw.extend_from_slice(&held.bytes);
            a.text.extend_from_slice(&payload);
            if !held.header.fin {
                if !may_be_object(&a.text) {
                    self.release_assembly(input, e);
                }
                return;
            }
            if let Some(a) = self.assembly.take() {
                self.intercept_or_emit(input, e, interceptor, &a.text, &a.raw);
            }
            return;
        }
        self.intercept_or_emit(input, e, interceptor, &payload, &held.bytes);
    }

    /// A complete client text message: the interceptor's, or passed on as
    /// it came (`raw`).
    fn intercept_or_emit(
        &mut self,
        input: &[u8],
        e: &mut Emit,
        interceptor: Option<&dyn Interceptor>,
        text: &[u8],
        raw: &[u8],
    ) {
        if let (Some(icpt), Ok(text)) = (interceptor, std::str::from_utf8(text)) {
            if icpt.wants(text) {
                self.event = Some(Event::Intercepted(text.to_owned()));
                return;
            }
        }
        self.emit(input, raw, e);
    }

    /// Passes on the fragments held so far, unchanged; the rest of their
    /// message streams through.
    fn release_assembly(&mut self, input: &[u8], e: &mut Emit) {
        if let Some(a) = self.assembly.take() {
            self.emit(input, &a.raw, e);
        }
    }
}
