//! Shared pieces of the benchmark binaries: a minimal WebSocket frame codec
//! (just what an echo server and a load generator need), the client side of
//! the upgrade over TCP or TLS, the set-up of a run (keys, certificate and
//! tokens, child processes, HAProxy and its JWT-checking front end) and
//! small helpers.

use std::io;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub fin: bool,
    /// The reserved bits as they sit in the first byte (`0x40` = RSV1, the
    /// "compressed" bit of permessage-deflate).
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: usize,
    /// Bytes taken by the header itself.
    pub header_len: usize,
}

/// Parses a frame header at the start of `buf`; `None` when incomplete.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = buf[0] & 0x70;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        if buf.len() < at + 4 {
            return None;
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    Some(Header {
        fin,
        rsv,
        opcode,
        mask,
        len,
        header_len: at,
    })
}

/// Appends a frame header. `mask` set means a client frame (the payload must
/// then be masked with it by the caller; an all-zero key needs nothing).
pub fn put_header(out: &mut Vec<u8>, fin: bool, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// XORs `data` (a whole payload) with the mask key.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    if key == [0; 4] {
        return;
    }
    let k32 = u32::from_ne_bytes(key);
    let k64 = (k32 as u64) | ((k32 as u64) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ k64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Finds the end of an HTTP head (index just past `\r\n\r\n`).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// A TCP or TLS client connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

/// Where and how the load generator connects.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// TLS client config when the target terminates TLS.
    pub tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Source addresses to spread connections over (bind before connect).
    pub sources: Vec<IpAddr>,
}

/// A TLS client for the bench's own self-signed certificate. It offers
/// X25519 only (the group both proxies support; rustls would otherwise lead
/// with a post-quantum hybrid OpenSSL 3.0 lacks) and never resumes, so every
/// handshake is a full one. The server's certificate is pinned (compared
/// byte for byte) and the handshake signature is not checked: on loopback
/// against our own certificate that proves nothing, and skipping it leaves
/// the 2 shared cores to the proxies under test.
pub fn tls_client(ca_pem: &str) -> io::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..provider
    };
    let pinned = CertificateDer::pem_file_iter(ca_pem)
        .map_err(io::Error::other)?
        .next()
        .ok_or_else(|| io::Error::other("no certificate in the PEM file"))?
        .map_err(io::Error::other)?
        .into_owned();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            cert: pinned,
            schemes,
        }))
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

#[derive(Debug)]
struct Pinned {
    cert: rustls::pki_types::CertificateDer<'static>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &rustls::pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &rustls::pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// Opens a connection (TCP, then TLS when configured) from source `n`.
pub async fn connect(t: &Target, n: usize) -> io::Result<Conn> {
    let sock = match t.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if !t.sources.is_empty() {
        let ip = t.sources[n % t.sources.len()];
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = sock.connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    match &t.tls {
        None => Ok(Conn::Plain(tcp)),
        Some((c, name)) => Ok(Conn::Tls(Box::new(c.connect(name.clone(), tcp).await?))),
    }
}

/// Sends the upgrade request with a bearer token and reads the answer head.
/// Returns the status code and any bytes read past the head.
pub async fn upgrade(
    c: &mut Conn,
    host: &str,
    path: &str,
    token: Option<&str>,
    extensions: Option<&str>,
) -> io::Result<Upgraded> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(t) = token {
        req.push_str("Authorization: Bearer ");
        req.push_str(t);
        req.push_str("\r\n");
    }
    if let Some(e) = extensions {
        req.push_str("Sec-WebSocket-Extensions: ");
        req.push_str(e);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).await?;
    c.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during upgrade",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            let head = String::from_utf8_lossy(&buf[..end]);
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            return Ok(Upgraded {
                status,
                extensions: header_value(&head, "sec-websocket-extensions"),
                rest: buf[end..].to_vec(),
            });
        }
        if buf.len() > 16 * 1024 {
            return Err(io::Error::other("answer head too large"));
        }
    }
}

/// The answer to an upgrade request.
pub struct Upgraded {
    pub status: u16,
    /// The server's `Sec-WebSocket-Extensions`, if it sent one.
    pub extensions: Option<String>,
    /// Bytes read past the answer's head (frames already sent).
    pub rest: Vec<u8>,
}

/// The first value of header `name` (lowercase) in an HTTP head.
pub fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The permessage-deflate offer (RFC 7692) of the compressing load
/// generator. No context takeover either way: every message is compressed
/// on its own, so one compressed message can be sent (and echoed) again and
/// again and stay a valid message.
pub const DEFLATE_OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

