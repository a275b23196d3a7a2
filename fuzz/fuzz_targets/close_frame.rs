//! Close frames: `proxy::frame::parse_close` (the payload check the relay
//! applies to every close frame it holds), with `frame::parse` for the wire
//! frame around it and `frame::close` for the frames the gateway sends.
//!
//! Input: the first byte picks the mode (`sel % 3`), the rest is
//! - 0: a close payload, already unmasked, given to `parse_close`;
//! - 1: bytes off the wire: `parse` reads a header; a complete close frame
//!   is unmasked and its payload given to `parse_close`;
//! - 2: two bytes of close code, one byte of mask choice, then reason text
//!   (lossy UTF-8) given to `close`, whose frame is read back as in mode 1.
//!
//! Oracles besides no panic:
//! - an accepted close payload is empty (1005, no reason) or has a code that
//!   may be sent (1000-1003, 1007-1014, 3000-4999) and a reason that is
//!   exactly the rest of the payload, valid UTF-8; a refused one is one
//!   byte long (`Truncated`), has a code that may not be sent (`Code`, that
//!   code) or a reason that is not UTF-8 (`Reason`), checked in that order;
//! - an accepted close frame is final, without reserved bits, and its
//!   payload is at most 125 bytes (and not 1);
//! - **differential**: payloads and whole frames are also judged by a
//!   reference written here from RFC 6455 5.2, 5.5, 5.5.1 and 7.4 and
//!   RFC 3629 (its own UTF-8 decoder: no overlong forms, no surrogates,
//!   nothing above U+10FFFF); both must agree on accept/refuse, the code,
//!   the reason and the kind of error. Where the library asks for more bytes
//!   and the reference has already refused (a 126/127 length or no FIN on a
//!   close frame: the library reads the extended length and the mask
//!   first), the library must refuse once the header's bytes are there;
//! - `valid_close_code` equals the reference for all 65,536 codes (checked
//!   once per process);
//! - `close(code, reason)` is a single final close frame of at most 125
//!   payload bytes that reads back as `code` with the longest prefix of
//!   `reason` of at most 123 bytes ending on a character boundary (1005 is
//!   an empty close); a code that may not be sent is refused on reading.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use wsgate::proxy::frame::{self, CloseError, FrameError, OP_CLOSE};
use wsgate::session::CloseFrame;

// ---------------------------------------------------------------- reference

/// RFC 6455 7.4.1/7.4.2 and the IANA registry, spelled out code by code
/// rather than as ranges of allowed codes.
fn ref_code_may_be_sent(code: u16) -> bool {
    if code < 1000 {
        return false; // 0-999: not used
    }
    if code < 3000 {
        // 1000-2999: the protocol's own codes; only the assigned ones that
        // an endpoint may put on the wire.
        return match code {
            1000 | 1001 | 1002 | 1003 => true,
            1004 => false, // reserved
            1005 => false, // no status: local only
            1006 => false, // abnormal closure: local only
            1007 | 1008 | 1009 | 1010 | 1011 => true,
            1012 | 1013 | 1014 => true, // service restart, try again later, bad gateway
            1015 => false, // TLS handshake failure: local only
            _ => false,    // unassigned
        };
    }
    // 3000-3999 registered, 4000-4999 private use, 5000+ undefined.
    code <= 4999
}

/// RFC 3629 by hand: the shortest form only, no surrogates, at most U+10FFFF.
fn ref_utf8(bytes: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b0 = bytes[i] as u32;
        let (len, min, init) = match b0 {
            0x00..=0x7F => (1, 0, b0),
            0xC0..=0xDF => (2, 0x80, b0 & 0x1F),
            0xE0..=0xEF => (3, 0x800, b0 & 0x0F),
            0xF0..=0xF7 => (4, 0x1_0000, b0 & 0x07),
            _ => return None, // continuation byte first, or 0xF8..
        };
        if i + len > bytes.len() {
            return None;
        }
        let mut cp = init;
        for k in 1..len {
            let b = bytes[i + k] as u32;
            if b & 0xC0 != 0x80 {
                return None;
            }
            cp = (cp << 6) | (b & 0x3F);
        }
        if cp < min || (0xD800..=0xDFFF).contains(&cp) || cp > 0x10_FFFF {
            return None;
        }
        out.push(char::from_u32(cp)?);
        i += len;
    }
    Some(out)
}

#[derive(Debug, PartialEq, Eq)]
enum RefPayload {
    Accepted(u16, String),
    Truncated,
    Code(u16),
    Reason,
}

