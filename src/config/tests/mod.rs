//! Loader tests: whole documents through [`super::load_str`] / [`super::load`],
//! with referenced files generated in a temporary folder.

mod checks;
mod cluster;
mod errors;
mod files;
mod grammar;
mod loading;
mod variants;

use std::path::{Path, PathBuf};

use super::{load_str, Config, ConfigErrors};

/// A temporary config folder with generated TLS material and key files.
pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture { dir };
        let server =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        f.write("certs/server.pem", &server.cert.pem());
        f.write("certs/server.key", &server.signing_key.serialize_pem());
        let chat =
            rcgen::generate_simple_self_signed(vec!["chat.example.com".to_owned()]).expect("cert");
        f.write("certs/chat.pem", &chat.cert.pem());
        f.write("certs/chat.key", &chat.signing_key.serialize_pem());
        // Any certificate works as a trust anchor file for these checks.
        for ca in ["certs/ca.pem", "certs/idp-ca.pem", "certs/upstream-ca.pem"] {
            f.write(ca, &server.cert.pem());
        }
        let ec = rcgen::KeyPair::generate().expect("ec key");
        f.write("keys/ec-pub.pem", &ec.public_key_pem());
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed key");
        f.write("keys/ed-pub.pem", &ed.public_key_pem());
        f.write(
            "keys/jwks.json",
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
        );
        f
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
    }

    pub fn source(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn load(&self, yaml: &str) -> Result<Config, ConfigErrors> {
        load_str(yaml, &self.source(), test_env)
    }
}

/// The only environment tests see.
pub(super) fn test_env(name: &str) -> Option<String> {
    match name {
        "JWT_SECRET" => Some("s3cr3t-value-for-tests-0123456789abcdef".to_owned()),
        "WSGATE_ADMIN_TOKEN" => Some("admin-token-for-tests".to_owned()),
        "UPSTREAM_HOST" => Some("10.1.2.3".to_owned()),
        _ => None,
    }
}

/// A small valid config; tests splice their case into it.
pub(super) const MINIMAL: &str = "\
listeners:
  - bind: \"127.0.0.1:8080\"
issuers:
  - id: main
    algorithms: [HS256]
    keys: { secret: \"${JWT_SECRET}\" }
    audiences: [chat]
routes:
  - id: chat
    path: /rooms/{room}
    upstream: ws://127.0.0.1:9001
";

/// Asserts that loading fails with an error at `path` whose message contains
/// `needle`, and returns all the errors for further checks.
#[track_caller]
pub(super) fn expect_error(fx: &Fixture, yaml: &str, path: &str, needle: &str) -> ConfigErrors {
    let errors = match fx.load(yaml) {
        Ok(_) => panic!("expected an error at {path}, but the config loaded:\n{yaml}"),
        Err(e) => e,
    };
    let hit = errors
        .iter()
        .any(|e| e.path.to_string() == path && e.message.contains(needle));
    assert!(
        hit,
        "no error at `{path}` containing `{needle}`; got:\n{errors}"
    );
    errors
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
