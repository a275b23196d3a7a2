//! PROXY protocol v1/v2 headers (`listener::proxy_protocol::parse`) on
//! arbitrary bytes.
//!
//! Oracles: no panic; an accepted header's length is within the input and
//! at most 16 + 4096 bytes; parsing just that prefix gives the same header;
//! every shorter prefix of it is `Incomplete` or refused, never a different
//! header (a header is never read short).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::listener::proxy_protocol::{parse, ParseError};

fuzz_target!(|data: &[u8]| {
    let Ok((header, len)) = parse(data) else {
        return;
    };
    assert!(len <= data.len() && len <= 16 + 4096, "length {len}");
    assert_eq!(parse(&data[..len]), Ok((header, len)));
    for cut in 0..len {
        match parse(&data[..cut]) {
            Err(ParseError::Incomplete | ParseError::Malformed(_) | ParseError::Missing) => {}
            Ok(other) => panic!("prefix of {cut} bytes parsed as {other:?}"),
        }
    }
});
