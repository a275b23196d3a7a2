//! Every shell block of the documentation runs: the ```sh, ```bash, ```shell
//! and ```console blocks of README.md, docs/*.md and deploy/README.md.
//!
//! Each block runs with `bash -euo pipefail` (so any failing command, not only
//! the last one, fails it) in a fresh temporary folder that holds what the
//! docs assume:
//!
//! - `gateway.yaml`: a copy of the repository's, or the config a YAML block
//!   marked `gateway.yaml` (below) puts in force;
//! - on `PATH`: the built binary as `wsgate`, a `cargo` whose `cargo run
//!   [--release] [-q] -- ARGS` runs that binary with ARGS (what the README's
//!   `cargo run` does once built), and `target/pyenv/bin` when tests/run
//!   has made it;
//! - the environment the docs tell the reader to set: `TOKEN` (a demo token),
//!   `JWT_SECRET`, and `WSGATE_ADMIN_TOKEN` (the admin token of the running
//!   gateway).
//!
//! The blocks that talk to a gateway talk to one started by the test: the
//! first command of the README's quick start (`cargo run --release -- run`)
//! in a folder with the repository's `gateway.yaml`, whose `127.0.0.1:8080`,
//! `:9090` and `:9001` become free ports (the same addresses are rewritten in
//! the blocks). It is stopped by its PID at the end.
//!
//! In ```console blocks, the `$ ` lines (and their `\` continuations) are the
//! commands; the other lines are sample output. A ```sh block must not have
//! `$ ` prompts.
//!
//! HTML comments right before a block steer it (several may be given, in one
//! comment separated by `;` or in several comments):
//!
//! - `<!-- doc-test: skip (REASON) -->`: not run (needs a network, a daemon
//!   such as Docker, systemd or Kubernetes, or runs for minutes); the test
//!   prints it with its reason;
//! - `<!-- doc-test: needs websocat python3:websockets -->`: run only when
//!   each command is on `PATH` and each `python3:MODULE` imports; otherwise
//!   listed as skipped;
//! - `<!-- doc-test: continues -->`: run in the same shell after the nearest
//!   earlier shell block of the file that is not itself `continues` (so a
//!   block can use the variables and files that one made);
//! - `<!-- doc-test: gateway.yaml -->` on a ```yaml block: from there to the
//!   end of the file, blocks run with the repository's `gateway.yaml` whose
//!   top-level keys named in the block are replaced by the block's.
//!
//! A block that fails fails the test, with its output; so does an unknown
//! directive.
// Tests measure real (wall) time: the async-code bans of .clippy.toml do not
// apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(15);
/// The admin token of the gateway the blocks talk to: the quick-start
/// config's default (`${WSGATE_ADMIN_TOKEN:-demo-admin-token}`).
const ADMIN_TOKEN: &str = "demo-admin-token";
/// The addresses of the repository's gateway.yaml: listener, admin, echo.
const ADDRS: [&str; 3] = ["127.0.0.1:8080", "127.0.0.1:9090", "127.0.0.1:9001"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documentation files, in the order their blocks run.
fn doc_files() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    let mut files = vec!["README.md".to_owned()];
    files.extend(docs);
    files.push("deploy/README.md".to_owned());
    files
}

#[derive(Debug, Clone, PartialEq)]
enum Directive {
    Skip(String),
    Needs(Vec<String>),
    Continues,
    Config,
}

#[derive(Debug)]
struct Block {
    /// `file:line` of the opening fence.
    at: String,
    lang: String,
    body: String,
    directives: Vec<Directive>,
}

impl Block {
    fn is_shell(&self) -> bool {
        matches!(self.lang.as_str(), "sh" | "bash" | "shell" | "console")
    }

    fn skip_reason(&self) -> Option<&str> {
        self.directives.iter().find_map(|d| match d {
            Directive::Skip(r) => Some(r.as_str()),
            _ => None,
        })
    }

    fn has(&self, d: &Directive) -> bool {
        self.directives.contains(d)
    }

