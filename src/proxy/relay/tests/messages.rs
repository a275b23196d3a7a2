//! The gateway's own messages go between messages only; client messages
//! for the gateway are taken, fragmented or not.

use super::*;

/// The relay's next event, within a bound (a test must fail, not hang).
async fn next_event(relay: &mut Relay<'_, DuplexStream, DuplexStream>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), relay.run())
        .await
        .expect("the relay reports an event")
}

/// A frame with FIN cleared: the first or a middle fragment of a message.
fn fragment(op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = encode(op, payload, mask).to_vec();
    f[0] &= 0x7F;
    f
}

#[tokio::test]
async fn gateway_messages_wait_for_the_end_of_an_upstream_message() {
    let fx = Fixture::new();
    let icpt = Echoer;
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, Some(&icpt));
    let first = fragment(OP_TEXT, b"part one, ", None);
    upstream.write_all(&first).await.unwrap();
    drive(&mut relay, read_exactly(&mut client, first.len())).await;
    // The answer is due while the upstream's message is unfinished ...
    relay.send_to_client("answer");
    let ping = encode(OP_PING, b"p", None);
    upstream.write_all(&ping).await.unwrap();
    let got = drive(&mut relay, read_exactly(&mut client, ping.len())).await;
    assert_eq!(
        got,
        &ping[..],
        "control frames still pass between fragments"
    );
    // ... and goes out right after its last fragment.
    let last = encode(OP_CONTINUATION, b"part two", None);
    upstream.write_all(&last).await.unwrap();
    let answer = encode(OP_TEXT, b"answer", None);
    let got = drive(
        &mut relay,
        read_exactly(&mut client, last.len() + answer.len()),
    )
    .await;
    assert_eq!(&got[..last.len()], &last[..]);
    assert_eq!(&got[last.len()..], &answer[..]);
    // Between messages, an answer goes out at once.
    relay.send_to_client("again");
    let again = encode(OP_TEXT, b"again", None);
    let got = drive(&mut relay, read_exactly(&mut client, again.len())).await;
    assert_eq!(got, &again[..]);
}

#[tokio::test]
async fn a_fragmented_gateway_message_is_taken_whole() {
    let fx = Fixture::new();
    let icpt = Echoer;
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, Some(&icpt));
    let ping = encode(OP_PING, b"p", MASK);
    let after = encode(OP_TEXT, b"app", MASK);
    // Messages for the gateway are JSON objects.
    let mut burst = fragment(OP_TEXT, b" {gw:", MASK);
    burst.extend_from_slice(&ping);
    burst.extend_from_slice(&fragment(OP_CONTINUATION, b"re", MASK));
    burst.extend_from_slice(&encode(OP_CONTINUATION, b"fresh}", MASK));
    burst.extend_from_slice(&after);
    client.write_all(&burst).await.unwrap();
    let ev = next_event(&mut relay).await;
    assert_eq!(ev, Event::Intercepted(" {gw:refresh}".into()));
    relay.send_to_client("answered");
    let reply = encode(OP_TEXT, b"answered", None);
    let (up, down) = drive(&mut relay, async {
        let up = read_exactly(&mut upstream, ping.len() + after.len()).await;
        (up, read_exactly(&mut client, reply.len()).await)
    })
    .await;
    // The ping between its fragments passes on; none of the message does.
    let mut expected = ping.to_vec();
    expected.extend_from_slice(&after);
    assert_eq!(up, expected);
    assert_eq!(down, &reply[..]);
}

#[tokio::test]
async fn fragmented_text_not_for_the_gateway_passes_unchanged() {
    let icpt = Echoer;
    // Held whole and released: JSON-looking, or too long to be the gateway's.
    let long = vec![b'x'; MAX_INTERCEPTED as usize];
    let cases: [(&[u8], &[u8]); 3] = [
        (b"{\"type\":", b"\"app\"}"),
        (b"{gw:", &long),
        (b" ", b"plain"),
    ];
    for (a, b) in cases {
        let fx = Fixture::new();
        let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, Some(&icpt));
        let mut msg = fragment(OP_TEXT, a, MASK);
        msg.extend_from_slice(&encode(OP_CONTINUATION, b, MASK));
        client.write_all(&msg).await.unwrap();
        let got = drive(&mut relay, read_exactly(&mut upstream, msg.len())).await;
        assert!(got == msg, "{:?}", String::from_utf8_lossy(a));
    }
    // Text that cannot be a JSON object goes on at its first fragment.
    let fx = Fixture::new();
    let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, Some(&icpt));
    let first = fragment(OP_TEXT, b"chat: hello", MASK);
    client.write_all(&first).await.unwrap();
    let got = drive(&mut relay, read_exactly(&mut upstream, first.len())).await;
    assert_eq!(got, first);
}

/// A frame with RSV1 set (a compressed message's first frame, RFC 7692).
fn with_rsv1(mut frame: Vec<u8>) -> Vec<u8> {
    frame[0] |= 0x40;
    frame
}

#[test]
fn rsv1_passes_only_where_compression_was_agreed() {
    let mask = Some([1, 2, 3, 4]);
    let first = with_rsv1(fragment(OP_TEXT, b"compressed", mask));
    // Not agreed: RSV1 is a protocol error.
    let mut dir = Dir::new(true);
    scan_in_chunks(&mut dir, &first, &[], u64::MAX);
    assert!(dir.event.is_some());

    // Agreed: the first frame of a message passes unchanged, byte for byte.
    let mut dir = Dir::new(true);
    dir.deflate = true;
    let mut input = first.clone();
    input.extend_from_slice(&encode(OP_CONTINUATION, b"tail", mask));
    let got = scan_in_chunks(&mut dir, &input, &[3], u64::MAX);
    assert!(dir.event.is_none(), "{:?}", dir.event);
    assert_eq!(got, input);

    // Never on a continuation frame or a control frame, agreed or not.
    for bad in [
        {
            let mut v = fragment(OP_TEXT, b"a", mask);
            v.extend_from_slice(&with_rsv1(encode(OP_CONTINUATION, b"b", mask).to_vec()));
            v
        },
        with_rsv1(encode(OP_PING, b"p", mask).to_vec()),
    ] {
        let mut dir = Dir::new(true);
        dir.deflate = true;
        scan_in_chunks(&mut dir, &bad, &[], u64::MAX);
        assert!(dir.event.is_some());
    }
}
