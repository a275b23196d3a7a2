//! Test certificates (a CA and leaves signed by it) and TLS client/server
//! configs trusting them.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SignatureAlgorithm,
};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

pub struct Ca {
    pub cert_pem: String,
    pub der: CertificateDer<'static>,
    params: CertificateParams,
    key: KeyPair,
}

/// A leaf certificate with its key in several encodings.
pub struct Leaf {
    pub cert_pem: String,
    pub der: CertificateDer<'static>,
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Leaf {
    /// The key as a "traditional" PEM: SEC1 for EC keys, PKCS#1 for RSA.
    pub fn traditional_key_pem(&self, label: &str) -> String {
        pem(label, &pkcs8_inner(&self.key_der))
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn sec1_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(pkcs8_inner(&self.key_der)))
    }

    pub fn pkcs1_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs8_inner(&self.key_der)))
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }

    /// A server certificate for `names` (DNS names or IPs), ECDSA P-256.
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, &rcgen::PKCS_ECDSA_P256_SHA256, false)
    }

    pub fn leaf(&self, names: &[&str], alg: &'static SignatureAlgorithm, client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate_for(alg).unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads one DER element at `b`: (tag, content, total length).
fn der_element(b: &[u8]) -> (u8, &[u8], usize) {
    let tag = b[0];
    let (len, hdr) = if b[1] & 0x80 == 0 {
        (b[1] as usize, 2)
    } else {
        let n = (b[1] & 0x7f) as usize;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | b[2 + i] as usize;
        }
        (len, 2 + n)
    };
    (tag, &b[hdr..hdr + len], hdr + len)
}

/// The private key inside a PKCS#8 `PrivateKeyInfo`: PKCS#1 for RSA, SEC1
/// (RFC 5915) for EC.
fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
    let (_, seq, _) = der_element(pkcs8);
    let (_, _, v) = der_element(seq); // version
    let rest = &seq[v..];
    let (_, alg, a) = der_element(rest); // AlgorithmIdentifier
    let rest = &rest[a..];
    let (tag, key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    let inner = key.to_vec();
    // For EC, add the curve OID as parameters ([0]) so the SEC1 key stands
    // alone, as `openssl ec` writes it.
    let (_, _, oid_len) = der_element(alg);
    let params = &alg[oid_len..];
    if params.first() == Some(&0x06) && inner.first() == Some(&0x30) {
        let (_, ec_seq, _) = der_element(&inner);
        let (_, _, l1) = der_element(ec_seq); // version
        let (_, _, l2) = der_element(&ec_seq[l1..]); // privateKey
        let head = &ec_seq[..l1 + l2];
        let tail = &ec_seq[l1 + l2..];
        if tail.first() != Some(&0xa0) {
            let (_, oid, ol) = der_element(params);
            let _ = oid;
            let mut tagged = vec![0xa0, ol as u8];
            tagged.extend_from_slice(&params[..ol]);
            let mut body = head.to_vec();
            body.extend_from_slice(&tagged);
            body.extend_from_slice(tail);
            return der_seq(&body);
        }
    }
    inner
}

fn der_seq(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x30];
    let n = body.len();
    if n < 128 {
        out.push(n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client config trusting `ca`, for the given versions, with an optional
/// client certificate.
pub fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_cert: Option<&Leaf>,
) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots());
    let cfg = match client_cert {
        Some(l) => b
            .with_client_auth_cert(vec![l.der.clone()], l.private_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// A server acceptor presenting `leaf` (for a wss:// upstream).
pub fn acceptor(leaf: &Leaf) -> tokio_rustls::TlsAcceptor {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], leaf.private_key())
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// TLS to `addr` with SNI `name`, then a WebSocket handshake for `path`.
pub async fn wss_connect(
    addr: std::net::SocketAddr,
    name: &str,
    path: &str,
    cfg: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Result<Wss, WsError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio::time::timeout(super::WAIT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| WsError::Io(std::io::Error::other("TLS handshake timed out")))?
        .map_err(WsError::Io)?;
    let mut req = format!("wss://{name}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tokio_tungstenite::tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let (ws, _) = tokio::time::timeout(super::WAIT, tokio_tungstenite::client_async(req, tls))
        .await
        .map_err(|_| WsError::Io(std::io::Error::other("handshake timed out")))??;
    Ok(ws)
}
