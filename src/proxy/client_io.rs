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

/// Sends a close frame to the client and waits (bounded) for its answer.
pub async fn close_client<S>(io: &mut S, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = frame::close(code, reason, None);
    if io.write_all(&frame).await.is_err() || io.flush().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut sink = [0u8; 1024];
        // Anything until the client's close (or the end) is dropped.
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let _ = io.shutdown().await;
}