fn ref_payload(p: &[u8]) -> RefPayload {
    if p.is_empty() {
        return RefPayload::Accepted(1005, String::new());
    }
    if p.len() == 1 {
        return RefPayload::Truncated;
    }
    let code = (p[0] as u16) * 256 + p[1] as u16;
    if !ref_code_may_be_sent(code) {
        return RefPayload::Code(code);
    }
    match ref_utf8(&p[2..]) {
        Some(reason) => RefPayload::Accepted(code, reason),
        None => RefPayload::Reason,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RefFrame {
    /// Not all of the frame is there.
    Incomplete,
    /// A frame that is not a close frame (nothing more is compared).
    Other,
    /// Refused by the frame rules.
    RefusedFrame,
    Payload(RefPayload),
}

fn ref_frame(buf: &[u8]) -> RefFrame {
    if buf.len() < 2 {
        return RefFrame::Incomplete;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 >> 7 == 1;
    let (rsv1, rsv2, rsv3) = ((b0 >> 6) & 1, (b0 >> 5) & 1, (b0 >> 4) & 1);
    if rsv1 + rsv2 + rsv3 != 0 {
        return RefFrame::RefusedFrame; // no extension
    }
    let opcode = b0 & 0x0F;
    match opcode {
        0x0 | 0x1 | 0x2 | 0x9 | 0xA => return RefFrame::Other,
        0x8 => {}
        _ => return RefFrame::RefusedFrame, // reserved opcodes
    }
    let len7 = (b1 & 0x7F) as usize;
    if len7 >= 126 {
        // A control frame's payload is at most 125 bytes, and a 126/127
        // length means at least 126 (minimal encoding).
        return RefFrame::RefusedFrame;
    }
    if !fin {
        return RefFrame::RefusedFrame; // fragmented control
    }
    let masked = b1 >> 7 == 1;
    let head = if masked { 6 } else { 2 };
    if buf.len() < head + len7 {
        return RefFrame::Incomplete;
    }
    let mut payload: Vec<u8> = buf[head..head + len7].to_vec();
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= buf[2 + i % 4];
        }
    }
    RefFrame::Payload(ref_payload(&payload))
}

// ---------------------------------------------------------------- library

fn lib_payload(p: &[u8]) -> RefPayload {
    match frame::parse_close(p) {
        Ok(CloseFrame { code, reason }) => RefPayload::Accepted(code, reason),
        Err(CloseError::Truncated) => RefPayload::Truncated,
        Err(CloseError::Code(c)) => RefPayload::Code(c),
        Err(CloseError::Reason) => RefPayload::Reason,
    }
}

/// What the relay does with bytes off the wire: `None` when it waits for
/// more, `Some(Err)` for a frame it refuses, `Some(Ok(None))` for a frame
/// that is no close.
fn lib_frame(buf: &[u8]) -> Option<Result<Option<(frame::Header, RefPayload)>, FrameError>> {
    let header = match frame::parse(buf) {
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
        Ok(Some(h)) => h,
    };
    if header.opcode != OP_CLOSE {
        return Some(Ok(None));
    }
    let end = header.len as u64 + header.payload_len;
    if (buf.len() as u64) < end {
        return None;
    }
    let mut payload = buf[header.len..end as usize].to_vec();
    if let Some(mask) = header.mask {
        frame::unmask(&mut payload, mask, 0);
    }
    Some(Ok(Some((header, lib_payload(&payload)))))
}

// ---------------------------------------------------------------- oracles

/// The accept/refuse rules, stated on the library's answer alone.
fn check_payload_answer(p: &[u8], got: &RefPayload) {
    match got {
        RefPayload::Accepted(code, reason) => {
            if p.is_empty() {
                assert_eq!((*code, reason.as_str()), (1005, ""), "empty close");
                return;
            }
            assert_ne!(p.len(), 1, "a 1-byte close accepted");
            assert_eq!(*code, u16::from_be_bytes([p[0], p[1]]), "code not the payload's");
            assert!(
                matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                "code {code} may not be sent"
            );
            assert_eq!(reason.as_bytes(), &p[2..], "reason not the rest of the payload");
        }
        RefPayload::Truncated => assert_eq!(p.len(), 1, "Truncated for {} bytes", p.len()),
        RefPayload::Code(c) => {
            assert!(p.len() >= 2);
            assert_eq!(*c, u16::from_be_bytes([p[0], p[1]]));
            assert!(!matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999), "code {c} refused");
        }
        RefPayload::Reason => {
            assert!(p.len() >= 2);
            assert!(std::str::from_utf8(&p[2..]).is_err(), "a UTF-8 reason refused");
        }
    }
}

fn check_payload(p: &[u8]) {
    let got = lib_payload(p);
    check_payload_answer(p, &got);
    let want = ref_payload(p);
    assert_eq!(got, want, "parse_close and the reference disagree on {p:02x?}");
}

