//! The server side of a listener's TLS connections, on rustls's unbuffered
//! API.
//!
//! Why not `tokio_rustls`: its `ServerConnection` keeps a 4 KiB receive
//! buffer for the whole life of a connection, and a WebSocket session spends
//! most of its life idle. Here a connection owns memory only while it holds
//! bytes: ciphertext is read into a per-thread buffer and decrypted from
//! there; only the start of a record whose end has not arrived, plaintext the
//! reader has not taken yet, or ciphertext the socket would not take yet is
//! kept, and each of those buffers is freed as soon as it empties. An idle
//! session costs the rustls connection state and nothing else.
//!
//! Handshake records the connection has to send (the handshake itself,
//! tickets, key updates, alerts) are queued in `out` and written before any
//! application data that follows them.
//!
//! The transport is a type parameter: the listeners run this over a
//! `TcpStream` (the default), and the fuzz target `tls_accept` over an
//! in-memory pipe, so that every split of a client's bytes into reads can be
//! replayed exactly.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::io::buf::Leftover;

/// Largest TLS record on the wire: 16 KiB of plaintext, the most expansion
/// TLS 1.2 allows, and the header.
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;
/// Ciphertext read from the socket per attempt.
const READ_CHUNK: usize = 2 * MAX_RECORD;
/// Plaintext encrypted per write call (the caller writes the rest next time),
/// which bounds the per-thread output buffer.
const WRITE_CHUNK: usize = 64 * 1024;
/// Most ciphertext kept for one unfinished record or handshake message: a
/// 64 KiB handshake message (rustls's own limit) plus one record. rustls
/// refuses a larger message, but keeps every record of a smaller one until it
/// is complete: one sent in records of a few bytes each (a 64 KiB
/// ClientHello in 2-byte records is 224 KiB of ciphertext) is refused here.
const MAX_PARTIAL: usize = 64 * 1024 + MAX_RECORD;

thread_local! {
    /// Ciphertext just read, decrypted in place of a per-connection buffer.
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
    /// Ciphertext just encrypted, on its way to the socket.
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Accepts a TLS connection: runs the handshake to its end.
pub async fn accept<S>(io: S, config: Arc<ServerConfig>) -> io::Result<ServerTls<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut tls = ServerTls {
        io,
        st: State::new(conn),
        partial: Vec::new(),
        out: Leftover::default(),
    };
    std::future::poll_fn(|cx| tls.poll_handshake(cx)).await?;
    Ok(tls)
}

/// A server-side TLS connection after its handshake.
pub struct ServerTls<S = TcpStream> {
    io: S,
    st: State,
    /// The start of a record (or handshake message) whose end has not
    /// arrived yet.
    partial: Vec<u8>,
    /// Encrypted bytes the socket has not taken yet.
    out: Leftover,
}

struct State {
    conn: UnbufferedServerConnection,
    /// Decrypted bytes the reader has not taken yet.
    plain: Leftover,
    /// The peer sent close_notify, or ended its side of the TCP connection.
    read_done: bool,
    close_sent: bool,
    /// rustls reported an error. It is not asked anything again: it would
    /// deframe the bytes that failed once more, or look for handshake
    /// messages it still holds in a buffer that is no longer offered.
    failed: bool,
}

impl State {
    fn new(conn: UnbufferedServerConnection) -> Self {
        Self {
            conn,
            plain: Leftover::default(),
            read_done: false,
            close_sent: false,
            failed: false,
        }
    }
}

/// What to do once the connection can send application data.
enum Intent<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where processing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Every complete record is processed; more bytes are needed.
    NeedInput,
    /// The intent was carried out.
    Done,
    /// Both sides sent close_notify.
    Closed,
}

