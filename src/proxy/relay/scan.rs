//! Frame scanning for one direction of the relay: walks the bytes of each
//! read frame by frame, decides per frame whether it passes straight on, is
//! held until complete (a close, a possible refresh, a small frame split
//! across reads) or refused, and places the gateway's own frames at frame
//! boundaries.

use super::super::frame::{self, Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT};
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
    Candidate,
    Data,
}

/// One direction: reads one side, writes the other.
#[derive(Default)]
pub(super) struct Dir {
    pub(super) from_client: bool,
    /// Header bytes split across reads, not yet passed on.
    pub(super) partial: [u8; frame::MAX_HEADER],
    pub(super) partial_len: usize,
    /// Payload bytes of the frame in flight still to pass on (or skip).
    pub(super) remaining: u64,
    /// Whether the frame in flight is passed on (false while discarding).
    pub(super) passing: bool,
    pub(super) in_message: bool,
    pub(super) message_len: u64,
    pub(super) held: Option<Held>,
    /// Bytes waiting for the writer, from `out_pos`.
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) needs_flush: bool,
    /// Frames of the gateway's own, emitted at the next frame boundary.
    pub(super) inject: Vec<u8>,
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
        if let (Some(icpt), Ok(text)) = (interceptor, std::str::from_utf8(&payload)) {
            if icpt.wants(text) {
                self.event = Some(Event::Intercepted(text.to_owned()));
                return;
            }
        }
        self.emit(input, &held.bytes, e);
    }
}
