//! [`accept`] and [`ServerTls`] against a real loopback connection and a
//! tokio-rustls client: data both ways in odd sizes over TLS 1.2 and 1.3,
//! records split across socket reads, close_notify both ways, peers that
//! leave mid-record, handshake failures the client hears about, a
//! connection after an error (only closing, never a panic), and backpressure.
//! Where the bytes on the wire must be exact (what a failed connection
//! still sends, what a read after a failure returns), over an in-memory pipe.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, HandshakeKind, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream as ClientTls;
use tokio_rustls::TlsConnector;

use super::*;
use crate::config::TlsConfig;
use crate::tls::{provider, server_config, CertResolver, CertStore};

/// Bound for anything that should happen promptly: generous, since only a
/// hang should ever reach it.
const PROMPTLY: Duration = Duration::from_secs(20);
/// Bound for the bulk transfers (debug builds on a busy machine).
const BULK: Duration = Duration::from_secs(120);

const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const BOTH: [&SupportedProtocolVersion; 2] = [TLS12, TLS13];

async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

/// A listener's server config built the way the gateway builds it, from PEM
/// files in a temporary folder.
struct Server {
    config: Arc<ServerConfig>,
    /// The server's self-signed certificate, which clients trust.
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn new() -> Self {
        Self::build(None)
    }

    /// Clients must present a certificate chaining to `client_ca` (PEM).
    fn requiring_client_certs(client_ca: &str) -> Self {
        Self::build(Some(client_ca))
    }

    fn build(client_ca: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let cfg = TlsConfig {
            cert: write("server.pem", &ck.cert.pem()),
            key: write("server.key", &ck.signing_key.serialize_pem()),
            sni: vec![],
            client_ca: client_ca.map(|pem| write("client-ca.pem", pem)),
        };
        let config =
            server_config(&cfg, CertResolver::new(CertStore::load(&cfg).unwrap())).unwrap();
        Self {
            config,
            cert: ck.cert.der().clone(),
            _dir: dir,
        }
    }

    fn client(&self, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
        Arc::new(self.client_builder(version).with_no_client_auth())
    }

    fn client_builder(
        &self,
        version: &'static SupportedProtocolVersion,
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
    }

    /// Accepts one connection with [`accept`] in a task of its own.
    async fn serve_once(&self) -> (SocketAddr, JoinHandle<io::Result<ServerTls>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::clone(&self.config);
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            accept(tcp, config).await
        });
        (addr, task)
    }

    /// A completed handshake: the server's side and the client's.
    async fn pair(&self, client: Arc<ClientConfig>) -> (ServerTls, ClientTls<TcpStream>) {
        let (addr, server) = self.serve_once().await;
        let client = within(PROMPTLY, "client handshake", connect(addr, client))
            .await
            .expect("client handshake");
        let server = within(PROMPTLY, "server handshake", server)
            .await
            .unwrap()
            .expect("server handshake");
        (server, client)
    }
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<ClientTls<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connect_over(tcp, config).await
}

async fn connect_over(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
) -> io::Result<ClientTls<TcpStream>> {
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Equal, or a panic naming the first difference (not two megabytes of bytes).
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at} of {}", want.len());
    }
    assert_eq!(got.len(), want.len(), "{what}: length");
}

/// The server echoes everything through a `buf`-sized read buffer until the
/// client's close_notify, then closes in turn.
fn echo(mut server: ServerTls, buf: usize) -> JoinHandle<io::Result<(ServerTls, usize)>> {
    tokio::spawn(async move {
        let mut buf = vec![0; buf];
        let mut total = 0;
        loop {
            let n = server.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            server.write_all(&buf[..n]).await?;
            total += n;
        }
        server.shutdown().await?;
        Ok((server, total))
    })
}