fn check_frame(buf: &[u8]) {
    let got = lib_frame(buf);
    let want = ref_frame(buf);
    match (&got, &want) {
        (None, RefFrame::Incomplete) => {}
        // The library reads the whole header (a 126/127 length, the mask)
        // before it refuses a control frame for its length or FIN bit; with
        // the whole header there it must refuse.
        (None, RefFrame::RefusedFrame) => {
            let mut padded = buf.to_vec();
            padded.resize(buf.len().max(frame::MAX_HEADER), 0xFF);
            assert!(
                frame::parse(&padded).is_err(),
                "a close frame the reference refuses not refused: {buf:02x?}"
            );
        }
        (Some(Err(_)), RefFrame::RefusedFrame) => {}
        (Some(Ok(None)), RefFrame::Other) => {}
        (Some(Ok(Some((header, payload)))), RefFrame::Payload(want_payload)) => {
            // An accepted (or payload-refused) close frame passed the frame
            // rules: final, no reserved bits, at most 125 bytes.
            assert!(header.fin, "a fragmented close frame");
            assert_eq!(buf[0] & 0x70, 0, "reserved bits on a close frame");
            assert!(header.payload_len <= 125, "close payload of {}", header.payload_len);
            if let RefPayload::Accepted(..) = payload {
                assert_ne!(header.payload_len, 1, "a 1-byte close accepted");
            }
            assert_eq!(payload, want_payload, "frame {buf:02x?}");
            let end = header.len + header.payload_len as usize;
            let mut p = buf[header.len..end].to_vec();
            if let Some(m) = header.mask {
                frame::unmask(&mut p, m, 0);
            }
            check_payload_answer(&p, payload);
        }
        // Other frames that the library refuses and the reference passes
        // (non-close frames are not the reference's business).
        (Some(Err(_)) | None, RefFrame::Other) => {}
        _ => panic!("frame {buf:02x?}: library {got:?}, reference {want:?}"),
    }
}

fn check_encoder(rest: &[u8]) {
    let &[hi, lo, m, ref text @ ..] = rest else {
        return;
    };
    let code = u16::from_be_bytes([hi, lo]);
    let reason = String::from_utf8_lossy(text);
    let mask = (m & 1 == 1).then(|| [m, hi ^ 0x5A, lo ^ 0xA5, 0x33]);
    let wire = frame::close(code, &reason, mask);
    let header = frame::parse(&wire)
        .expect("the gateway's close frame is valid")
        .expect("and complete");
    assert!(header.fin && header.opcode == OP_CLOSE);
    assert_eq!(header.mask, mask);
    assert!(header.payload_len <= 125, "payload of {}", header.payload_len);
    assert_eq!(header.len + header.payload_len as usize, wire.len(), "one frame");
    check_frame(&wire);
    let mut payload = wire[header.len..].to_vec();
    if let Some(m) = mask {
        frame::unmask(&mut payload, m, 0);
    }
    let read = frame::parse_close(&payload);
    if code == 1005 {
        assert!(payload.is_empty());
        assert_eq!(read, Ok(CloseFrame::no_status()));
        return;
    }
    if !ref_code_may_be_sent(code) {
        assert_eq!(read, Err(CloseError::Code(code)));
        return;
    }
    // The longest prefix of at most 123 bytes on a character boundary.
    let mut want = String::new();
    for c in reason.chars() {
        if want.len() + c.len_utf8() > 123 {
            break;
        }
        want.push(c);
    }
    assert_eq!(read, Ok(CloseFrame::new(code, &want)));
}

static CODES: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    CODES.call_once(|| {
        for code in 0..=u16::MAX {
            assert_eq!(
                frame::valid_close_code(code),
                ref_code_may_be_sent(code),
                "valid_close_code({code})"
            );
        }
        // The reference's UTF-8 decoder against a few known answers, so a
        // bug in it is not mistaken for one in the library.
        for (bytes, ok) in [
            (&b"plain"[..], true),
            ("é€😀".as_bytes(), true),
            (b"\xC0\xAF", false),
            (b"\xE0\x80\xAF", false),
            (b"\xF0\x80\x80\xAF", false),
            (b"\xED\xA0\x80", false),
            (b"\xF4\x90\x80\x80", false),
            (b"\xF4\x8F\xBF\xBF", true),
            (b"\xEF\xBF\xBF", true),
            (b"\x80", false),
            (b"\xE2\x82", false),
        ] {
            assert_eq!(ref_utf8(bytes).is_some(), ok, "{bytes:02x?}");
        }
    });
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            check_payload(rest);
            // Whatever the payload, the reference's UTF-8 answer is std's.
            assert_eq!(ref_utf8(rest).is_some(), std::str::from_utf8(rest).is_ok());
        }
        1 => check_frame(rest),
        _ => check_encoder(rest),
    }
});