    /// The commands to run: the body, or a console block's `$ ` lines.
    fn script(&self) -> Result<String, String> {
        if self.lang != "console" {
            if let Some(l) = self.body.lines().find(|l| l.starts_with("$ ")) {
                return Err(format!(
                    "a ```{} block with a `$ ` prompt ({l:?}): make it ```console",
                    self.lang
                ));
            }
            return Ok(self.body.clone());
        }
        let mut script = String::new();
        let mut continued = false;
        for line in self.body.lines() {
            if continued {
                script.push_str(line);
            } else if let Some(cmd) = line.strip_prefix("$ ") {
                script.push_str(cmd);
            } else {
                continue;
            }
            script.push('\n');
            continued = line.ends_with('\\');
        }
        if script.is_empty() {
            return Err("a ```console block without a `$ ` command".into());
        }
        Ok(script)
    }
}

fn parse_directives(comment: &str) -> Result<Vec<Directive>, String> {
    // `;` separates directives, except inside a skip's `( )`.
    let mut parts = vec![String::new()];
    let mut depth = 0usize;
    for c in comment.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    let mut out = Vec::new();
    for part in parts.iter().map(|p| p.trim()) {
        let d = if let Some(rest) = part.strip_prefix("skip") {
            let reason = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .ok_or_else(|| format!("`{part}`: write `skip (REASON)`"))?;
            Directive::Skip(reason.to_owned())
        } else if let Some(rest) = part.strip_prefix("needs ") {
            Directive::Needs(rest.split_whitespace().map(str::to_owned).collect())
        } else if part == "continues" {
            Directive::Continues
        } else if part == "gateway.yaml" {
            Directive::Config
        } else {
            return Err(format!("unknown doc-test directive `{part}`"));
        };
        out.push(d);
    }
    Ok(out)
}

/// Every fenced block of `file` (relative to the repository), with the
/// doc-test directives of the HTML comments right before it.
fn blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(lang) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let start = i;
        let mut body = String::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            let line = lines[i];
            let strip = indent.min(line.len() - line.trim_start().len());
            body.push_str(&line[strip..]);
            body.push('\n');
            i += 1;
        }
        assert!(i < lines.len(), "{file}:{}: unclosed code block", start + 1);
        i += 1;

        let mut directives = Vec::new();
        let mut j = start;
        while j > 0 {
            let prev = lines[j - 1].trim();
            if prev.is_empty() {
                j -= 1;
                continue;
            }
            let Some(inner) = prev
                .strip_prefix("<!--")
                .and_then(|p| p.strip_suffix("-->"))
                .map(str::trim)
            else {
                break;
            };
            let Some(spec) = inner.strip_prefix("doc-test:") else {
                break;
            };
            let parsed =
                parse_directives(spec.trim()).unwrap_or_else(|e| panic!("{file}:{j}: {e}"));
            directives.splice(0..0, parsed);
            j -= 1;
        }
        out.push(Block {
            at: format!("{file}:{}", start + 1),
            lang: lang.trim().to_owned(),
            body,
            directives,
        });
    }
    out
}

/// The repository's gateway.yaml with the top-level keys of `overlay`
/// replaced by the overlay's.
fn merged_config(overlay: &str) -> String {
    let base = std::fs::read_to_string(repo().join("gateway.yaml")).unwrap();
    let mut base: serde_yaml::Mapping = serde_yaml::from_str(&base).unwrap();
    let overlay: serde_yaml::Mapping =
        serde_yaml::from_str(overlay).expect("a `gateway.yaml` block is a YAML mapping");
    for (k, v) in overlay {
        base.insert(k, v);
    }
    serde_yaml::to_string(&base).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of `GET path` on `addr`, if it answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A folder with `wsgate` and the `cargo run` stand-in, for `PATH`.
fn tool_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_wsgate"), dir.path().join("wsgate")).unwrap();
    let cargo = dir.path().join("cargo");
    std::fs::write(
        &cargo,
        r#"#!/bin/sh
# The docs' `cargo run [--release] [-q] -- ARGS`: the built wsgate with ARGS.
[ "$1" = run ] || { echo "docs test: only \`cargo run\` is available here, not \`cargo $*\`" >&2; exit 2; }
shift
while [ $# -gt 0 ]; do
    case $1 in
        --release|-q|--quiet) shift ;;
        --) shift; exec wsgate "$@" ;;
        *) echo "docs test: \`cargo run $1\` is not emulated" >&2; exit 2 ;;
    esac