/// Runs the connection's state machine over `incoming` until it needs more
/// bytes or has carried out `intent`. Application data goes to `dst` while it
/// has room, then to the connection's `plain`; records to send go to `out`.
/// Returns how many bytes of `incoming` are consumed (the rest must be kept
/// and offered again, in front of whatever arrives next).
fn advance(
    st: &mut State,
    incoming: &mut [u8],
    mut dst: Option<&mut ReadBuf<'_>>,
    mut intent: Intent<'_>,
    out: &mut Vec<u8>,
) -> io::Result<(usize, Step)> {
    if st.failed {
        return Err(failed());
    }
    let mut used = 0;
    loop {
        let UnbufferedStatus { mut discard, state } =
            st.conn.process_tls_records(&mut incoming[used..]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                st.failed = true;
                queue_alert(&mut st.conn, out);
                return Err(tls_error(e));
            }
        };
        let step = match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(tls_error)?;
                    discard += rec.discard;
                    deliver(rec.payload, dst.as_deref_mut(), &mut st.plain);
                }
                None
            }
            ConnectionState::ReadEarlyData(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(tls_error)?;
                    discard += rec.discard;
                    deliver(rec.payload, dst.as_deref_mut(), &mut st.plain);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut e) => {
                append(out, |buf| e.encode(buf))?;
                None
            }
            // Queued in `out`, which the callers write before anything else.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(Step::NeedInput),
            ConnectionState::PeerClosed => {
                st.read_done = true;
                None
            }
            ConnectionState::Closed => {
                st.read_done = true;
                Some(Step::Closed)
            }
            ConnectionState::WriteTraffic(mut w) => {
                match std::mem::replace(&mut intent, Intent::Nothing) {
                    Intent::Nothing => Some(Step::NeedInput),
                    Intent::Encrypt(data) => {
                        append(out, |buf| w.encrypt(data, buf))?;
                        Some(Step::Done)
                    }
                    Intent::CloseNotify => {
                        append(out, |buf| w.queue_close_notify(buf))?;
                        st.close_sent = true;
                        Some(Step::Done)
                    }
                }
            }
            other => {
                return Err(io::Error::other(format!(
                    "unexpected TLS connection state {other:?}"
                )))
            }
        };
        used += discard;
        if let Some(step) = step {
            return Ok((used, step));
        }
    }
}

/// After an error rustls has usually queued an alert for the peer; taking it
/// out lets the peer learn why instead of seeing the connection drop.
///
/// Only while records are queued: rustls hands those out before it looks at
/// input again, and once the queue is empty it would deframe. The bytes that
/// failed would fail again (a second fatal alert, which rustls asserts
/// against), and handshake messages it still holds refer to a buffer not
/// offered here (rustls panics on the empty one).
fn queue_alert(conn: &mut UnbufferedServerConnection, out: &mut Vec<u8>) {
    while conn.wants_write() {
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                if append(out, |buf| e.encode(buf)).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

fn deliver(payload: &[u8], dst: Option<&mut ReadBuf<'_>>, plain: &mut Leftover) {
    let direct = match dst {
        // `plain` is always drained before new records are read, so
        // nothing older is waiting when `dst` is offered.
        Some(dst) if plain.is_empty() => {
            let n = payload.len().min(dst.remaining());
            dst.put_slice(&payload[..n]);
            n
        }
        _ => 0,
    };
    plain.extend(&payload[direct..]);
}

/// The two ways rustls says the room it was given is too small.
trait NeedsRoom: std::fmt::Display {
    fn required(&self) -> Option<usize>;
}

impl NeedsRoom for EncodeError {
    fn required(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(*required_size)
            }
            _ => None,
        }
    }
}

impl NeedsRoom for EncryptError {
    fn required(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(*required_size)
            }
            _ => None,
        }
    }
}

