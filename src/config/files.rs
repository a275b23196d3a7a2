//! Checks on the files a config names: they must exist and parse, so that
//! `wsgate check` catches a wrong path or a swapped cert/key before a reload
//! or a start does. The parsed contents are thrown away; the modules that use
//! them (TLS, key sets) load them again when they build their state.
//!
//! Messages name the file and what was expected in it, never its contents.

use std::path::{Path, PathBuf};

use jsonwebtoken::{AlgorithmFamily, DecodingKey};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Certificates and keys are read by the TLS module's own readers, so
    /// `check` accepts exactly the files a listener would load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{} is not a PEM {family} public key, as the issuer's algorithms require ({reason})", path.display())]
    PublicKey {
        path: PathBuf,
        family: &'static str,
        reason: String,
    },
    #[error("{} is not a JWKS document (JSON with a `keys` array): error at line {line} column {column}", path.display())]
    Jwks {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{} holds an empty `keys` array; no token could be verified", path.display())]
    EmptyJwks { path: PathBuf },
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM file with at least one certificate: a server chain or a CA bundle.
pub fn check_cert_chain(path: &Path) -> Result<(), FileError> {
    crate::tls::load_certs(path)?;
    Ok(())
}

/// A PEM private key in PKCS#8, PKCS#1 or SEC1 form.
pub fn check_private_key(path: &Path) -> Result<(), FileError> {
    crate::tls::load_key(path)?;
    Ok(())
}

/// A certificate chain and the private key served with it: they must belong
/// together (the listener's own loader, [`crate::tls::certified_key`]).
pub fn check_key_pair(cert: &Path, key: &Path) -> Result<(), FileError> {
    crate::tls::certified_key(cert, key)?;
    Ok(())
}

/// A CA bundle whose every certificate is a usable trust anchor, as the
/// `wss://` and key-fetch clients load it.
pub fn check_trust_anchors(path: &Path) -> Result<(), FileError> {
    crate::tls::roots_from(path)?;
    Ok(())
}

/// A `client_ca` for mTLS: the verifier a listener builds from it.
pub fn check_client_ca(path: &Path) -> Result<(), FileError> {
    crate::tls::client_verifier(path)?;
    Ok(())
}

/// A PEM public key of the family the issuer's algorithms need.
pub fn check_public_key(path: &Path, family: AlgorithmFamily) -> Result<(), FileError> {
    let bytes = read(path)?;
    let (name, parsed) = match family {
        AlgorithmFamily::Rsa => ("RSA", DecodingKey::from_rsa_pem(&bytes)),
        AlgorithmFamily::Ec => ("EC", DecodingKey::from_ec_pem(&bytes)),
        AlgorithmFamily::Ed => ("Ed25519", DecodingKey::from_ed_pem(&bytes)),
        // HS* issuers use `secret`; validation rejects a public key for them
        // before this is called, so this arm only guards against misuse.
        AlgorithmFamily::Hmac => (
            "RSA, EC or Ed25519",
            Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()),
        ),
    };
    parsed.map(drop).map_err(|e| FileError::PublicKey {
        path: path.to_path_buf(),
        family: name,
        reason: e.to_string(),
    })
}

/// A JSON Web Key Set with at least one key.
pub fn check_jwks_file(path: &Path) -> Result<(), FileError> {
    let bytes = read(path)?;
    // serde_json's messages can quote the offending value; only its position
    // is reported.
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| FileError::Jwks {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
        })?;
    if set.keys.is_empty() {
        return Err(FileError::EmptyJwks {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}
