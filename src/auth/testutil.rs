//! Test helpers: keys generated once per test binary, token signing, issuer
//! configs, and a tiny HTTP server on `127.0.0.1:0` that serves JWKS /
//! discovery documents and counts the requests it gets.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::config::{IssuerConfig, KeySource};

pub struct TestKeys {
    pub private_pem: String,
    pub public_pem: String,
    /// The public JWK without `kid`/`alg`.
    jwk: Value,
    pub family: &'static str,
}

impl TestKeys {
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = kid.into();
        jwk
    }

    pub fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.family {
            "rsa" => EncodingKey::from_rsa_pem(pem),
            "ec" => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        }
        .unwrap()
    }
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn public_jwk(private_pem: &str, family: &'static str, alg: Algorithm) -> Value {
    crate::auth::install_crypto_provider();
    let key = match family {
        "rsa" => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(private_pem.as_bytes()),
    }
    .unwrap();
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
            .unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    jwk
}

pub fn rsa() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let private: Pkcs8V1Der = kp.as_der().unwrap();
        let public: PublicKeyX509Der = kp.public_key().as_der().unwrap();
        let private_pem = pem("PRIVATE KEY", private.as_ref());
        TestKeys {
            jwk: public_jwk(&private_pem, "rsa", Algorithm::RS256),
            private_pem,
            public_pem: pem("PUBLIC KEY", public.as_ref()),
            family: "rsa",
        }
    })
}

fn ec(alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm, jwt_alg: Algorithm) -> TestKeys {
    let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(alg).unwrap();
    let private = kp.to_pkcs8v1().unwrap();
    let public: PublicKeyX509Der = kp.public_key().as_der().unwrap();
    let private_pem = pem("PRIVATE KEY", private.as_ref());
    TestKeys {
        jwk: public_jwk(&private_pem, "ec", jwt_alg),
        private_pem,
        public_pem: pem("PUBLIC KEY", public.as_ref()),
        family: "ec",
    }
}

pub fn ec256() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        ec(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Algorithm::ES256,
        )
    })
}

pub fn ec384() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        ec(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Algorithm::ES384,
        )
    })
}

pub fn ed25519() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let private = kp.to_pkcs8v1().unwrap();
        let public: PublicKeyX509Der = kp.public_key().as_der().unwrap();
        TestKeys {
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(kp.public_key().as_ref())}),
            private_pem: pem("PRIVATE KEY", private.as_ref()),
            public_pem: pem("PUBLIC KEY", public.as_ref()),
            family: "ed",
        }
    })
}

pub fn now() -> i64 {
    super::unix_now()
}

/// Claims valid for five minutes, merged with `extra`.
pub fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "iat": now(), "exp": now() + 300, "jti": "j1"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn sign(alg: Algorithm, claims: &Value, key: &EncodingKey, kid: Option<&str>) -> String {
    crate::auth::install_crypto_provider();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn issuer(id: &str, algorithms: &[Algorithm], keys: KeySource) -> IssuerConfig {
    IssuerConfig {
        refetch_interval: std::time::Duration::from_secs(1),
        id: id.into(),
        issuer: None,
        audiences: vec![],
        algorithms: algorithms.to_vec(),
        keys,
        ca: None,
        leeway: Duration::ZERO,
        required_claims: vec!["exp".into()],
    }
}

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub cache_control: Option<String>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            cache_control: None,
            delay: Duration::ZERO,
        }
    }
}

type Replies = Arc<Mutex<HashMap<String, Reply>>>;
type Hits = Arc<Mutex<HashMap<String, usize>>>;

async fn serve<S>(stream: S, replies: Replies, hits: Hits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (replies, hits) = (replies.clone(), hits.clone());
        async move {
            let path = req.uri().path().to_owned();
            *hits.lock().entry(path.clone()).or_default() += 1;
            let reply = replies.lock().get(&path).cloned();
            let reply = reply.unwrap_or(Reply {
                status: 404,
                ..Reply::ok("")
            });
            tokio::time::sleep(reply.delay).await;
            let mut resp = http::Response::builder().status(reply.status);
            if let Some(cc) = &reply.cache_control {
                resp = resp.header("cache-control", cc.as_str());
            }
            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(reply.body))).unwrap())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A local HTTP server whose replies can be changed while it runs.
pub struct TestServer {
    pub addr: SocketAddr,
    replies: Replies,
    hits: Hits,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// An https server for `127.0.0.1` and `localhost`; also returns its CA PEM.
    pub async fn start_tls() -> (Self, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::start_with(Some(acceptor)).await, ck.cert.pem())
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies: Replies = Arc::default();
        let hits: Hits = Arc::default();
        let (r, h) = (replies.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, h, tls) = (r.clone(), h.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, r, h).await;
                            }
                        }
                        None => serve(stream, r, h).await,
                    }
                });
            }
        });
        Self {
            addr,
            replies,
            hits,
        }
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().insert(path.into(), reply);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().get(path).copied().unwrap_or(0)
    }
}