/// Writes `data` in random-sized pieces (1 B to 40 KiB), then closes.
async fn write_in_pieces<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    seed: u64,
) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = 0;
    while at < data.len() {
        let n = rng.random_range(1..=40 * 1024).min(data.len() - at);
        w.write_all(&data[at..at + n]).await?;
        at += n;
    }
    w.shutdown().await
}

/// 2 MiB from the client in random-sized writes, echoed by the server through
/// a `server_buf`-byte read buffer, compared byte for byte.
async fn round_trip(version: &'static SupportedProtocolVersion, server_buf: usize, seed: u64) {
    const LEN: usize = 2 * 1024 * 1024;
    let srv = Server::new();
    let (server, client) = srv.pair(srv.client(version)).await;
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(version.version),
        "negotiated version"
    );
    let echo = echo(server, server_buf);
    let data = Arc::new(random_bytes(LEN, seed));
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = {
        let data = Arc::clone(&data);
        tokio::spawn(async move {
            write_in_pieces(&mut wr, &data, seed).await?;
            Ok::<_, io::Error>(wr)
        })
    };
    let mut echoed = Vec::with_capacity(LEN);
    within(BULK, "echoed data", rd.read_to_end(&mut echoed))
        .await
        .expect("client read to a clean end");
    assert_same("echoed data", &echoed, &data);
    within(PROMPTLY, "client writer", writer)
        .await
        .unwrap()
        .unwrap();
    let (server, total) = within(PROMPTLY, "echo", echo).await.unwrap().unwrap();
    assert_eq!(total, LEN);
    // Everything delivered and written: nothing is kept.
    assert_idle(&server);
}