/// `payload` as the body of one permessage-deflate message (RFC 7692
/// §7.2.1): raw DEFLATE ended by a sync flush, without its final
/// `00 00 ff ff`.
pub fn deflate_message(payload: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail; `flush` is the sync flush.
    let _ = z.write_all(payload);
    let _ = z.flush();
    let mut out = z.get_ref().clone();
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

/// Sets SO_LINGER 0 so dropping the socket resets it (no TIME_WAIT left on
/// the load generator's ports).
pub fn abort_on_drop(c: &Conn) {
    let _ = socket2::SockRef::from(c.tcp()).set_linger(Some(std::time::Duration::ZERO));
}

/// Reads a key=value style argument list: `--name value` and `--flag`.
pub struct Args {
    pub items: Vec<String>,
}

impl Args {
    pub fn from_env(skip: usize) -> Self {
        Self {
            items: std::env::args().skip(skip).collect(),
        }
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.items
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.items.get(i + 1))
            .map(|s| s.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        let flag = format!("--{name}");
        self.items.contains(&flag)
    }
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// Resident memory (kB) of a process.
pub fn proc_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU time used by a process so far, in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((ut + st) / 100.0)
}

/// Open file descriptors of a process.
pub fn proc_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Percentile of a sorted slice.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ------------------------------------------------------------ run set-up

/// Child processes of a run, each ended by its own PID (killed, then
/// reaped) when this is dropped.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `openssl` with `args`; fails with the command and its stderr.
pub fn openssl(args: &[&str]) -> io::Result<()> {
    let o = Command::new("openssl").args(args).output()?;
    if !o.status.success() {
        return Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(())
}

/// Writes a run's key material into `work`: the RS256 key pair that signs
/// and verifies the tokens (`jwt_priv.pem`, `jwt_pub.pem`), a self-signed
/// ECDSA P-256 certificate for `localhost` and 127.0.0.1 valid for two days
/// (`tls.crt`, `tls.key`), and both of those in one file for HAProxy
/// (`tls_combined.pem`).
pub fn make_keys(work: &Path) -> io::Result<()> {
    let w = |f: &str| work.join(f).to_string_lossy().into_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &w("jwt_priv.pem"),
    ])?;
    openssl(&[
        "pkey",
        "-in",
        &w("jwt_priv.pem"),
        "-pubout",
        "-out",
        &w("jwt_pub.pem"),
    ])?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &w("tls.key"),
        "-out",
        &w("tls.crt"),
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ])?;
    let combined = std::fs::read_to_string(w("tls.crt"))? + &std::fs::read_to_string(w("tls.key"))?;
    std::fs::write(w("tls_combined.pem"), combined)
}

/// `n` RS256 tokens signed with the private key `priv_pem` (PEM), in order;
/// `claims(i, now)` gives token `i`'s claims, `now` in Unix seconds. The
/// signing is spread over every core.
pub fn sign_rs256<F>(priv_pem: &[u8], n: usize, claims: F) -> io::Result<Vec<String>>
where
    F: Fn(usize, u64) -> serde_json::Value + Sync,
{
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let key = EncodingKey::from_rsa_pem(priv_pem).map_err(io::Error::other)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(io::Error::other)?
        .as_secs();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per = n.div_ceil(threads);
    let header = Header::new(Algorithm::RS256);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let (key, header, claims) = (&key, &header, &claims);
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| encode(header, &claims(i, now), key).map_err(io::Error::other))
                        .collect::<io::Result<Vec<String>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for part in parts {
            all.extend(
                part.join()
                    .map_err(|_| io::Error::other("token signing panicked"))??,
            );
        }
        Ok(all)
    })
}

/// A port free on 127.0.0.1 now (bound, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits up to 10 s for `addr` to accept a connection.
pub fn wait_port(addr: &str) -> io::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::other(format!("nothing listens on {addr}")))
}

/// Starts `cmd` with its stdout piped, adds it to `procs` and reads its
/// first line, `{ready}<addr>` (e.g. `echo ready addr=`); returns the
/// address and the child's PID.
pub fn spawn_ready(cmd: &mut Command, ready: &str, procs: &mut Procs) -> io::Result<(String, u32)> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let pid = child.id();
    let out = child.stdout.take();
    procs.0.push(child);
    let mut line = String::new();
    BufReader::new(out.ok_or_else(|| io::Error::other("no stdout"))?).read_line(&mut line)?;
    let addr = line.trim().strip_prefix(ready).unwrap_or("").to_owned();
    Ok((addr, pid))
}

/// Starts HAProxy in the foreground (`-db`) on the config file `cfg`, its
/// stderr in the file `log`, adds it to `procs` and waits until it listens
/// on 127.0.0.1:`port`; returns its PID. `cmd` runs HAProxy: its binary, or
/// a wrapper such as `taskset` with the binary as an argument.
pub fn start_haproxy(
    mut cmd: Command,
    cfg: &str,
    log: &str,
    port: u16,
    procs: &mut Procs,
) -> io::Result<u32> {
    let child = cmd
        .args(["-db", "-f", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log)?))
        .spawn()?;
    let pid = child.id();
    procs.0.push(child);
    wait_port(&format!("127.0.0.1:{port}"))?;
    Ok(pid)
}

/// The head of wsgate's config for the same work as
/// [`haproxy_jwt_frontend`]: a TLS listener on `bind` with `tls.crt` and
/// `tls.key`, and one RS256 issuer with the public key `jwt_pub.pem` (files
/// in the config's folder), the token taken from the `Authorization` header.
/// The caller adds `routes:` and what else it needs.
pub fn wsgate_config_head(written_by: &str, bind: &str) -> String {
    format!(
        r#"# Written by {written_by}.
log: {{ level: warn, format: text }}
listeners:
  - bind: "{bind}"
    tls: {{ cert: tls.crt, key: tls.key }}
issuers:
  - id: bench
    audiences: [wsgate-bench]
    algorithms: [RS256]
    keys: {{ public_key: jwt_pub.pem }}
    required_claims: [exp]
token_sources: [header]
"#
    )
}

/// The HAProxy 2.6 front end `name` doing wsgate's work: TLS termination on
/// 127.0.0.1:`port` with `combined_pem` (certificate and key), the bearer
/// token verified with `jwt_verify` (RS256, public key `pubkey`), `exp`
/// checked against `date()`, the token removed, then on to `backend`.
pub fn haproxy_jwt_frontend(
    name: &str,
    port: u16,
    combined_pem: &str,
    pubkey: &str,
    backend: &str,
) -> String {
    format!(
        r#"frontend {name}
    bind 127.0.0.1:{port} ssl crt {combined_pem} alpn http/1.1
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless {{ var(txn.bearer) -m found }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_header_query('$.alg') -m str RS256 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(RS256,"{pubkey}") -m int 1 }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 unless {{ var(txn.exp) -m found }}
    http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int le 0 }}
    http-request del-header Authorization
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend {backend}
"#
    )
}
