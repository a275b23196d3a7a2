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