/// Appends what rustls writes (a handshake record, encrypted records) to
/// `out`, growing it to the size rustls asks for.
fn append<E: NeedsRoom>(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = 1024;
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match e.required() {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(io::Error::other(e.to_string()));
                }
            },
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the TLS connection failed earlier",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerTls<S> {
    /// Writes queued records; Ready once none is left.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.out.bytes()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has and processes it. Ready(Ok(true)) when
    /// something was read, Ready(Ok(false)) at the end of the peer's stream.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        dst: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<bool>> {
        if self.st.failed {
            return Poll::Ready(Err(failed()));
        }
        READ_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                self.st.read_done = true;
                if !self.partial.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a TLS record",
                    )));
                }
                return Poll::Ready(Ok(false));
            }
            let result = if self.partial.is_empty() {
                let r = self.out.append_with(|out| {
                    advance(&mut self.st, &mut scratch[..n], dst, Intent::Nothing, out)
                });
                if let Ok((used, _)) = &r {
                    self.partial.extend_from_slice(&scratch[*used..n]);
                }
                r
            } else {
                self.partial.extend_from_slice(&scratch[..n]);
                let r = self.out.append_with(|out| {
                    advance(&mut self.st, &mut self.partial, dst, Intent::Nothing, out)
                });
                if let Ok((used, _)) = &r {
                    self.partial.drain(..*used);
                }
                r
            };
            if self.partial.is_empty() {
                self.partial = Vec::new();
            }
            // rustls's own error, with its alert, comes first; the size
            // bound is the last word only on bytes rustls still accepts.
            let result = result.and_then(|r| {
                if self.partial.len() > MAX_PARTIAL {
                    self.st.failed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS record or handshake message too large",
                    ));
                }
                Ok(r)
            });
            match result {
                Ok(_) => Poll::Ready(Ok(true)),
                Err(e) => {
                    // Give a queued alert one chance to leave, without
                    // waiting: the caller is about to hear of the error and
                    // may well drop the connection instead of flushing it.
                    // What leaves is marked sent, or the next write or
                    // shutdown would send it again.
                    if !self.out.is_empty() {
                        if let Poll::Ready(Ok(n)) =
                            Pin::new(&mut self.io).poll_write(cx, self.out.bytes())
                        {
                            self.out.consume(n);
                        }
                    }
                    Poll::Ready(Err(e))
                }
            }
        })
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_flush_out(cx))?;
            if !self.st.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if !ready!(self.poll_fill(cx, None))? {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                )));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let st = &mut this.st;
            if !st.plain.is_empty() {
                st.plain.read_into(dst);
                return Poll::Ready(Ok(()));
            }
            if st.read_done || dst.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Records the connection queued while reading (a key update's
            // answer, say) leave as soon as the socket takes them.
            if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
                return Poll::Ready(Err(e));
            }
            let before = dst.filled().len();
            match ready!(this.poll_fill(cx, Some(dst))) {
                Ok(more) => {
                    if !more || dst.filled().len() > before {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(e) => {
                    // Records decrypted before the one that failed may
                    // have gone to `dst`, and a caller takes nothing from a
                    // failed read. They go back in front of `plain`, so
                    // that a read after the error returns them in order
                    // rather than the bytes that followed them.
                    this.st.plain.unread(&dst.filled()[before..]);
                    dst.set_filled(before);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        if this.st.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(WRITE_CHUNK)];
        WRITE_SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            out.clear();
            let (used, step) = advance(
                &mut this.st,
                &mut this.partial,
                None,
                Intent::Encrypt(data),
                &mut out,
            )?;
            this.partial.drain(..used);
            if this.partial.is_empty() {
                this.partial = Vec::new();
            }
            match step {
                Step::Done => {}
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Step::NeedInput => {
                    return Poll::Ready(Err(io::Error::other("TLS handshake not complete")))
                }
            }
            // Whatever the socket does not take now is kept, and written
            // before anything else.
            let mut at = 0;
            while at < out.len() {
                match Pin::new(&mut this.io).poll_write(cx, &out[at..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if at < out.len() {
                this.out.extend(&out[at..]);
            }
            if out.capacity() > 2 * (WRITE_CHUNK + 4 * MAX_RECORD) {
                *out = Vec::new();
            }
            Poll::Ready(Ok(data.len()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.st.close_sent {
            // Mark first: a failure here must not be retried forever.
            this.st.close_sent = true;
            let r = this.out.append_with(|out| {
                advance(
                    &mut this.st,
                    &mut this.partial,
                    None,
                    Intent::CloseNotify,
                    out,
                )
            });
            if let Ok((used, _)) = r {
                this.partial.drain(..used);
            }
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
