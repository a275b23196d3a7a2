//! The listeners' TLS server side (`tls::stream::accept` and `ServerTls`)
//! against the bytes of a client nobody has authenticated yet, over an
//! in-memory pipe, so that how those bytes are split into reads is part of
//! the input and every run is replayed exactly.
//!
//! Input: `flags`, `pattern` (2 bytes), then ops.
//! - `flags` bit 0: the client ends its stream after the last op (EOF);
//!   bit 1: a real rustls client first completes a handshake (TLS 1.2 when
//!   bit 2 is set, else 1.3) and the ops follow it; bits 3–4: the server's
//!   read buffer (1, 5, 100 or 64 Ki bytes); bit 5: at the end the server
//!   writes a reply and shuts down.
//! - `pattern`: the i-th piece the server gets to read is
//!   `SIZES[pattern >> 4 * (i % 4) & 15]` bytes long (never crossing a
//!   boundary op); the server is polled after each piece.
//! - ops, each a byte (taken `% 8`) and its arguments (`n`: u16, little end):
//!   0 raw `n` bytes; 1 fill: `n` copies of a byte; 2 repeat the previous
//!   op's bytes `n` times; 3 application data (`n` bytes, zeros where the
//!   input runs out), encrypted by the client (raw without a handshake);
//!   4 the client's key update (TLS 1.3; the server refuses a 33rd in a row,
//!   which counts as a raw byte); 5 close_notify (the client's, or a
//!   plaintext alert without a handshake); 6 boundary; 7 the rest of the
//!   input, raw. The stream stops growing at 256 KiB.
//!
//! Oracles besides no panic:
//! - no hang: every poll returns, and once the client's stream has ended,
//!   `accept` and reads complete (the pipe has room, so only more input
//!   could make them wait);
//! - without a handshake, `accept` never succeeds;
//! - everything the server writes is a sequence of whole TLS records; before
//!   any ChangeCipherSpec an alert is a 2-byte plaintext alert, and a fatal
//!   one is the last record;
//! - with a handshake: it completes however the client's flights are split,
//!   and not before the last byte of them; reading on after an error too,
//!   the server reads a prefix of the application data the client sent,
//!   never more, and at least what was sent before the first raw byte; a
//!   stream without raw bytes reads to the end (EOF after close_notify or
//!   the end of the stream) without an error; after a read fails on a bad
//!   record the server writes nothing more (its alert was sent once), and
//!   writing fails; otherwise a reply reaches the client, followed by
//!   close_notify.
#![no_main]

use std::future::Future;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::Path;
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use wsgate::config::TlsConfig;
use wsgate::tls::stream::{accept, ServerTls};
use wsgate::tls::{load_certs, provider, server_config, CertResolver, CertStore};

/// Pipe capacity in each direction: more than either side ever has in
/// flight, so a write never waits.
const PIPE: usize = 1 << 20;
const MAX_STREAM: usize = 256 * 1024;
const SIZES: [usize; 16] = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    9,
    13,
    64,
    255,
    517,
    1500,
    4096,
    16 * 1024 + 5,
    usize::MAX,
];
const READ_SIZES: [usize; 4] = [1, 5, 100, 64 * 1024];
const REPLY: &[u8] = b"the server's reply";
/// A plaintext close_notify alert.
const CLOSE_NOTIFY: [u8; 7] = [21, 3, 3, 0, 2, 1, 0];
/// Key updates rustls takes in a row without application data between
/// them; it refuses the next one.
const KEY_UPDATES: usize = 32;
/// Largest record body: 16 KiB plus the most expansion TLS 1.2 allows.
const MAX_BODY: usize = 16 * 1024 + 2048;

const EOF: u8 = 1;
const HANDSHAKE: u8 = 2;
const TLS12: u8 = 4;
const REPLY_FLAG: u8 = 32;

