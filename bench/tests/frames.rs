use wsgate_bench::*;

#[test]
fn accept_key_matches_rfc6455_example() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn header_round_trip() {
    for len in [0usize, 125, 126, 65535, 65536] {
        let mut b = Vec::new();
        put_header(&mut b, true, OP_BINARY, len, Some([1, 2, 3, 4]));
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.len, h.mask, h.header_len),
            (true, OP_BINARY, len, Some([1, 2, 3, 4]), b.len())
        );
    }
}

#[test]
fn mask_matches_bytewise() {
    let key = [0x12, 0x34, 0x56, 0x78];
    let data: Vec<u8> = (0..37u8).collect();
    let mut fast = data.clone();
    apply_mask(&mut fast, key);
    let slow: Vec<u8> = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(fast, slow);
}

#[test]
fn a_deflated_message_inflates_back_per_rfc7692() {
    let text: Vec<u8> = b"hello hello gateway session ".repeat(40);
    let body = deflate_message(&text);
    assert!(body.len() < text.len() / 4, "{} bytes", body.len());
    assert!(!body.ends_with(&[0, 0, 0xff, 0xff]));
    // A receiver appends the four bytes back and inflates (RFC 7692 §7.2.2).
    let mut tail = body.clone();
    tail.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut z = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(text.len() + 16);
    z.decompress_vec(&tail, &mut out, flate2::FlushDecompress::Sync)
        .expect("inflate");
    assert_eq!(out, text);
}

#[test]
fn reserved_bits_are_read() {
    let mut b = Vec::new();
    put_header(&mut b, true, OP_TEXT, 3, None);
    b[0] |= 0x40;
    let h = parse_header(&b).unwrap();
    assert_eq!((h.rsv, h.opcode, h.fin), (0x40, OP_TEXT, true));
}
