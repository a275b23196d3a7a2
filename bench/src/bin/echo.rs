//! A fast WebSocket echo upstream: answers the upgrade, then sends every data
//! frame back as it came (same opcode and FIN bit, unmasked), answers pings,
//! and echoes a close frame before closing. All complete frames in one read
//! are answered with one write.
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
    let key = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
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
                    put_header(&mut out, h.fin, op, h.len, None);
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
