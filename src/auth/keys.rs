//! Verification keys: one [`KeySet`] per issuer, decoded once when it is loaded
//! (no PEM or JWK parsing per request).
//!
//! Every [`VerifyKey`] records its [`KeyKind`], and a token's `alg` is only ever
//! checked against a key of the matching kind. This is what stops algorithm
//! confusion: an `HS256` token can never be verified with an RSA public key's
//! bytes used as an HMAC secret. A JWK's own `alg`, `use` and `key_ops` narrow
//! what a key may be used for further.

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;

use crate::config::{IssuerConfig, KeySource};

/// At most this many keys are tried for one token, so that a token without a
/// `kid` cannot make the gateway run dozens of signature checks.
const MAX_CANDIDATES: usize = 4;

/// What a key is, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether a signature made with `alg` can be checked with a key of this kind.
    pub fn supports(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One decoded key.
#[derive(Debug)]
pub struct VerifyKey {
    /// `None` matches any `kid` (a single configured key has none).
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it named one: the key verifies only that.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
    /// What the key *is* (a hash of its material), whatever its `kid`: a
    /// session's token is still trusted after a reload exactly when the key
    /// that verified it is still in its issuer's set.
    pub fingerprint: KeyFingerprint,
}

/// A hash of a key's material, see [`VerifyKey::fingerprint`].
pub type KeyFingerprint = [u8; 16];

impl VerifyKey {
    pub fn new(
        kid: Option<String>,
        kind: KeyKind,
        alg: Option<Algorithm>,
        key: DecodingKey,
    ) -> Self {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update([kind as u8]);
        match key.kind() {
            DecodingKeyKind::SecretOrDer(b) => h.update(b),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                // Length-prefixed, so no (n, e) pair can collide with another.
                h.update((n.len() as u64).to_be_bytes());
                h.update(n);
                h.update(e);
            }
        }
        let digest = h.finalize();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&digest[..16]);
        Self {
            kid,
            kind,
            alg,
            key,
            fingerprint,
        }
    }

    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.supports(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// The answer to "which keys can verify this token?".
#[derive(Debug)]
pub enum Lookup<'a> {
    Keys(Vec<&'a VerifyKey>),
    /// The token names a `kid` the set does not have (a remote set may have rotated).
    UnknownKid,
    /// No key of the set can verify this `alg`.
    NoKeyForAlg,
}

#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    #[error("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)")]
    UnsupportedPem,
    #[error("this is a private key; give the public key")]
    PrivateKeyGiven,
    #[error("not a JWKS document: {0}")]
    NotJwks(#[source] serde_json::Error),
    #[error("no usable signing key in the JWKS ({skipped} skipped: wrong use, alg or key type)")]
    NoUsableKeys { skipped: usize },
    #[error("the secret is empty")]
    EmptySecret,
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The `kid` of each key, in order (for the admin API).
    pub fn kids(&self) -> Vec<Option<String>> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// An HS* shared secret, used as written (bytes of the string).
    pub fn from_secret(secret: &str) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        let key = VerifyKey::new(
            None,
            KeyKind::Hmac,
            None,
            DecodingKey::from_secret(secret.as_bytes()),
        );
        Ok(Self { keys: vec![key] })
    }

    /// One PEM public key (or certificate): RSA, EC P-256/P-384 or Ed25519.
    pub fn from_public_pem(pem: &[u8]) -> Result<Self, KeyError> {
        // A private key would be "accepted" by the RSA decoder and then fail
        // every signature; say what is wrong instead.
        if holds_private_key(pem) {
            return Err(KeyError::PrivateKeyGiven);
        }
        let (kind, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (KeyKind::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The decoder yields the uncompressed point: its length tells the curve.
            match key.as_bytes().len() {
                65 => (KeyKind::EcP256, key),
                97 => (KeyKind::EcP384, key),
                _ => return Err(KeyError::UnsupportedPem),
            }
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (KeyKind::Ed25519, key)
        } else {
            return Err(KeyError::UnsupportedPem);
        };
        Ok(Self {
            keys: vec![VerifyKey::new(None, kind, None, key)],
        })
    }

    /// A JWKS document. Keys that cannot be used for signatures (wrong `use`,
    /// unknown `kty`/`crv`/`alg`, `alg` of another family than the key) are
    /// skipped; a set left with no key is an error, so that a provider serving
    /// garbage never replaces a good set. `allow_symmetric` admits `oct` keys:
    /// a local file may hold them, a published set never should.
    pub fn from_jwks_json(json: &[u8], allow_symmetric: bool) -> Result<Self, KeyError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(json).map_err(KeyError::NotJwks)?;
        let total = raw.keys.len();
        let keys: Vec<VerifyKey> = raw
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| key_from_jwk(&jwk, allow_symmetric))
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoUsableKeys { skipped: total });
        }
        Ok(Self { keys })
    }

    /// The key with this fingerprint, if the set still has it.
    pub fn by_fingerprint(&self, fingerprint: &KeyFingerprint) -> Option<&VerifyKey> {
        self.keys.iter().find(|k| &k.fingerprint == fingerprint)
    }

    /// The keys that may verify a token with this `kid` and `alg`, best first.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let mut out: Vec<&VerifyKey> = Vec::new();
        match kid {
            Some(kid) => {
                let named: Vec<&VerifyKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    // Keys without a kid stand for any kid.
                    out.extend(
                        self.keys
                            .iter()
                            .filter(|k| k.kid.is_none() && k.accepts(alg)),
                    );
                    if out.is_empty() {
                        return Lookup::UnknownKid;
                    }
                } else {
                    out.extend(named.into_iter().filter(|k| k.accepts(alg)));
                }
            }
            None => out.extend(self.keys.iter().filter(|k| k.accepts(alg))),
        }
        if out.is_empty() {
            return Lookup::NoKeyForAlg;
        }
        out.truncate(MAX_CANDIDATES);
        Lookup::Keys(out)
    }
}