fn assert_idle(server: &ServerTls) {
    assert_eq!(server.partial.capacity(), 0, "partial record buffer kept");
    assert_eq!(server.st.plain.capacity(), 0, "plaintext buffer kept");
    assert_eq!(server.out.capacity(), 0, "output buffer kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls13_small_reader() {
    round_trip(TLS13, 100, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls13_large_reader() {
    round_trip(TLS13, 64 * 1024, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls12_small_reader() {
    round_trip(TLS12, 100, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls12_large_reader() {
    round_trip(TLS12, 64 * 1024, 4).await;
}

/// Forwards client → server in random 1..=9-byte segments, so nearly every
/// socket read on the server ends inside a record (the handshake's too), and
/// server → client unchanged.
async fn dribbling_proxy(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(to).await.unwrap();
        server.set_nodelay(true).unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        });
        let mut rng = StdRng::seed_from_u64(9);
        let mut buf = vec![0; 4096];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut at = 0;
            while at < n {
                let k = rng.random_range(1..=9).min(n - at);
                if sw.write_all(&buf[at..at + k]).await.is_err() {
                    return;
                }
                at += k;
                tokio::task::yield_now().await;
            }
        }
        let _ = sw.shutdown().await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_records_arriving_a_few_bytes_at_a_time() {
    for (i, version) in BOTH.into_iter().enumerate() {
        let srv = Server::new();
        let (addr, server) = srv.serve_once().await;
        let proxy = dribbling_proxy(addr).await;
        let client = within(
            PROMPTLY,
            "client handshake",
            connect(proxy, srv.client(version)),
        )
        .await
        .expect("client handshake");
        let server = within(PROMPTLY, "server handshake", server)
            .await
            .unwrap()
            .expect("server handshake");
        let echo = echo(server, 1000);
        let data = Arc::new(random_bytes(100 * 1024, 10 + i as u64));
        let (mut rd, mut wr) = tokio::io::split(client);
        let writer = {
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                write_in_pieces(&mut wr, &data, 20 + i as u64).await?;
                Ok::<_, io::Error>(wr)
            })
        };
        let mut echoed = Vec::new();
        within(BULK, "echoed data", rd.read_to_end(&mut echoed))
            .await
            .expect("client read to a clean end");
        assert_same("echoed data", &echoed, &data);
        within(PROMPTLY, "client writer", writer)
            .await
            .unwrap()
            .unwrap();
        let (server, total) = within(PROMPTLY, "echo", echo).await.unwrap().unwrap();
        assert_eq!(total, data.len(), "{version:?}");
        assert_idle(&server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_larger_than_one_record() {
    // A certificate of about 20 KiB: its handshake message spans two records.
    let names: Vec<String> = (0..600)
        .map(|i| format!("client-{i:04}.clients.wsgate.test"))
        .collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(
        cert.der().len() > 16 * 1024,
        "certificate too small for the test"
    );
    let srv = Server::requiring_client_certs(&cert.pem());
    for version in BOTH {
        let client = Arc::new(
            srv.client_builder(version)
                .with_client_auth_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        );
        let (addr, server) = srv.serve_once().await;
        let proxy = dribbling_proxy(addr).await;
        let mut client = within(PROMPTLY, "client handshake", connect(proxy, client))
            .await
            .expect("client handshake");
        let mut server = within(PROMPTLY, "server handshake", server)
            .await
            .unwrap()
            .expect("server handshake");
        let seen = server.st.conn.peer_certificates().map(|c| c.to_vec());
        assert_eq!(seen, Some(vec![cert.der().clone()]), "{version:?}");
        client.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        within(PROMPTLY, "server read", server.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(&got, b"ping");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_notify_is_eof_and_server_close_notify_ends_the_client_cleanly() {
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut client) = srv.pair(srv.client(version)).await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();

        let mut got = [0; 10];
        within(PROMPTLY, "server read", server.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(&got, b"last words");
        let mut buf = [0; 64];
        for _ in 0..2 {
            let n = within(PROMPTLY, "server read at the end", server.read(&mut buf)).await;
            assert_eq!(n.unwrap(), 0, "{version:?}: EOF after close_notify");
        }

        // The other direction is still open until the server closes it.
        server.write_all(b"reply").await.unwrap();
        within(PROMPTLY, "server shutdown", server.shutdown())
            .await
            .unwrap();
        let mut rest = Vec::new();
        within(PROMPTLY, "client read", client.read_to_end(&mut rest))
            .await
            .expect("a clean end, not an unexpected EOF");
        assert_eq!(rest, b"reply");
        assert!(
            server.write_all(b"more").await.is_err(),
            "writing after close_notify"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_first_and_still_reads() {
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut client) = srv.pair(srv.client(version)).await;
        server.write_all(b"bye").await.unwrap();
        within(PROMPTLY, "server shutdown", server.shutdown())
            .await
            .unwrap();
        let mut got = Vec::new();
        within(PROMPTLY, "client read", client.read_to_end(&mut got))
            .await
            .expect("a clean end");
        assert_eq!(got, b"bye");

        client.write_all(b"late").await.unwrap();
        client.shutdown().await.unwrap();
        let mut late = Vec::new();
        within(PROMPTLY, "server read", server.read_to_end(&mut late))
            .await
            .unwrap();
        assert_eq!(late, b"late", "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_is_an_unclean_end_for_the_client() {
    // The counterpart of the test above: without poll_shutdown's
    // close_notify the client does see the difference.
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut client) = srv.pair(srv.client(version)).await;
        server.write_all(b"bye").await.unwrap();
        server.flush().await.unwrap();
        drop(server);
        let mut got = Vec::new();
        let e = within(PROMPTLY, "client read", client.read_to_end(&mut got))
            .await
            .expect_err("EOF without close_notify");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{version:?}: {e}");
        assert_eq!(got, b"bye");
    }
}

/// The first flight of a client.
fn client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_leaving_mid_client_hello_fails_the_handshake() {
    let srv = Server::new();
    let hello = client_hello(srv.client(TLS13));
    assert!(hello.len() > 100);
    for cut in [0, 3, 5, hello.len() / 2, hello.len() - 1] {
        let (addr, server) = srv.serve_once().await;
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&hello[..cut]).await.unwrap();
        raw.shutdown().await.unwrap();
        let e = within(PROMPTLY, "accept", server)
            .await
            .unwrap()
            .err()
            .unwrap_or_else(|| panic!("cut at {cut}: handshake succeeded"));
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_leaving_mid_record_is_a_read_error() {
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut client) = srv.pair(srv.client(version)).await;
        client.write_all(b"whole").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 5];
        within(PROMPTLY, "server read", server.read_exact(&mut got))
            .await
            .unwrap();
        // The header of a 256-byte application data record and a third of
        // its body, then the end of the stream.
        let (mut raw, _) = client.into_inner();
        let mut torn = vec![0x17, 0x03, 0x03, 0x01, 0x00];
        torn.extend_from_slice(&[0xaa; 85]);
        raw.write_all(&torn).await.unwrap();
        raw.shutdown().await.unwrap();
        let mut buf = [0; 64];
        let e = within(PROMPTLY, "server read", server.read(&mut buf))
            .await
            .expect_err("a torn record must not read as a clean end");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{version:?}: {e}");
        assert_eq!(server.partial.len(), torn.len(), "the torn record is kept");
    }
}

/// Polls one read, which must not complete, until the server holds `len`
/// bytes of an unfinished record.
/// An application-data record whose 32 bytes cannot decrypt (bad MAC).
fn undecryptable_record() -> Vec<u8> {
    let mut r = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    r.extend_from_slice(&[0x20; 32]);
    r
}

/// Reads from `server`, which must fail on an undecryptable record.
async fn read_fails_on_bad_record<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut ServerTls<S>,
    buf: &mut [u8],
    version: &SupportedProtocolVersion,
) {
    let e = within(PROMPTLY, "server read", server.read(buf))
        .await
        .expect_err("a record that does not decrypt");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{version:?}: {e}");
}

async fn hold_partial(server: &mut ServerTls, len: usize) {
    within(PROMPTLY, "partial record", async {
        while server.partial.len() < len {
            server.io.readable().await.unwrap();
            let mut buf = [0; 64];
            let mut rb = ReadBuf::new(&mut buf);
            let r = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut *server).poll_read(cx, &mut rb))
            });
            assert!(r.await.is_pending(), "a read completed on a partial record");
        }
    })
    .await;
    assert_eq!(server.partial.len(), len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_bad_record_the_connection_only_closes() {
    for version in BOTH {
        let srv = Server::new();
        let (mut server, client) = srv.pair(srv.client(version)).await;
        let (mut raw, mut conn) = client.into_inner();
        // A record that cannot decrypt, its start in one read and the rest
        // in the next, so that the failure happens on `partial`.
        let bad = undecryptable_record();
        raw.write_all(&bad[..4]).await.unwrap();
        hold_partial(&mut server, 4).await;
        raw.write_all(&bad[4..]).await.unwrap();
        let mut buf = [0; 64];
        read_fails_on_bad_record(&mut server, &mut buf, version).await;
        // What the relay does with a client it lost: write what is owed,
        // then shut down. Neither may hand the failed bytes to rustls again.
        assert!(server.write_all(b"late").await.is_err(), "{version:?}");
        let _ = within(PROMPTLY, "server shutdown", server.shutdown()).await;
        drop(server);
        // The client hears why.
        let mut answer = Vec::new();
        within(PROMPTLY, "raw read", raw.read_to_end(&mut answer))
            .await
            .unwrap();
        let mut rd = &answer[..];
        let heard = loop {
            if rd.is_empty() {
                break None;
            }
            conn.read_tls(&mut rd).unwrap();
            if let Err(e) = conn.process_new_packets() {
                break Some(e);
            }
        };
        assert_eq!(
            heard,
            Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac)),
            "{version:?}"
        );
    }
}

/// A handshake over an in-memory pipe, with every record the server sent
/// during it (TLS 1.3 tickets too) already taken in by the client, so that
/// whatever arrives on `raw` later was written later.
async fn pair_in_memory(
    srv: &Server,
    version: &'static SupportedProtocolVersion,
) -> (
    ServerTls<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
    rustls::ClientConnection,
) {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let name = ServerName::try_from("localhost").unwrap();
    let connector = TlsConnector::from(srv.client(version));
    let (client, server) = within(PROMPTLY, "handshake", async {
        tokio::join!(
            connector.connect(name, client_io),
            accept(server_io, Arc::clone(&srv.config))
        )
    })
    .await;
    let (server, (mut raw, mut conn)) = (server.unwrap(), client.unwrap().into_inner());
    // `accept` returns only after its last records are written.
    let mut rest = vec![0; 64 * 1024];
    loop {
        let mut rb = ReadBuf::new(&mut rest);
        let r = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut raw).poll_read(cx, &mut rb)));
        if r.await.is_pending() {
            break;
        }
        let mut rd = rb.filled();
        while !rd.is_empty() {
            conn.read_tls(&mut rd).unwrap();
            conn.process_new_packets().unwrap();
        }
    }
    (server, raw, conn)
}

