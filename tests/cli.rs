//! `wsgate check` and `wsgate token` as a user runs them.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn wsgate(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("WSGATE_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("WSGATE_TEST_UNSET_VAR")
        .output()
        .expect("run wsgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Writes `yaml` as gateway.yaml in a new folder and runs `wsgate check`.
fn check(yaml: &str) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = wsgate(&["check", "-c", path.to_str().unwrap()], dir.path());
    (dir, out)
}

fn good_config() -> String {
    format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: ws://127.0.0.1:9\n",
        head()
    )
}

/// 1-based line of the first line containing `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn check_good_config_exit_0_one_line() {
    let (_dir, out) = check(&good_config());
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout {stdout} stderr {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "summary: {stdout:?}");
}

#[test]
fn check_default_path_and_env() {
    // No -c: WSGATE_CONFIG, else ./gateway.yaml.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), good_config()).unwrap();
    let out = wsgate(&["check"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("other.yaml"), "nonsense: [").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("check")
        .current_dir(dir.path())
        .env("WSGATE_CONFIG", dir.path().join("other.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("other.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_unknown_key_names_file_line_and_field() {
    let yaml = format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: ws://127.0.0.1:9\n    require:\n      - claim: roles\n        any_off: [chat]\n",
        head()
    );
    let (_dir, out) = check(&yaml);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("gateway.yaml"), "{err}");
    let line = line_of(&yaml, "any_off");
    assert!(
        err.contains(&format!(":{line}")),
        "line {line} not named: {err}"
    );
    assert!(err.contains("routes[0].require[0]"), "{err}");
    assert!(err.contains("any_off"), "{err}");
}

#[test]
fn check_missing_file_names_file_and_field() {
    let yaml = head().replace(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n",
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      cert: certs/missing.pem\n      key: certs/missing.key\n",
    ) + "routes:\n  - id: echo\n    path: /echo\n    upstream: ws://127.0.0.1:9\n";
    let (_dir, out) = check(&yaml);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("gateway.yaml"), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
    assert!(err.contains("listeners[0].tls.cert"), "{err}");
    let line = line_of(&yaml, "missing.pem");
    assert!(
        err.contains(&format!(":{line}")),
        "line {line} not named: {err}"
    );
}

#[test]
fn check_missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = wsgate(&["check", "-c", "nope.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_unset_variable_names_file_line_and_field() {
    let yaml = good_config().replace(
        &format!("secret: \"{SECRET}\""),
        "secret: \"${WSGATE_TEST_UNSET_VAR}\"",
    );
    let (_dir, out) = check(&yaml);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("WSGATE_TEST_UNSET_VAR"), "{err}");
    assert!(err.contains("issuers[0].keys.secret"), "{err}");
    let line = line_of(&yaml, "WSGATE_TEST_UNSET_VAR");
    assert!(
        err.contains(&format!("gateway.yaml:{line}")),
        "line {line} not named: {err}"
    );
    // With a default, the same file is fine.
    let yaml = yaml.replace(
        "${WSGATE_TEST_UNSET_VAR}",
        "${WSGATE_TEST_UNSET_VAR:-a-default-secret-0123456789abcdef}",
    );
    let (_dir, out) = check(&yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_accepts_several_port_zero_binds() {
    // Port 0 asks the OS for a free port; two such binds never collide.
    let yaml = good_config();
    assert_eq!(yaml.matches("127.0.0.1:0").count(), 2);
    let (_dir, out) = check(&yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_output_is_accepted() {
    let up = EchoUpstream::start().await;
    let yaml = format!(
        "{}routes:\n  - id: echo\n    path: /echo\n    upstream: {}\n    require:\n      - claim: roles\n        any_of: [admin]\n    forward:\n      headers:\n        X-Roles: \"{{claims.roles}}\"\n        X-Team: \"{{claims.team}}\"\n",
        head(),
        up.url()
    );
    let gw = Gateway::start(&yaml);
    let out = wsgate(
        &[
            "token",
            "-c",
            gw.config_path().to_str().unwrap(),
            "--issuer",
            "test",
            "--sub",
            "alice",
            "--claim",
            "roles=chat,admin",
            "--claim",
            "team=blue",
            "--ttl",
            "5m",
        ],
        gw.dir(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let jwt = text(&out.stdout).trim().to_owned();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &jwt).await;
    roundtrip(&mut ws, "minted by wsgate token").await;
    let c = up.conn(0).await;
    assert_eq!(c.header("x-roles"), Some("chat,admin"));
    assert_eq!(c.header("x-team"), Some("blue"));

    // The token carries the issuer's iss/aud and the ttl.
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).unwrap())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], ISS);
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp >= now() + 280 && exp <= now() + 310, "{claims}");

    // An unknown issuer id is an error.
    let out = wsgate(
        &[
            "token",
            "-c",
            gw.config_path().to_str().unwrap(),
            "--issuer",
            "nope",
            "--sub",
            "a",
        ],
        gw.dir(),
    );
    assert!(!out.status.success());
}