struct Env {
    server: Arc<ServerConfig>,
    tls12: Arc<ClientConfig>,
    tls13: Arc<ClientConfig>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // A self-signed P-256 certificate for `localhost`, made for this
        // target only.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets/tls_accept");
        let cfg = TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            sni: vec![],
            client_ca: None,
        };
        let store = CertStore::load(&cfg).expect("the target's certificate");
        let server = server_config(&cfg, CertResolver::new(store)).expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(&cfg.cert).unwrap() {
            roots.add(cert).unwrap();
        }
        let client = |version: &'static SupportedProtocolVersion| {
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            // A resumed session would make a run depend on the runs before.
            config.resumption = rustls::client::Resumption::disabled();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        };
        Env {
            server,
            tls12: client(&rustls::version::TLS12),
            tls13: client(&rustls::version::TLS13),
        }
    })
}

/// Polls once. Nothing here waits on a timer or a socket: a pending poll
/// only means "more input needed", and the driver decides what comes next.
fn poll<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    f(&mut Context::from_waker(Waker::noop()))
}

/// The client's end of the pipe.
struct Peer {
    io: DuplexStream,
    /// Everything the server wrote.
    heard: Vec<u8>,
}

impl Peer {
    fn send(&mut self, bytes: &[u8]) {
        match poll(|cx| Pin::new(&mut self.io).poll_write(cx, bytes)) {
            Poll::Ready(Ok(n)) => assert_eq!(n, bytes.len(), "the pipe has room"),
            other => panic!("pipe write: {other:?}"),
        }
    }

    fn end(&mut self) {
        let r = poll(|cx| Pin::new(&mut self.io).poll_shutdown(cx));
        assert!(matches!(r, Poll::Ready(Ok(()))), "pipe shutdown: {r:?}");
    }

    /// Takes in what the server wrote since the last call; returns where it
    /// starts in `heard`.
    fn hear(&mut self) -> usize {
        let start = self.heard.len();
        let mut buf = vec![0; 16 * 1024];
        loop {
            let mut rb = ReadBuf::new(&mut buf);
            match poll(|cx| Pin::new(&mut self.io).poll_read(cx, &mut rb)) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => break,
                Poll::Ready(Ok(())) => self.heard.extend_from_slice(rb.filled()),
                Poll::Ready(Err(e)) => panic!("pipe read: {e}"),
                Poll::Pending => break,
            }
        }
        start
    }
}

/// The sizes of the pieces the server reads.
struct Pieces {
    pattern: u16,
    n: usize,
}

impl Pieces {
    fn split(&mut self, len: usize, boundaries: &[usize]) -> Vec<Range<usize>> {
        let mut pieces = Vec::new();
        let mut bounds = boundaries.iter().copied().peekable();
        let mut at = 0;
        while at < len {
            let size = SIZES[usize::from(self.pattern >> (4 * (self.n % 4))) & 15];
            self.n += 1;
            let mut end = at.saturating_add(size).min(len);
            while let Some(&b) = bounds.peek() {
                if b <= at {
                    bounds.next();
                } else {
                    end = end.min(b);
                    break;
                }
            }
            pieces.push(at..end);
            at = end;
        }
        pieces
    }
}

/// The client's bytes after the handshake (or instead of it).
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    boundaries: Vec<usize>,
    /// Application data the client encrypted, in order.
    data: Vec<u8>,
    /// How much of `data` was sent before the first raw byte.
    clean_data: usize,
    raw: bool,
    close_notify: bool,
    /// Key updates since the last application data.
    key_updates: usize,
}

fn u16le(r: &mut &[u8]) -> usize {
    let mut b = [0; 2];
    for x in &mut b {
        if let Some((&first, rest)) = r.split_first() {
            *x = first;
            *r = rest;
        }
    }
    usize::from(u16::from_le_bytes(b))
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (taken, rest) = r.split_at(n.min(r.len()));
    *r = rest;
    taken
}

/// Encrypts `data` into `out`, a piece at a time: the client buffers only
/// so much.
fn send(client: &mut ClientConnection, mut data: &[u8], out: &mut Vec<u8>) {
    while !data.is_empty() {
        let n = client.writer().write(data).unwrap();
        assert!(n > 0, "the client takes data");
        data = &data[n..];
        while client.wants_write() {
            client.write_tls(out).unwrap();
        }
    }
}

