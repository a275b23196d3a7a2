//! Close frames: checked, passed on, and each side shut down once its
//! close handshake is done.

use super::*;

/// Close payloads a peer may not send (Autobahn 7.3.2, 7.5.1, 7.9.x).
fn malformed_close_payloads() -> Vec<Vec<u8>> {
    let mut bad = vec![vec![0x03]];
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        bad.push(code.to_be_bytes().to_vec());
    }
    // 1000 with a reason that is not UTF-8.
    bad.push(vec![
        0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xED, 0xA0, 0x80,
    ]);
    bad
}

/// What the reason of a failed connection sends each side; the pump's
/// mapping, repeated here so the relay test reads end to end.
fn fail_both(reason: CloseReason) -> (Option<CloseFrame>, Option<CloseFrame>) {
    (reason.to_client(), reason.to_upstream())
}

/// Every malformed close payload, sent by `from`, fails that side: the relay
/// reports its protocol error, then the client receives exactly the bytes
/// `client_gets` and the upstream exactly one masked close frame holding
/// `upstream_gets`. The malformed close itself reaches neither side.
async fn malformed_close_fails(from: Side, client_gets: &[u8], upstream_gets: CloseFrame) {
    for payload in malformed_close_payloads() {
        let fx = Fixture::new();
        let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, None);
        let (event, reason) = match from {
            Side::Client => {
                client
                    .write_all(&encode(OP_CLOSE, &payload, MASK))
                    .await
                    .unwrap();
                (Event::ClientProtocol, CloseReason::ClientProtocol)
            }
            Side::Upstream => {
                upstream
                    .write_all(&encode(OP_CLOSE, &payload, None))
                    .await
                    .unwrap();
                (Event::UpstreamProtocol, CloseReason::UpstreamProtocol)
            }
        };
        assert_eq!(relay.run().await, event, "{payload:?}");
        let (to_client, to_upstream) = fail_both(reason);
        relay
            .finish(to_client, to_upstream, Duration::from_millis(200))
            .await;
        drop(relay);
        let mut down = Vec::new();
        client.read_to_end(&mut down).await.unwrap();
        assert_eq!(&down[..], client_gets, "{payload:?}");
        let mut up = Vec::new();
        upstream.read_to_end(&mut up).await.unwrap();
        let h = frame::parse(&up).unwrap().unwrap();
        assert_eq!(
            (h.opcode, h.len + h.payload_len as usize),
            (OP_CLOSE, up.len())
        );
        let mut body = up[h.len..].to_vec();
        frame::unmask(&mut body, h.mask.expect("masked"), 0);
        assert_eq!(frame::parse_close(&body), Ok(upstream_gets.clone()));
    }
}

#[tokio::test]
async fn malformed_client_close_fails_the_client_with_1002() {
    // The upstream never sees the malformed close, only the gateway's 1001.
    malformed_close_fails(
        Side::Client,
        &close(1002, "protocol error", None),
        CloseFrame::new(1001, ""),
    )
    .await;
}

#[tokio::test]
async fn malformed_upstream_close_fails_the_upstream_with_1002() {
    malformed_close_fails(
        Side::Upstream,
        &close(1014, "upstream protocol error", None),
        CloseFrame::new(1002, "protocol error"),
    )
    .await;
}

#[tokio::test]
async fn sendable_close_codes_pass_unchanged() {
    // Autobahn 7.7.x: every assigned code (1012-1014 included) and the
    // application ranges pass through, reason and all.
    for code in [
        1000u16, 1001, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let fx = Fixture::new();
        let (mut relay, mut client, mut upstream) = fx.relay(1 << 20, None);
        let c_close = close(code, "κόσμε", MASK);
        client.write_all(&c_close).await.unwrap();
        let got = drive(&mut relay, read_exactly(&mut upstream, c_close.len())).await;
        assert_eq!(got, &c_close[..], "{code}");
        let u_close = close(code, "", None);
        upstream.write_all(&u_close).await.unwrap();
        assert_eq!(
            relay.run().await,
            Event::Closed {
                by: Side::Client,
                frame: CloseFrame::new(code, "κόσμε")
            }
        );
    }
}

#[tokio::test]
async fn each_side_is_shut_down_once_its_close_is_answered() {
    let fx = Fixture::new();
    let (mut relay, mut client, _upstream) = fx.relay(1 << 20, None);
    let to_client = close(4403, "session terminated", None);
    // The upstream never answers its close: the client, which does, must
    // still see its connection end at once, not when the wait runs out.
    let client_side = async {
        let got = read_exactly(&mut client, to_client.len()).await;
        assert_eq!(got, &to_client[..]);
        client
            .write_all(&close(4403, "", MASK))
            .await
            .expect("answer");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("EOF");
        rest
    };
    tokio::select! {
        _ = relay.finish(
            Some(CloseFrame::new(4403, "session terminated")),
            Some(CloseFrame::new(1001, "")),
            Duration::from_secs(30),
        ) => panic!("finish waited for the upstream before closing the client"),
        rest = client_side => assert!(rest.is_empty(), "{rest:?}"),
    }
}