#[tokio::test]
async fn the_alert_after_a_failed_read_is_sent_once() {
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut raw, mut conn) = pair_in_memory(&srv, version).await;
        raw.write_all(&undecryptable_record()).await.unwrap();
        let mut buf = [0; 64];
        read_fails_on_bad_record(&mut server, &mut buf, version).await;
        // Everything a caller may still do with a failed connection.
        let e = within(PROMPTLY, "read again", server.read(&mut buf)).await;
        assert!(e.is_err(), "{version:?}: read after the failure: {e:?}");
        assert!(server.write_all(b"late").await.is_err(), "{version:?}");
        let _ = within(PROMPTLY, "server shutdown", server.shutdown()).await;
        drop(server);
        let mut answer = Vec::new();
        within(PROMPTLY, "raw read", raw.read_to_end(&mut answer))
            .await
            .unwrap();
        // One record, and it is the alert.
        assert!(answer.len() > 5, "{version:?}: {answer:?}");
        let len = usize::from(u16::from_be_bytes([answer[3], answer[4]]));
        assert_eq!(answer.len(), 5 + len, "{version:?}: more than one record");
        conn.read_tls(&mut &answer[..]).unwrap();
        assert_eq!(
            conn.process_new_packets().err(),
            Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac)),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn data_read_with_a_bad_record_stays_in_order() {
    use std::io::Write as _;
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut raw, mut conn) = pair_in_memory(&srv, version).await;
        // A good record and a bad one, taken in by the same read.
        conn.writer().write_all(b"whole").unwrap();
        let mut bytes = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut bytes).unwrap();
        }
        bytes.extend_from_slice(&undecryptable_record());
        raw.write_all(&bytes).await.unwrap();
        // One byte at a time, so the good record is split between the
        // caller's buffer and the connection's.
        let mut one = [0; 1];
        read_fails_on_bad_record(&mut server, &mut one, version).await;
        // A caller that reads on gets the good record whole, then the
        // failure again: never the bytes behind a gap.
        let mut got = Vec::new();
        loop {
            match within(PROMPTLY, "read on", server.read(&mut one)).await {
                Ok(0) => panic!("{version:?}: EOF after a failure"),
                Ok(n) => got.extend_from_slice(&one[..n]),
                Err(_) => break,
            }
        }
        assert_eq!(got, b"whole", "{version:?}");
    }
}