done
exec wsgate
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn search_path(tools: &Path) -> String {
    let mut parts = vec![tools.to_string_lossy().into_owned()];
    let venv = repo().join("target/pyenv/bin");
    if venv.join("python3").exists() {
        parts.push(venv.to_string_lossy().into_owned());
    }
    parts.push(std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
    parts.join(":")
}

/// The README's quick-start commands (comments dropped).
fn quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("README has a `## Quick start` section");
    let block = blocks("README.md")
        .into_iter()
        .find(|b| b.is_shell() && section.contains(b.body.as_str()))
        .expect("a shell block in the quick start");
    block
        .body
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The gateway the blocks talk to, started as the README's quick start
/// starts it; stopped (SIGTERM, then SIGKILL) by its PID when dropped.
struct Gateway {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    addrs: Vec<String>,
}

impl Gateway {
    fn start(command: &str, path: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = ADDRS
            .iter()
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut config = std::fs::read_to_string(repo().join("gateway.yaml")).unwrap();
        for (from, to) in ADDRS.iter().zip(&addrs) {
            config = config.replace(from, to);
        }
        std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
        let log = dir.path().join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        // `exec`: the `cargo` stand-in execs wsgate, so this PID is wsgate's.
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            child,
            log,
            _dir: dir,
            addrs,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(&gw.addrs[1], "/readyz") != Some(200) {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("`{command}` exited ({status}):\n{}", gw.logs());
            }
            assert!(
                Instant::now() < deadline,
                "`{command}` not ready:\n{}",
                gw.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `text` with the quick-start addresses replaced by this gateway's.
    fn rewrite(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (from, to) in ADDRS.iter().zip(&self.addrs) {
            text = text.replace(from, to);
        }
        text
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether each `needs` word is available: a command on `path`, or a
/// `python3:MODULE` that imports.
fn missing_need(needs: &[String], path: &str) -> Option<String> {
    for need in needs {
        let ok = if let Some(module) = need.strip_prefix("python3:") {
            Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .env("PATH", path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        } else {
            path.split(':').any(|d| Path::new(d).join(need).is_file())
        };
        if !ok {
            return Some(format!("needs {need}, not available here"));
        }
    }
    None
}

struct Run {
    ok: bool,
    report: String,
}

/// Runs `script` with `bash -euo pipefail` in a fresh folder holding
/// `config` as gateway.yaml; stopped (its whole process group, by id) after
/// BLOCK_TIMEOUT.
fn run_block(script: &str, config: &str, env: &[(&str, String)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let stdout = logs.path().join("stdout");
    let stderr = logs.path().join("stderr");
    let mut child = Command::new("bash")
        .args(["--noprofile", "--norc", "-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env_clear()
        .env("HOME", dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BLOCK_TIMEOUT;
    // The block's process group (its id is bash's PID): what a block left in
    // the background is ended with it.
    let group = format!("-{}", child.id());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let ok = status.is_some_and(|s| s.success());
    let verdict = match status {
        Some(s) => s.to_string(),
        None => format!("still running after {BLOCK_TIMEOUT:?}"),
    };
    Run {
        ok,
        report: format!(
            "--- script\n{script}--- {verdict}\n--- stdout\n{}--- stderr\n{}",
            read(&stdout),
            read(&stderr)
        ),
    }
}

#[test]
fn every_shell_block_of_the_docs_runs_or_is_skipped_with_a_reason() {
    let started = Instant::now();
    let tools = tool_dir();
    let path = search_path(tools.path());

    let token = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["token", "-c"])
        .arg(repo().join("gateway.yaml"))
        .args(["--issuer", "demo", "--sub", "alice"])
        .args(["--claim", "roles=chat", "--claim", "rooms=lobby"])
        .env_remove("WSGATE_DEMO_SECRET")
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let env = [
        ("PATH", path.clone()),
        ("TOKEN", token),
        ("JWT_SECRET", "0123456789abcdef".repeat(4)),
        ("WSGATE_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ];

    let quick = quick_start();
    let gateway = Gateway::start(&quick[0], &path);

    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    let mut shell_blocks = 0;
    for file in doc_files() {
        let blocks = blocks(&file);
        let mut config = std::fs::read_to_string(repo().join("gateway.yaml")).unwrap();
        // The block a `continues` block runs after, and whether it was run.
        let mut head: Option<(usize, Option<String>)> = None;
        for (i, block) in blocks.iter().enumerate() {
            if block.has(&Directive::Config) {
                assert_eq!(
                    block.lang, "yaml",
                    "{}: `gateway.yaml` marks a YAML block",
                    block.at
                );
                config = merged_config(&block.body);
                continue;
            }
            if !block.is_shell() {
                assert!(
                    block.directives.is_empty(),
                    "{}: doc-test directives on a ```{} block",
                    block.at,
                    block.lang
                );
                continue;
            }
            shell_blocks += 1;
            let continues = block.has(&Directive::Continues);
            let script = match block.script() {
                Ok(s) => gateway.rewrite(&s),
                Err(e) => {
                    failed.push(format!("{}: {e}", block.at));
                    continue;
                }
            };
            let mut reason = block.skip_reason().map(str::to_owned);
            if reason.is_none() {
                if let Some(Directive::Needs(needs)) = block
                    .directives
                    .iter()
                    .find(|d| matches!(d, Directive::Needs(_)))
                {
                    reason = missing_need(needs, &path);
                }
            }
            let prefix = if continues {
                match &head {
                    None => {
                        failed.push(format!("{}: `continues` with no block before it", block.at));
                        continue;
                    }
                    Some((h, None)) => {
                        reason.get_or_insert_with(|| {
                            format!("continues {}, which is skipped", blocks[*h].at)
                        });
                        String::new()
                    }
                    Some((_, Some(prefix))) => prefix.clone(),
                }
            } else {
                head = Some((i, reason.is_none().then(|| script.clone())));
                String::new()
            };
            if let Some(reason) = reason {
                skipped.push(format!("{}: {reason}", block.at));
                continue;
            }
            let full = format!("{prefix}{script}");
            let run = run_block(&full, &config, &env);
            if run.ok {
                ran.push(block.at.clone());
            } else {
                failed.push(format!("{}:\n{}", block.at, run.report));
            }
        }
    }
    let elapsed = started.elapsed();

    let mut summary = format!(
        "{shell_blocks} shell blocks: {} ran, {} skipped, {} failed ({elapsed:.1?})\n",
        ran.len(),
        skipped.len(),
        failed.len()
    );
    for at in &ran {
        let _ = writeln!(summary, "  ran      {at}");
    }
    for s in &skipped {
        let _ = writeln!(summary, "  skipped  {s}");
    }
    // Straight to stderr, not through the captured `println!`: the list of
    // skipped blocks shows in every run, tests/run's log included.
    let _ = std::io::stderr().write_all(summary.as_bytes());
    assert!(
        failed.is_empty(),
        "{summary}\n{}\n--- gateway log\n{}",
        failed.join("\n"),
        gateway.logs()
    );
    assert!(!ran.is_empty(), "{summary}");
}

#[test]
fn the_readme_quick_start_is_two_commands_the_gateway_and_the_suite() {
    assert_eq!(
        quick_start(),
        ["cargo run --release -- run", "tests/run"],
        "README quick start"
    );
    let config = std::fs::read_to_string(repo().join("gateway.yaml")).unwrap();
    let config: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    assert!(
        config["demo"]["echo"].is_string(),
        "the quick-start gateway.yaml runs the built-in echo (demo.echo)"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(repo().join("tests/run"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "tests/run is executable");
}
