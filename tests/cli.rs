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

// ---------------------------------------------------------------------------
// `check` runs `run`'s checks: each error fails both, all are listed at once
// ---------------------------------------------------------------------------

/// Writes `files` next to gateway.yaml, then runs `wsgate <command>`.
fn with_files(command: &str, yaml: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = wsgate(&[command, "-c", path.to_str().unwrap()], dir.path());
    (dir, out)
}

/// `check` exits 1 naming the file, `field` and `needle`; `run` refuses the
/// same config before binding anything.
#[track_caller]
fn refused(yaml: &str, files: &[(&str, &str)], field: &str, needle: &str) -> String {
    let (_dir, out) = with_files("check", yaml, files);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "check accepted it: {err}");
    assert!(err.contains("gateway.yaml:"), "no file:line in {err}");
    assert!(
        err.contains(&format!(": {field}: ")),
        "no `{field}` in {err}"
    );
    assert!(err.contains(needle), "no `{needle}` in {err}");
    let (code, stderr) = run_refusal(yaml, files);
    assert_eq!(code, Some(1), "run accepted it: {stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    err
}

/// `wsgate run` on a config it must refuse: its exit code and stderr. A run
/// that starts serving instead is stopped after a while, so a regression
/// fails the test instead of hanging it.
fn run_refusal(yaml: &str, files: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["run", "-c", path.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("WSGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wsgate");
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    (out.status.code(), text(&out.stderr))
}

const ECHO_ROUTE: &str = "routes:\n  - id: echo\n    path: /echo\n    upstream: ws://127.0.0.1:9\n";

#[test]
fn check_refuses_a_certificate_that_is_not_its_keys() {
    let ca = pki::Ca::new("cli test CA");
    let (a, b) = (ca.server(&["localhost"]), ca.server(&["chat.example.com"]));
    let files = [
        ("a.pem", a.cert_pem.as_str()),
        ("a.key", a.key_pem.as_str()),
        ("b.pem", b.cert_pem.as_str()),
        ("b.key", b.key_pem.as_str()),
    ];
    let listener = |tls: &str| {
        head().replace(
            "listeners:\n  - bind: \"127.0.0.1:0\"\n",
            &format!("listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {tls}\n"),
        ) + ECHO_ROUTE
    };
    let swapped = listener("{ cert: a.pem, key: b.key }");
    refused(
        &swapped,
        &files,
        "listeners[0].tls.key",
        "is not the private key of the certificate",
    );
    let sni = listener(
        "{ cert: a.pem, key: a.key, sni: [{ names: [chat.example.com], cert: b.pem, key: a.key }] }",
    );
    refused(
        &sni,
        &files,
        "listeners[0].tls.sni[0].key",
        "is not the private key",
    );
    let (_dir, out) = with_files(
        "check",
        &listener("{ cert: a.pem, key: a.key, sni: [{ names: [chat.example.com], cert: b.pem, key: b.key }] }"),
        &files,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_refuses_a_malformed_redis_url_without_printing_it() {
    let yaml = format!(
        "{}{ECHO_ROUTE}revocation:\n  store: redis\n  redis_url: \"redis://:hunter2-secret@127.0.0.1:port/0\"\n",
        head()
    );
    let err = refused(&yaml, &[], "revocation.redis_url", "not a usable Redis URL");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn check_refuses_short_hmac_secrets_and_admin_tokens() {
    let short_secret = good_config().replace(SECRET, "only-24-bytes-of-secret!");
    let err = refused(
        &short_secret,
        &[],
        "issuers[0].keys.secret",
        "too short for HS256",
    );
    assert!(!err.contains("only-24-bytes"), "{err}");
    let hs512 = good_config().replace("[HS256]", "[HS512]");
    refused(&hs512, &[], "issuers[0].keys.secret", "64 bytes");
    let short_admin = good_config().replace(ADMIN_TOKEN, "short-token");
    let err = refused(
        &short_admin,
        &[],
        "admin.token",
        "shorter than 16 characters",
    );
    assert!(!err.contains("short-token"), "{err}");
}

#[test]
fn check_refuses_cookie_tokens_without_origins_and_issuers_without_audiences() {
    let global = format!(
        "token_sources: [header, {{cookie: access_token}}]\n{}",
        good_config()
    );
    refused(&global, &[], "routes[0]", "cross-site WebSocket hijacking");
    let own = good_config() + "    token_sources: [{cookie: access_token}]\n";
    refused(&own, &[], "routes[0].token_sources[0]", "has no `origins`");
    let fine = own + "    origins: [\"https://app.example.com\"]\n";
    let (_dir, out) = check(&fine);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let no_aud = good_config().replace(&format!("    audiences: [\"{AUD}\"]\n"), "");
    refused(&no_aud, &[], "issuers[0].audiences", "missing");
}

#[test]
fn check_lists_every_error_at_once() {
    // Two unrelated mistakes: both are reported, each at its own line.
    let yaml = good_config()
        .replace(SECRET, "too-short")
        .replace(ADMIN_TOKEN, "tiny");
    let (_dir, out) = check(&yaml);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let secret_line = line_of(&yaml, "too-short");
    let admin_line = line_of(&yaml, "tiny");
    assert!(
        err.contains(&format!("gateway.yaml:{admin_line}:")) && err.contains("admin.token"),
        "{err}"
    );
    assert!(
        err.contains(&format!("gateway.yaml:{secret_line}:"))
            && err.contains("issuers[0].keys.secret"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn check_prints_warnings_and_exits_0() {
    let yaml = good_config().replace(
        "admin:\n  bind: \"127.0.0.1:0\"",
        "admin:\n  bind: \"0.0.0.0:0\"",
    ) + "  - id: all\n    path: /*\n    upstream: ws://127.0.0.1:9\n    auth: none\n";
    // The protected route needs a rule for the path-variant warning.
    let yaml = yaml.replace(
        "    upstream: ws://127.0.0.1:9\n  - id: all",
        "    upstream: ws://127.0.0.1:9\n    require: [{claim: roles, any_of: [chat]}]\n  - id: all",
    );
    let (_dir, out) = check(&yaml);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{err}");
    assert!(
        stdout.contains("OK") && stdout.contains("(2 warnings)"),
        "{stdout}"
    );
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    let admin_line = line_of(&yaml, "0.0.0.0:0");
    assert!(
        err.contains(&format!("gateway.yaml:{admin_line}:")),
        "line {admin_line} not named: {err}"
    );
    assert!(
        err.contains("admin.bind: the admin listener has no TLS"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].path: `/ECHO` (letter case)"),
        "{err}"
    );
    assert!(err.contains("reach routes[1] (`all`)"), "{err}");
}