fn build(mut ops: &[u8], mut client: Option<&mut ClientConnection>) -> Stream {
    let mut s = Stream::default();
    let mut last = 0..0;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        let start = s.bytes.len();
        if start >= MAX_STREAM {
            break;
        }
        let room = MAX_STREAM - start;
        let mut raw = true;
        match op % 8 {
            0 => {
                let n = u16le(&mut ops);
                s.bytes.extend_from_slice(take(&mut ops, n.min(room)));
            }
            1 => {
                let n = u16le(&mut ops).min(room);
                let b = take(&mut ops, 1).first().copied().unwrap_or(0);
                s.bytes.resize(start + n, b);
            }
            2 => {
                let n = u16le(&mut ops);
                for _ in 0..n {
                    if s.bytes.len() + last.len() > MAX_STREAM {
                        break;
                    }
                    s.bytes.extend_from_within(last.clone());
                }
            }
            3 => {
                let n = u16le(&mut ops).min(room);
                let mut data = take(&mut ops, n).to_vec();
                data.resize(n, 0);
                match client.as_deref_mut() {
                    Some(c) => {
                        if !s.close_notify {
                            send(c, &data, &mut s.bytes);
                            s.data.extend_from_slice(&data);
                            if !data.is_empty() {
                                s.key_updates = 0;
                            }
                            if !s.raw {
                                s.clean_data = s.data.len();
                            }
                        }
                        raw = false;
                    }
                    None => s.bytes.extend_from_slice(&data),
                }
            }
            4 => {
                raw = false;
                if let Some(c) = client.as_deref_mut() {
                    // TLS 1.2 has no key update: nothing is sent.
                    if !s.close_notify && c.refresh_traffic_keys().is_ok() {
                        s.key_updates += 1;
                        // A refusal is due, like one of raw bytes.
                        raw = s.key_updates > KEY_UPDATES;
                    }
                }
            }
            5 => match client.as_deref_mut() {
                Some(c) => {
                    if !s.close_notify {
                        c.send_close_notify();
                        s.close_notify = true;
                    }
                    raw = false;
                }
                None => s.bytes.extend_from_slice(&CLOSE_NOTIFY),
            },
            6 => s.boundaries.push(start),
            _ => {
                s.bytes.extend_from_slice(take(&mut ops, room));
                ops = &[];
            }
        }
        if let Some(c) = client.as_deref_mut() {
            while c.wants_write() {
                c.write_tls(&mut s.bytes).unwrap();
            }
        }
        if raw && s.bytes.len() > start {
            s.raw = true;
        }
        if op % 8 != 2 {
            last = start..s.bytes.len();
        }
    }
    s
}

/// Checks that `out` is a sequence of whole records.
fn check_records(out: &[u8]) {
    let mut rest = out;
    let mut ccs = false;
    let mut fatal = None;
    let mut i = 0;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "record {i}: torn header {rest:02x?}");
        let typ = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        assert!((20..=23).contains(&typ), "record {i}: type {typ}");
        assert_eq!(rest[1], 3, "record {i}: version {:02x?}", &rest[1..3]);
        assert!((1..=MAX_BODY).contains(&len), "record {i}: length {len}");
        assert!(rest.len() >= 5 + len, "record {i}: torn body");
        if let Some(f) = fatal {
            panic!("record {i} (type {typ}) after a fatal alert (record {f})");
        }
        let body = &rest[5..5 + len];
        match typ {
            20 => ccs = true,
            21 if !ccs => {
                assert_eq!(len, 2, "record {i}: plaintext alert of {len} bytes");
                assert!(matches!(body[0], 1 | 2), "record {i}: alert level");
                if body[0] == 2 {
                    fatal = Some(i);
                }
            }
            _ => {}
        }
        rest = &rest[5 + len..];
        i += 1;
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, p0, p1, ops @ ..] = input else {
        return;
    };
    let pieces = Pieces {
        pattern: u16::from_le_bytes([*p0, *p1]),
        n: 0,
    };
    if flags & HANDSHAKE == 0 {
        without_handshake(*flags, pieces, ops);
    } else {
        with_handshake(*flags, pieces, ops);
    }
});

