//! RFC 6455 frame headers: just enough of the wire format for a relay that
//! forwards frames unchanged. The relay never decodes payloads in the hot
//! path; it reads headers to know where frames end (so it can enforce
//! `max_message_size` and inject a close frame between frames) and reads
//! close and (when refresh is on) small text payloads.

use bytes::{BufMut, BytesMut};

use crate::session::CloseFrame;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The longest header: 2 bytes, 8 bytes of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes taken by the header itself.
    pub len: usize,
    /// RSV1: a compressed message (`permessage-deflate`); whether it is
    /// allowed here is the caller's decision.
    pub rsv1: bool,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a frame is refused: each is a protocol error (close 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved bits set without a negotiated extension")]
    Reserved,
    #[error("unknown opcode")]
    Opcode,
    #[error("control frame fragmented or longer than 125 bytes")]
    Control,
    #[error("payload length not minimally encoded or too large")]
    Length,
}

/// Parses a header at the start of `buf`. `Ok(None)`: not all of it is there yet.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    // RSV2 and RSV3 belong to no extension the gateway ever agrees to.
    if b0 & 0x30 != 0 {
        return Err(FrameError::Reserved);
    }
    let rsv1 = b0 & 0x40 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::Opcode);
    }
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut len) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            let n = u16::from_be_bytes([b[0], b[1]]) as u64;
            if n < 126 {
                return Err(FrameError::Length);
            }
            (n, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let n = u64::from_be_bytes(a);
            if n <= u16::MAX as u64 || n >> 63 != 0 {
                return Err(FrameError::Length);
            }
            (n, 10)
        }
        n => (n as u64, 2),
    };
    let mask = if masked {
        let Some(m) = buf.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    let header = Header {
        fin,
        opcode,
        mask,
        payload_len,
        len,
        rsv1,
    };
    if header.is_control() && (!fin || payload_len > 125 || rsv1) {
        return Err(FrameError::Control);
    }
    Ok(Some(header))
}

/// XORs `data` with the mask, starting at payload offset `offset`.
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// Encodes one frame. `mask` is required on frames a client sends (the
/// gateway toward its upstream) and absent on a server's (toward the client).
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> BytesMut {
    let mut out = BytesMut::with_capacity(payload.len() + MAX_HEADER);
    out.put_u8(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(m) => {
            out.put_slice(&m);
            let start = out.len();
            out.put_slice(payload);
            unmask(&mut out[start..], m, 0);
        }
        None => out.put_slice(payload),
    }
    out
}

/// A close frame; code 1005 ("no status") is sent as an empty close.
pub fn close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> BytesMut {
    if code == 1005 {
        return encode(OP_CLOSE, &[], mask);
    }
    // Control payloads are at most 125 bytes: 2 for the code, 123 of reason,
    // cut on a character boundary.
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &payload, mask)
}

/// Why a close frame is refused: each fails the connection with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    #[error("close payload of one byte")]
    Truncated,
    #[error("close code {0} may not be sent")]
    Code(u16),
    #[error("close reason is not UTF-8")]
    Reason,
}

/// Code and reason of a close payload (already unmasked). An empty payload
/// is 1005 (no status).
pub fn parse_close(payload: &[u8]) -> Result<CloseFrame, CloseError> {
    match payload {
        [] => Ok(CloseFrame::no_status()),
        [_] => Err(CloseError::Truncated),
        [a, b, rest @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(CloseError::Code(code));
            }
            let reason = std::str::from_utf8(rest).map_err(|_| CloseError::Reason)?;
            Ok(CloseFrame::new(code, reason))
        }
    }
}

/// Codes a peer may put on the wire (RFC 6455 7.4 and the IANA registry):
/// not below 1000, not 1004-1006 or 1015 (reserved, or only meaningful
/// locally), not the unassigned 1016-2999, nor 5000 and above. 1012-1014
/// are assigned (service restart, try again later, bad gateway).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

pub fn random_mask() -> [u8; 4] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_class() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let payload = vec![7u8; len];
                let frame = encode(OP_BINARY, &payload, mask);
                let h = parse(&frame).expect("valid").expect("complete");
                assert_eq!(h.payload_len as usize, len);
                assert_eq!(h.len + len, frame.len());
                assert_eq!(h.mask, mask);
                let mut body = frame[h.len..].to_vec();
                if let Some(m) = h.mask {
                    unmask(&mut body, m, 0);
                }
                assert_eq!(body, payload);
            }
        }
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let frame = encode(OP_TEXT, &[0u8; 300], Some([9, 9, 9, 9]));
        for cut in 0..8 {
            assert_eq!(parse(&frame[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn protocol_errors() {
        // RSV2/RSV3: no extension uses them; RSV1 is reported for the
        // caller to judge (`permessage-deflate`), except on control frames.
        assert_eq!(parse(&[0xA1, 0x00]), Err(FrameError::Reserved));
        assert_eq!(parse(&[0x91, 0x00]), Err(FrameError::Reserved));
        assert!(parse(&[0xC1, 0x00]).is_ok_and(|h| h.is_some_and(|h| h.rsv1)));
        assert_eq!(parse(&[0xC9, 0x00]), Err(FrameError::Control));
        assert_eq!(parse(&[0x83, 0x00]), Err(FrameError::Opcode));
        assert_eq!(parse(&[0x09, 0x00]), Err(FrameError::Control));
        assert_eq!(parse(&[0x89, 126, 0, 200]), Err(FrameError::Control));
        assert_eq!(parse(&[0x82, 126, 0, 5]), Err(FrameError::Length));
    }

    #[test]
    fn close_payloads() {
        let f = close(4401, "token expired", None);
        let h = parse(&f).unwrap().unwrap();
        assert_eq!(
            parse_close(&f[h.len..]),
            Ok(CloseFrame::new(4401, "token expired"))
        );
        assert_eq!(parse_close(&[]), Ok(CloseFrame::no_status()));
        assert_eq!(parse_close(&[3]), Err(CloseError::Truncated));
        assert_eq!(parse_close(&[0x03, 0xED]), Err(CloseError::Code(1005)));
        assert_eq!(parse_close(&[0x03, 0xE8, 0xFF]), Err(CloseError::Reason));
        // Autobahn 7.7.x (sendable) and 7.9.x (not sendable).
        let sendable = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ];
        for code in sendable.into_iter().chain([3000, 3999, 4000, 4999]) {
            assert!(valid_close_code(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!valid_close_code(code), "{code}");
            let payload = code.to_be_bytes();
            assert_eq!(parse_close(&payload), Err(CloseError::Code(code)));
        }
        let long = "é".repeat(100);
        let f = close(1000, &long, None);
        assert!(f.len() <= 127);
    }
}
