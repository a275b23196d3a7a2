//! rustls configuration: the listeners' server side (certificate chain, SNI
//! certificates, optional client certificates) and the client side used for
//! `wss://` upstreams.
//!
//! Certificates live behind an [`ArcSwap`] in [`CertResolver`], so a reload
//! replaces them without re-binding a socket or touching live connections.

pub mod stream;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// Messages name the file and what was expected in it, never its contents
/// (a key file's bytes are a secret).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid PEM: {what}")]
    Pem { path: String, what: &'static str },
    #[error(
        "{path} holds no certificate; expected one or more `-----BEGIN CERTIFICATE-----` blocks"
    )]
    NoCert { path: String },
    #[error("{path} holds no private key; expected a PEM key in PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`) form")]
    NoKey { path: String },
    #[error("{key} is not the private key of the certificate in {cert} (the key's public key differs from the one the certificate names)")]
    KeyMismatch { cert: String, key: String },
    #[error("{path}: {source}")]
    Rustls {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("client CA {path}: {what}")]
    ClientCa { path: String, what: String },
}

/// The process's one crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Maps a PEM reader error to one that says what kind of damage the file
/// has, without quoting it.
fn pem_error(path: &Path, error: pem::Error) -> TlsError {
    let path = path.display().to_string();
    let what = match error {
        pem::Error::Io(source) => return TlsError::Read { path, source },
        pem::Error::MissingSectionEnd { .. } => {
            "a `-----BEGIN` block has no matching `-----END` line"
        }
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        pem::Error::SectionTooLarge => "a PEM block is too large",
        // `NoItemsFound` is mapped by the callers; any later variant is
        // still a malformed file.
        _ => "malformed PEM",
    };
    TlsError::Pem { path, what }
}

/// Every certificate of a PEM file: a server chain or a CA bundle. Other
/// blocks (a key kept in the same file) are skipped; a damaged block is an
/// error rather than silently skipped, so a truncated chain is noticed.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.display().to_string(),
        },
        other => pem_error(path, other),
    })
}

/// A certificate chain and its key, as a listener serves them. rustls checks
/// that the key's public key is the one in the leaf certificate's
/// SubjectPublicKeyInfo; config validation calls this too, so `check` fails on
/// a mismatched pair exactly as `run` does.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(chain, key_der, &provider())
        .map(Arc::new)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.display().to_string(),
                    key: key.display().to_string(),
                }
            }
            source => TlsError::Rustls {
                path: key.display().to_string(),
                source,
            },
        })
}

/// The certificates of one listener.
#[derive(Debug)]
pub struct CertStore {
    default: Arc<CertifiedKey>,
    /// Lower-cased names (`*.example.com` allowed) and their certificate.
    sni: Vec<(String, Arc<CertifiedKey>)>,
}

impl CertStore {
    pub fn load(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let default = certified_key(&cfg.cert, &cfg.key)?;
        let mut sni = Vec::new();
        for extra in &cfg.sni {
            let ck = certified_key(&extra.cert, &extra.key)?;
            for name in &extra.names {
                sni.push((name.to_ascii_lowercase(), Arc::clone(&ck)));
            }
        }
        Ok(Self { default, sni })
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return Arc::clone(&self.default);
        };
        let exact = self.sni.iter().find(|(n, _)| *n == name);
        let wildcard = || {
            self.sni.iter().find(|(n, _)| {
                n.strip_prefix("*.").is_some_and(|suffix| {
                    name.len() > suffix.len() + 1
                        && name.ends_with(suffix)
                        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                })
            })
        };
        exact
            .or_else(wildcard)
            .map(|(_, ck)| Arc::clone(ck))
            .unwrap_or_else(|| Arc::clone(&self.default))
    }
}

/// Chooses the certificate by SNI; swappable on reload.
#[derive(Debug)]
pub struct CertResolver {
    store: ArcSwap<CertStore>,
}

impl CertResolver {
    pub fn new(store: CertStore) -> Arc<Self> {
        Arc::new(Self {
            store: ArcSwap::from_pointee(store),
        })
    }

    pub fn replace(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.load().pick(hello.server_name()))
    }
}

/// The rustls server configuration of one listener (TLS 1.2 and 1.3).
pub fn server_config(
    cfg: &TlsConfig,
    resolver: Arc<CertResolver>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            path: cfg.cert.display().to_string(),
            source,
        })?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
    };
    let mut config = builder.with_cert_resolver(resolver);
    // WebSocket handshakes are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client-certificate verifier for `client_ca` (mTLS).
pub fn client_verifier(ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = roots_from(ca)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: ca.display().to_string(),
            what: e.to_string(),
        })
}

/// Every certificate of a PEM CA bundle, as trust anchors.
pub fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(roots)
}

/// Client configuration for `wss://` upstreams and key-set fetches: the given
/// CA, or the system's roots (loaded once per process).
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(path) => roots_from(path)?,
        None => system_roots().clone(),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            path: String::from("<client>"),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        roots
    })
}