fn without_handshake(flags: u8, mut pieces: Pieces, ops: &[u8]) {
    let env = env();
    let (client_io, server_io) = tokio::io::duplex(PIPE);
    let mut peer = Peer {
        io: client_io,
        heard: Vec::new(),
    };
    let stream = build(ops, None);
    let mut acc = pin!(accept(server_io, Arc::clone(&env.server)));
    let mut done = match poll(|cx| acc.as_mut().poll(cx)) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    };
    for piece in pieces.split(stream.bytes.len(), &stream.boundaries) {
        if done.is_some() {
            break;
        }
        peer.send(&stream.bytes[piece]);
        if let Poll::Ready(r) = poll(|cx| acc.as_mut().poll(cx)) {
            done = Some(r);
        }
    }
    if done.is_none() && flags & EOF != 0 {
        peer.end();
        match poll(|cx| acc.as_mut().poll(cx)) {
            Poll::Ready(r) => done = Some(r),
            Poll::Pending => panic!("accept still waits after the client's stream ended"),
        }
    }
    if let Some(Ok(_)) = done {
        panic!("a handshake completed without a real client");
    }
    peer.hear();
    check_records(&peer.heard);
    if let Some(&first) = peer.heard.first() {
        assert!(matches!(first, 21 | 22), "first record of type {first}");
    }
}

/// Feeds the client `bytes` the server wrote; their plaintext goes to
/// `plain`. Returns whether close_notify came.
fn client_hears(
    client: &mut ClientConnection,
    mut bytes: &[u8],
    plain: &mut Vec<u8>,
) -> Result<bool, rustls::Error> {
    let mut closed = false;
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).expect("client read_tls");
        client.process_new_packets()?;
        let mut buf = [0; 4096];
        loop {
            match client.reader().read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }
    Ok(closed)
}

/// What the server's reads returned.
struct Reads {
    /// The caller's read buffer.
    buf: Vec<u8>,
    got: Vec<u8>,
    eof: bool,
    /// The first error, and how much the server had written by then.
    error: Option<(io::Error, usize)>,
}

impl Reads {
    /// Reads until the server needs more input, reports the end of the
    /// stream, or fails twice in a row (what it decrypted before a failure
    /// is still readable after it). Returns whether it needs more input.
    fn run(&mut self, server: &mut ServerTls<DuplexStream>, peer: &mut Peer, sent: &[u8]) -> bool {
        let mut failed = false;
        loop {
            let mut rb = ReadBuf::new(&mut self.buf);
            match poll(|cx| Pin::new(&mut *server).poll_read(cx, &mut rb)) {
                Poll::Pending => return true,
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    self.eof = true;
                    return false;
                }
                Poll::Ready(Ok(())) => {
                    failed = false;
                    assert!(!self.eof, "data after the end of the stream");
                    let n = rb.filled().len();
                    self.got.extend_from_slice(rb.filled());
                    assert!(
                        sent.starts_with(&self.got),
                        "the server read {} bytes that are not the client's {} (first {n} new) {:?}",
                        self.got.len(),
                        sent.len(), String::from_utf8_lossy(&self.got)
                    );
                }
                Poll::Ready(Err(e)) => {
                    if self.error.is_none() {
                        peer.hear();
                        self.error = Some((e, peer.heard.len()));
                    }
                    if failed {
                        return false;
                    }
                    failed = true;
                }
            }
        }
    }
}

