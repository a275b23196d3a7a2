//! Talking to a client directly, before or instead of a relay: reading the
//! `first_message` authentication frame, and closing with a code of the
//! gateway's own (`reject: close`, first-message failures).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// The largest authentication message read (a token is at most 16 KiB).
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientIoError {
    #[error("connection ended before authentication")]
    Ended,
    #[error("expected an authentication message")]
    NotText,
    #[error("authentication message too large")]
    TooLarge,
    #[error("protocol error")]
    Protocol,
}

/// Reads client frames until the first text message (pings and pongs before
/// it are skipped). Returns the text and any bytes read past it, which belong
/// to the relay.
pub async fn read_text_message<S>(io: &mut S) -> Result<(String, Vec<u8>), ClientIoError>
where
    S: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Consume every complete frame already buffered.
        while let Some(h) = frame::parse(&buf).map_err(|_| ClientIoError::Protocol)? {
            // Compression is never agreed before authentication.
            if h.rsv1 {
                return Err(ClientIoError::Protocol);
            }
            let total = h.len + h.payload_len as usize;
            if h.payload_len as usize > MAX_AUTH_MESSAGE {
                return Err(ClientIoError::TooLarge);
            }
            if buf.len() < total {
                break;
            }
            let Some(mask) = h.mask else {
                return Err(ClientIoError::Protocol);
            };
            match h.opcode {
                OP_PING | OP_PONG => {
                    buf.drain(..total);
                }
                OP_TEXT if h.fin => {
                    let mut payload = buf[h.len..total].to_vec();
                    frame::unmask(&mut payload, mask, 0);
                    let text = String::from_utf8(payload).map_err(|_| ClientIoError::NotText)?;
                    return Ok((text, buf.split_off(total)));
                }
                OP_CLOSE => return Err(ClientIoError::Ended),
                _ => return Err(ClientIoError::NotText),
            }
        }
        if buf.len() > MAX_AUTH_MESSAGE + frame::MAX_HEADER {
            return Err(ClientIoError::TooLarge);
        }
        let mut chunk = [0u8; 4096];
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|_| ClientIoError::Ended)?;
        if n == 0 {
            return Err(ClientIoError::Ended);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How long a client has to answer the gateway's close frame (contract,
/// "Lifecycle": the connection is closed at most 1 s after the close).
pub const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Sends a close frame to the client, waits for its answer (at most
/// [`CLOSE_ANSWER_WAIT`]) and shuts the connection down as soon as the
/// answer arrives, so a browser's `onclose` fires at once.
pub async fn close_client<S>(io: &mut S, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = frame::close(code, reason, None);
    let _ = tokio::time::timeout(CLOSE_ANSWER_WAIT, async {
        if io.write_all(&frame).await.is_err() || io.flush().await.is_err() {
            return;
        }
        wait_for_close(io).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Reads (and drops) client frames until a close frame's header, the end of
/// the stream or a protocol error.
async fn wait_for_close<S: AsyncRead + Unpin>(io: &mut S) {
    let mut buf = [0u8; 4096];
    // A header split across reads, and payload bytes still to skip.
    let mut head: Vec<u8> = Vec::with_capacity(frame::MAX_HEADER);
    let mut skip: u64 = 0;
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut at = 0;
        while at < n {
            if skip > 0 {
                let k = skip.min((n - at) as u64);
                skip -= k;
                at += k as usize;
                continue;
            }
            let had = head.len();
            let take = (frame::MAX_HEADER - had).min(n - at);
            head.extend_from_slice(&buf[at..at + take]);
            match frame::parse(&head) {
                Ok(Some(h)) if h.opcode == OP_CLOSE => return,
                Ok(Some(h)) => {
                    at += h.len - had;
                    skip = h.payload_len;
                    head.clear();
                }
                Ok(None) => at += take,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    #[tokio::test]
    async fn the_connection_ends_as_soon_as_the_close_is_answered() {
        let (mut near, mut far) = duplex(1 << 16);
        let client = async {
            let mut got = vec![0u8; frame::close(4401, "missing token", None).len()];
            far.read_exact(&mut got).await.expect("close frame");
            // Data and a header split across writes come before the answer.
            let mut answer = frame::encode(frame::OP_BINARY, &[7; 300], MASK).to_vec();
            answer.extend_from_slice(&frame::close(4401, "", MASK));
            far.write_all(&answer[..3]).await.expect("write");
            far.write_all(&answer[3..]).await.expect("write");
            let mut rest = Vec::new();
            far.read_to_end(&mut rest).await.expect("EOF");
            rest
        };
        let (_, rest) = tokio::join!(close_client(&mut near, 4401, "missing token"), client);
        assert!(rest.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_answers_is_given_one_second() {
        let (mut near, _far) = duplex(1 << 16);
        let started = tokio::time::Instant::now();
        close_client(&mut near, 4408, "authentication timeout").await;
        assert_eq!(started.elapsed(), CLOSE_ANSWER_WAIT);
    }
}