/// Whether any PEM block is a private key (PKCS#8, PKCS#1 or SEC1), read
/// with the PEM parser rustls uses rather than by searching the text.
fn holds_private_key(pem: &[u8]) -> bool {
    use rustls::pki_types::pem::{PemObject, SectionKind};
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).any(|section| {
        matches!(
            section,
            Ok((
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey,
                _
            ))
        )
    })
}

fn key_from_jwk(jwk: &Jwk, allow_symmetric: bool) -> Option<VerifyKey> {
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return None;
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return None;
        }
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            EllipticCurve::P521 | EllipticCurve::Ed25519 => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            EllipticCurve::P256 | EllipticCurve::P384 | EllipticCurve::P521 => return None,
        },
        AlgorithmParameters::OctetKey(_) if allow_symmetric => KeyKind::Hmac,
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let alg = match jwk.common.key_algorithm {
        // An alg this gateway cannot verify (RSA-OAEP, ...) means "not for us".
        Some(ka) => Some(Algorithm::from_str(&ka.to_string()).ok()?),
        None => None,
    };
    if alg.is_some_and(|a| !kind.supports(a)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let expected_len = match kind {
        KeyKind::EcP256 => Some(65),
        KeyKind::EcP384 => Some(97),
        KeyKind::Ed25519 => Some(32),
        KeyKind::Hmac => (!key.as_bytes().is_empty()).then_some(key.as_bytes().len()),
        KeyKind::Rsa => None,
    };
    if expected_len.is_some_and(|n| key.as_bytes().len() != n) {
        return None;
    }
    Some(VerifyKey::new(jwk.common.key_id.clone(), kind, alg, key))
}

/// Loads a key source that lives in the config or on disk. `Ok(None)` for the
/// remote sources (`jwks_url`, `discovery`), which [`super::remote`] fetches.
pub fn load_local(source: &KeySource) -> Result<Option<KeySet>, LocalKeyError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| LocalKeyError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let with_path = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalKeyError::Key { path, source }
    };
    match source {
        KeySource::Secret(secret) => KeySet::from_secret(secret)
            .map(Some)
            .map_err(LocalKeyError::Secret),
        KeySource::PublicKey(path) => KeySet::from_public_pem(&read(path)?)
            .map(Some)
            .map_err(with_path(path)),
        KeySource::JwksFile(path) => KeySet::from_jwks_json(&read(path)?, true)
            .map(Some)
            .map_err(with_path(path)),
        KeySource::JwksUrl(_) | KeySource::Discovery => Ok(None),
    }
}