fn with_handshake(flags: u8, mut pieces: Pieces, ops: &[u8]) {
    let env = env();
    let config = if flags & TLS12 != 0 {
        &env.tls12
    } else {
        &env.tls13
    };
    let (client_io, server_io) = tokio::io::duplex(PIPE);
    let mut peer = Peer {
        io: client_io,
        heard: Vec::new(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(Arc::clone(config), name).unwrap();

    let mut acc = pin!(accept(server_io, Arc::clone(&env.server)));
    let mut server = None;
    for _ in 0..8 {
        let mut flight = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut flight).unwrap();
        }
        let split = pieces.split(flight.len(), &[]);
        let last = split.len();
        for (i, piece) in split.into_iter().enumerate() {
            assert!(
                server.is_none(),
                "accept completed before the client's flight"
            );
            peer.send(&flight[piece]);
            if let Poll::Ready(r) = poll(|cx| acc.as_mut().poll(cx)) {
                assert_eq!(i + 1, last, "accept completed before the flight's end");
                server = Some(r.expect("handshake with a rustls client"));
            }
        }
        let from = peer.hear();
        let mut plain = Vec::new();
        client_hears(&mut client, &peer.heard[from..], &mut plain)
            .expect("the client accepts the server's handshake");
        assert!(plain.is_empty());
        if server.is_some() && !client.is_handshaking() {
            break;
        }
    }
    let mut server = server.expect("the handshake completed");
    assert!(!client.is_handshaking());
    let handshake_end = peer.heard.len();
    check_records(&peer.heard);

    let stream = build(ops, Some(&mut client));
    let mut reads = Reads {
        buf: vec![0; READ_SIZES[usize::from(flags >> 3) & 3]],
        got: Vec::new(),
        eof: false,
        error: None,
    };
    let mut waiting = true;
    for piece in pieces.split(stream.bytes.len(), &stream.boundaries) {
        peer.send(&stream.bytes[piece]);
        waiting = reads.run(&mut server, &mut peer, &stream.data);
    }
    if flags & EOF != 0 {
        peer.end();
        waiting = reads.run(&mut server, &mut peer, &stream.data);
        assert!(
            !waiting,
            "a read still waits after the client's stream ended"
        );
    }
    // Once more: a read after the end or an error must not panic either.
    if !waiting {
        reads.run(&mut server, &mut peer, &stream.data);
    }

    assert!(
        reads.got.len() >= stream.clean_data,
        "the server read {} of the {} bytes sent before any raw byte (error: {:?})",
        reads.got.len(),
        stream.clean_data,
        reads.error.as_ref().map(|(e, _)| e.to_string())
    );
    if !stream.raw {
        if let Some((e, _)) = &reads.error {
            panic!("a read failed on the client's own records: {e}");
        }
        assert_eq!(reads.got.len(), stream.data.len(), "all data read");
        assert_eq!(
            reads.eof,
            stream.close_notify || flags & EOF != 0,
            "end of stream"
        );
    }
    let failed = reads
        .error
        .as_ref()
        .filter(|(e, _)| e.kind() == io::ErrorKind::InvalidData)
        .map(|&(_, written)| written);

    if flags & REPLY_FLAG != 0 {
        let w = poll(|cx| Pin::new(&mut server).poll_write(cx, REPLY));
        let s = poll(|cx| Pin::new(&mut server).poll_shutdown(cx));
        match failed {
            Some(_) => assert!(
                matches!(w, Poll::Ready(Err(_))),
                "writing after a failed read: {w:?}"
            ),
            None => {
                assert!(
                    matches!(w, Poll::Ready(Ok(n)) if n == REPLY.len()),
                    "reply: {w:?}"
                );
                assert!(matches!(s, Poll::Ready(Ok(()))), "shutdown: {s:?}");
            }
        }
    }
    drop(server);
    peer.hear();
    check_records(&peer.heard);
    if let Some(written) = failed {
        assert_eq!(
            peer.heard.len(),
            written,
            "the server wrote more after a read failed"
        );
    } else if flags & REPLY_FLAG != 0 {
        let mut plain = Vec::new();
        let closed = client_hears(&mut client, &peer.heard[handshake_end..], &mut plain)
            .expect("the client reads the server's records");
        assert_eq!(plain, REPLY, "what the client read");
        assert!(closed, "the server's close_notify");
    }
}
