//! A fast WebSocket echo upstream: answers the upgrade, then sends every data
//! frame back as it came (same opcode, FIN and reserved bits, unmasked),
//! answers pings, and echoes a close frame before closing. All complete
//! frames in one read are answered with one write.
//!
//! A `permessage-deflate` offer is accepted with no context takeover either
//! way. The echo does not inflate: with no context takeover each compressed
//! message stands alone, so a client's compressed message sent back as it
//! came (RSV1 kept) is a valid compressed message from the server. That is
//! all the relay benchmark needs: the proxy in between only passes the
//! compressed frames on.
//!
//! `echo [--bind 127.0.0.1:0]` prints `echo ready addr=IP:PORT` on stdout.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsgate_bench::*;

#[tokio::main]
async fn main() -> io::Result<()> {
    let args = Args::from_env(1);
    let bind = args.get("bind").unwrap_or("127.0.0.1:0").to_owned();
    let listener = TcpListener::bind(&bind).await?;
    println!("echo ready addr={}", listener.local_addr()?);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve(tcp).await;
        });
    }
}

async fn serve(mut tcp: TcpStream) -> io::Result<()> {
    // Handshake.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(e) = head_end(&buf) {
            break e;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let key = header_value(&head, "sec-websocket-key").unwrap_or_default();
    let deflate = header_value(&head, "sec-websocket-extensions").is_some_and(|e| {
        e.split(',')
            .any(|o| o.trim().starts_with("permessage-deflate"))
    });
    let extensions = if deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extensions}\r\n",
        accept_key(&key)
    );
    tcp.write_all(answer.as_bytes()).await?;
    let mut rbuf: Vec<u8> = buf[end..].to_vec();
    drop(buf);
    // Frames. `rbuf[..filled]` holds unparsed bytes.
    let mut filled = rbuf.len();
    if rbuf.len() < 4096 {
        rbuf.resize(4096, 0);
    }
    let mut out = Vec::new();
    loop {
        // Answer every complete frame in the buffer.
        let mut at = 0;
        let mut closing = false;
        while let Some(h) = parse_header(&rbuf[at..filled]) {
            let total = h.header_len + h.len;
            if filled - at < total {
                // Make room for the whole frame.
                if rbuf.len() < total {
                    rbuf.copy_within(at..filled, 0);
                    filled -= at;
                    at = 0;
                    rbuf.resize(total.max(4096), 0);
                }
                break;
            }
            let payload = &mut rbuf[at + h.header_len..at + total];
            if let Some(k) = h.mask {
                apply_mask(payload, k);
            }
            match h.opcode {
                OP_PING => {
                    put_header(&mut out, true, OP_PONG, h.len, None);
                    out.extend_from_slice(payload);
                }
                OP_PONG => {}
                OP_CLOSE => {
                    put_header(&mut out, true, OP_CLOSE, h.len, None);
                    out.extend_from_slice(payload);
                    closing = true;
                }
                op => {
                    let first = out.len();
                    put_header(&mut out, h.fin, op, h.len, None);
                    out[first] |= h.rsv;
                    out.extend_from_slice(payload);
                }
            }
            at += total;
            if closing {
                break;
            }
        }
        if !out.is_empty() {
            tcp.write_all(&out).await?;
            out.clear();
            if out.capacity() > 1 << 20 {
                out.shrink_to(64 * 1024);
            }
        }
        if closing {
            let _ = tcp.shutdown().await;
            return Ok(());
        }
        if at > 0 {
            rbuf.copy_within(at..filled, 0);
            filled -= at;
        }
        if filled == rbuf.len() {
            rbuf.resize(rbuf.len() * 2, 0);
        }
        let n = tcp.read(&mut rbuf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}