/// For `wsgate check`: the issuer's local keys exist and parse.
pub fn check_issuer(issuer: &IssuerConfig) -> Result<(), LocalKeyError> {
    load_local(&issuer.keys).map(|_| ())
}

#[derive(thiserror::Error, Debug)]
pub enum LocalKeyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("secret: {0}")]
    Secret(#[source] KeyError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil;

    #[test]
    fn pem_keys_get_their_kind() {
        let cases = [
            (testutil::rsa(), KeyKind::Rsa),
            (testutil::ec256(), KeyKind::EcP256),
            (testutil::ec384(), KeyKind::EcP384),
            (testutil::ed25519(), KeyKind::Ed25519),
        ];
        for (keys, kind) in cases {
            let set = KeySet::from_public_pem(keys.public_pem.as_bytes()).unwrap();
            assert_eq!(set.keys[0].kind, kind);
        }
    }

    #[test]
    fn private_pem_is_refused_as_public_key() {
        let err = KeySet::from_public_pem(testutil::rsa().private_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, KeyError::PrivateKeyGiven));
        assert!(KeySet::from_public_pem(b"hello").is_err());
    }

    #[test]
    fn rsa_key_never_serves_hmac() {
        let set = KeySet::from_public_pem(testutil::rsa().public_pem.as_bytes()).unwrap();
        assert!(matches!(
            set.lookup(None, Algorithm::HS256),
            Lookup::NoKeyForAlg
        ));
        assert!(matches!(
            set.lookup(None, Algorithm::RS256),
            Lookup::Keys(_)
        ));
        assert!(matches!(
            set.lookup(None, Algorithm::ES256),
            Lookup::NoKeyForAlg
        ));
    }

    #[test]
    fn jwks_respects_kid_alg_and_use() {
        let mut enc = testutil::rsa().jwk("enc-key");
        enc["use"] = "enc".into();
        let mut only_ps = testutil::rsa().jwk("ps-key");
        only_ps["alg"] = "PS256".into();
        let mut confused = testutil::rsa().jwk("confused");
        confused["alg"] = "HS256".into();
        let doc = serde_json::json!({"keys": [
            enc, only_ps, confused, testutil::ec256().jwk("ec"),
            {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
        ]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes(), false).unwrap();
        assert_eq!(set.len(), 2, "enc, confused, X25519 and oct keys skipped");
        assert!(matches!(
            set.lookup(Some("enc-key"), Algorithm::RS256),
            Lookup::UnknownKid
        ));
        assert!(matches!(
            set.lookup(Some("ps-key"), Algorithm::RS256),
            Lookup::NoKeyForAlg
        ));
        assert!(
            matches!(set.lookup(Some("ps-key"), Algorithm::PS256), Lookup::Keys(k) if k.len() == 1)
        );
        assert!(matches!(
            set.lookup(Some("ec"), Algorithm::ES384),
            Lookup::NoKeyForAlg
        ));
        assert!(matches!(
            set.lookup(Some("nope"), Algorithm::ES256),
            Lookup::UnknownKid
        ));
        assert!(matches!(set.lookup(None, Algorithm::ES256), Lookup::Keys(k) if k.len() == 1));

        let file_set = KeySet::from_jwks_json(doc.to_string().as_bytes(), true).unwrap();
        assert_eq!(file_set.len(), 3, "a local file may hold oct keys");
    }

    #[test]
    fn garbage_jwks_is_an_error() {
        assert!(matches!(
            KeySet::from_jwks_json(b"<html>", false),
            Err(KeyError::NotJwks(_))
        ));
        assert!(matches!(
            KeySet::from_jwks_json(br#"{"keys": []}"#, false),
            Err(KeyError::NoUsableKeys { skipped: 0 })
        ));
    }
}