/// Seals a TLS 1.3 record (AES-128-GCM) the way a client with these keys
/// would: any content, including what a well-behaved client never sends.
fn seal_tls13(key: &[u8], iv: &[u8], seq: u64, inner: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).unwrap());
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(iv);
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    let len = inner.len() + 16;
    let header = [0x17, 0x03, 0x03, (len >> 8) as u8, len as u8];
    let mut body = inner.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(header),
        &mut body,
    )
    .unwrap();
    [&header[..], &body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_bad_handshake_message_the_connection_only_closes() {
    let srv = Server::new();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites =
        vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(srv.cert.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    let (mut server, client) = srv.pair(Arc::new(config)).await;
    let (mut raw, conn) = client.into_inner();
    let (seq, secrets) = conn.dangerous_extract_secrets().unwrap().tx;
    let rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv } = secrets else {
        panic!("not AES-128-GCM");
    };
    let seal = |seq, inner: &[u8]| seal_tls13(key.as_ref(), iv.as_ref(), seq, inner);

    // The sealing is right: application data arrives.
    raw.write_all(&seal(seq, b"sealed\x17")).await.unwrap();
    let mut buf = [0; 6];
    within(PROMPTLY, "server read", server.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"sealed");

    // Two key updates in one record: the first must end its record, so it
    // fails, and the second is left pending inside rustls.
    let key_update = [24, 0, 0, 1, 0];
    let inner = [&key_update[..], &key_update, &[22]].concat();
    raw.write_all(&seal(seq + 1, &inner)).await.unwrap();
    let mut buf = [0; 64];
    let e = within(PROMPTLY, "server read", server.read(&mut buf))
        .await
        .expect_err("a key update that does not end its record");
    assert!(
        matches!(rustls_error(&e), Some(rustls::Error::PeerMisbehaved(_))),
        "{e:?}"
    );
    assert!(server.write_all(b"late").await.is_err());
    let _ = within(PROMPTLY, "server shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_end_between_records_reads_as_eof() {
    // The module's stated behaviour: the end of the peer's TCP stream at a
    // record boundary ends the read side like a close_notify (the WebSocket
    // framing above notices a truncated message).
    for version in BOTH {
        let srv = Server::new();
        let (mut server, mut client) = srv.pair(srv.client(version)).await;
        client.write_all(b"whole").await.unwrap();
        client.flush().await.unwrap();
        let (mut raw, _) = client.into_inner();
        raw.shutdown().await.unwrap();
        let mut got = Vec::new();
        within(PROMPTLY, "server read", server.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got, b"whole", "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_certificate_reaches_the_client_as_an_alert() {
    let ca = rcgen::generate_simple_self_signed(vec!["client-ca".to_owned()]).unwrap();
    let srv = Server::requiring_client_certs(&ca.cert.pem());
    for version in BOTH {
        let (addr, server) = srv.serve_once().await;
        let client = within(
            PROMPTLY,
            "client handshake",
            connect(addr, srv.client(version)),
        )
        .await;
        let refused = within(PROMPTLY, "accept", server)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: the server's task failed: {e}"))
            .err()
            .expect("the server refuses the handshake");
        assert!(
            matches!(
                rustls_error(&refused),
                Some(rustls::Error::NoCertificatesPresented)
            ),
            "{version:?}: {refused:?}"
        );
        // TLS 1.3 clients finish their side of the handshake before the
        // server has seen their (empty) certificate; they hear of the refusal
        // on their first read.
        let e = match client {
            Err(e) => e,
            Ok(mut client) => {
                let mut buf = [0; 16];
                within(PROMPTLY, "client read", client.read(&mut buf))
                    .await
                    .expect_err("read after a refused handshake")
            }
        };
        assert!(
            matches!(
                rustls_error(&e),
                Some(rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired
                ))
            ),
            "{version:?}: the client saw {e:?}, not the server's alert"
        );
    }
}

/// The same refusal without sockets, so that the client's whole flight is
/// certain to reach [`advance`] in one buffer: in TLS 1.3 that is one record
/// holding both Certificate and Finished, and the error on the first leaves
/// the second pending inside rustls, which still refers to that buffer.
#[test]
fn refusal_with_handshake_messages_behind_it_queues_the_alert() {
    let ca = rcgen::generate_simple_self_signed(vec!["client-ca".to_owned()]).unwrap();
    let srv = Server::requiring_client_certs(&ca.cert.pem());
    for version in BOTH {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(srv.client(version), name).unwrap();
        let mut st = State::new(UnbufferedServerConnection::new(Arc::clone(&srv.config)).unwrap());
        // Input not consumed yet, as `partial` holds it.
        let mut incoming = Vec::new();
        let (refused, out) = loop {
            while client.wants_write() {
                client.write_tls(&mut incoming).unwrap();
            }
            let mut out = Vec::new();
            match advance(&mut st, &mut incoming, None, Intent::Nothing, &mut out) {
                Ok((used, step)) => {
                    assert_eq!(step, Step::NeedInput, "{version:?}");
                    incoming.drain(..used);
                }
                Err(e) => break (e, out),
            }
            let mut answer = &out[..];
            while !answer.is_empty() {
                client.read_tls(&mut answer).unwrap();
            }
            client.process_new_packets().unwrap();
        };
        assert!(
            matches!(
                rustls_error(&refused),
                Some(rustls::Error::NoCertificatesPresented)
            ),
            "{version:?}: {refused:?}"
        );
        let mut answer = &out[..];
        while !answer.is_empty() {
            client.read_tls(&mut answer).unwrap();
        }
        assert_eq!(
            client.process_new_packets().err(),
            Some(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            "{version:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_instead_of_a_client_hello_is_refused_with_an_alert() {
    let srv = Server::new();
    let (addr, server) = srv.serve_once().await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let e = within(PROMPTLY, "accept", server)
        .await
        .expect("no panic")
        .err()
        .expect("not a TLS handshake");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // What the server sent before closing: one fatal alert record.
    let mut answer = Vec::new();
    within(PROMPTLY, "raw read", raw.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer.len(), 7, "{answer:?}");
    assert_eq!((answer[0], answer[5]), (0x15, 2), "fatal alert: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_header_is_refused_without_waiting_for_the_body() {
    let srv = Server::new();
    let (addr, server) = srv.serve_once().await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    // A handshake record claiming 65535 bytes; the connection stays open.
    raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01])
        .await
        .unwrap();
    let e = within(PROMPTLY, "accept", server)
        .await
        .unwrap()
        .err()
        .expect("an oversized record");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_message_in_tiny_records_is_bounded() {
    // A ClientHello announcing 65535 bytes, then its body two bytes per
    // record: rustls keeps every record until the message is whole, so what
    // stops the growth is MAX_PARTIAL (the ciphertext is 3.5 times the
    // message), not rustls's message limit.
    let srv = Server::new();
    let (addr, server) = srv.serve_once().await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut bytes = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0xff, 0xff];
    while bytes.len() < MAX_PARTIAL + 64 * 1024 {
        bytes.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x02, 0x03, 0x03]);
    }
    // The server may stop reading (and close) before all of it is sent.
    let _ = raw.write_all(&bytes).await;
    let e = within(PROMPTLY, "accept", server)
        .await
        .expect("no panic")
        .err()
        .expect("refused before the message is whole");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("too large"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_holds_the_writer_back() {
    const LEN: usize = 8 * 1024 * 1024;
    for (i, version) in BOTH.into_iter().enumerate() {
        let srv = Server::new();
        let (addr, server) = srv.serve_once().await;
        // A small receive window keeps the kernels' share of 8 MiB small.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let mut client = within(
            PROMPTLY,
            "client handshake",
            connect_over(tcp, srv.client(version)),
        )
        .await
        .unwrap();
        let mut server = within(PROMPTLY, "server handshake", server)
            .await
            .unwrap()
            .unwrap();

        let data = Arc::new(random_bytes(LEN, 30 + i as u64));
        let pendings = Arc::new(AtomicUsize::new(0));
        let held_back = Arc::new(Notify::new());
        let writer = {
            let (data, pendings, held_back) = (
                Arc::clone(&data),
                Arc::clone(&pendings),
                Arc::clone(&held_back),
            );
            tokio::spawn(async move {
                let mut at = 0;
                let mut most_kept = 0;
                while at < data.len() {
                    let n = std::future::poll_fn(|cx| {
                        let r = Pin::new(&mut server).poll_write(cx, &data[at..]);
                        most_kept = most_kept.max(server.out.bytes().len());
                        if r.is_pending() && pendings.fetch_add(1, Ordering::Relaxed) == 0 {
                            held_back.notify_one();
                        }
                        r
                    })
                    .await?;
                    assert!(n > 0);
                    at += n;
                }
                server.shutdown().await?;
                Ok::<_, io::Error>(most_kept)
            })
        };
        within(
            PROMPTLY,
            "poll_write returning Pending",
            held_back.notified(),
        )
        .await;
        let mut writer = writer;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut writer)
                .await
                .is_err(),
            "{version:?}: all 8 MiB written while the client read nothing"
        );

        let mut got = Vec::with_capacity(LEN);
        within(BULK, "client read", client.read_to_end(&mut got))
            .await
            .expect("a clean end");
        assert_same("server data", &got, &data);
        let most_kept = within(PROMPTLY, "writer", writer).await.unwrap().unwrap();
        // What the socket would not take is at most one write's ciphertext.
        assert!(
            most_kept <= WRITE_CHUNK + MAX_RECORD,
            "{version:?}: {most_kept} bytes of ciphertext kept"
        );
        assert!(pendings.load(Ordering::Relaxed) > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_update_from_the_client_is_answered_before_new_data() {
    let srv = Server::new();
    let (mut server, mut client) = srv.pair(srv.client(TLS13)).await;
    let mut buf = [0; 6];
    for round in 0..3 {
        client.write_all(b"before").await.unwrap();
        // Asks the server to update its keys too.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"after!").await.unwrap();
        client.flush().await.unwrap();
        for want in [b"before", b"after!"] {
            within(PROMPTLY, "server read", server.read_exact(&mut buf))
                .await
                .unwrap();
            assert_eq!(&buf, want, "round {round}");
        }
        // Decryptable only if the server's key update went out first.
        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        within(PROMPTLY, "client read", client.read_exact(&mut buf))
            .await
            .unwrap();
        assert_eq!(&buf, b"answer", "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_sessions_carry_data() {
    for version in BOTH {
        let srv = Server::new();
        let client_config = srv.client(version);
        for (attempt, kind) in [HandshakeKind::Full, HandshakeKind::Resumed]
            .into_iter()
            .enumerate()
        {
            let (mut server, mut client) = srv.pair(Arc::clone(&client_config)).await;
            assert_eq!(
                client.get_ref().1.handshake_kind(),
                Some(kind),
                "{version:?} attempt {attempt}"
            );
            client.write_all(b"hello").await.unwrap();
            let mut buf = [0; 5];
            within(PROMPTLY, "server read", server.read_exact(&mut buf))
                .await
                .unwrap();
            server.write_all(&buf).await.unwrap();
            server.shutdown().await.unwrap();
            // Reading also takes in the TLS 1.3 session tickets.
            let mut got = Vec::new();
            within(PROMPTLY, "client read", client.read_to_end(&mut got))
                .await
                .unwrap();
            assert_eq!(got, b"hello");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_reads_keep_plaintext_only_until_taken() {
    let srv = Server::new();
    let (mut server, mut client) = srv.pair(srv.client(TLS13)).await;
    let data = random_bytes(50_000, 40);
    client.write_all(&data).await.unwrap();
    client.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 100];
    while got.len() < data.len() {
        let n = within(PROMPTLY, "server read", server.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0 && n <= buf.len());
        got.extend_from_slice(&buf[..n]);
        if got.len() < data.len() && server.st.plain.is_empty() {
            // Between records: no plaintext is waiting.
            assert_eq!(server.st.plain.capacity(), 0);
        }
    }
    assert_same("client data", &got, &data);
    assert_idle(&server);
}
