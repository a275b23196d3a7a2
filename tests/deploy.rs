//! The deployment files under `deploy/` stay in step with the gateway: every
//! YAML file parses, and every `gateway.yaml` they carry (a ConfigMap's
//! `data."gateway.yaml"`, or a standalone config file) passes `wsgate check`
//! with the environment the manifests would give it. The repository's
//! quick-start `gateway.yaml` is checked the same way.
//!
//! The image and the examples that run it: the Dockerfile strips the binary
//! (for the image only), runs it as a user other than root on a distroless
//! base, with a volume for the only writable folder; the Kubernetes and
//! Compose examples set a read-only root filesystem; every `docker run`
//! example passes the variables the quick-start config needs.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.yaml`/`.yml` file under `dir`, sorted. A Helm chart's
/// `templates/` are Go templates, YAML only once rendered: tests/py/test_helm.py
/// renders them with helm and checks the result (including `wsgate check`).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            let chart_templates = path.ends_with("templates")
                && path.parent().is_some_and(|c| c.join("Chart.yaml").exists());
            if chart_templates {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// All documents of a (possibly multi-document) YAML file; empty documents
/// (a leading `---`) are dropped.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The value given to a variable the manifests do not set: long enough for
/// any HS secret (64 bytes for HS512) and for an admin token (16).
fn placeholder(name: &str) -> String {
    format!("test-value-for-{name}-{}", "0123456789abcdef".repeat(4))
}

/// What `wsgate check` is run with: the Secrets' values by (secret, key), and
/// the literal env values of the containers.
#[derive(Default)]
struct Env {
    secrets: BTreeMap<(String, String), String>,
    vars: BTreeMap<String, String>,
}

impl Env {
    fn from_documents(docs: &[Value]) -> Self {
        let mut env = Env::default();
        for doc in docs
            .iter()
            .filter(|d| str_at(d, &["kind"]) == Some("Secret"))
        {
            let name = str_at(doc, &["metadata", "name"]).unwrap_or_default();
            if let Some(Value::Mapping(data)) = doc.get("stringData") {
                for (k, v) in data {
                    if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                        env.secrets
                            .insert((name.to_owned(), k.to_owned()), v.to_owned());
                    }
                }
            }
        }
        for doc in docs {
            let Some(Value::Sequence(containers)) = doc
                .get("spec")
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("spec"))
                .and_then(|s| s.get("containers"))
            else {
                continue;
            };
            for var in containers
                .iter()
                .filter_map(|c| c.get("env").and_then(Value::as_sequence))
                .flatten()
            {
                let Some(name) = str_at(var, &["name"]) else {
                    continue;
                };
                let value = if let Some(v) = str_at(var, &["value"]) {
                    v.to_owned()
                } else if let (Some(secret), Some(key)) = (
                    str_at(var, &["valueFrom", "secretKeyRef", "name"]),
                    str_at(var, &["valueFrom", "secretKeyRef", "key"]),
                ) {
                    env.secrets
                        .get(&(secret.to_owned(), key.to_owned()))
                        .cloned()
                        .unwrap_or_else(|| placeholder(name))
                } else {
                    placeholder(name)
                };
                env.vars.insert(name.to_owned(), value);
            }
        }
        env
    }
}

/// Runs `wsgate check -c <file>` with exactly `vars` as the environment.
/// Absolute folders named by the variables (state folders such as
/// `/var/lib/wsgate`) are re-rooted under `root` and created there.
fn check(config: &Path, vars: &BTreeMap<String, String>, root: &Path) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    cmd.arg("check").arg("-c").arg(config).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (name, value) in vars {
        let value = if value.starts_with('/') && !value.contains(' ') {
            let rerooted = root.join(value.trim_start_matches('/'));
            std::fs::create_dir_all(&rerooted).unwrap();
            rerooted.to_string_lossy().into_owned()
        } else {
            value.clone()
        };
        cmd.env(name, value);
    }
    // Standalone configs (deploy/docker) default their state folder to
    // /var/lib/wsgate; point it into the temporary folder.
    if !vars.contains_key("WSGATE_STATE_DIR") {
        let state = root.join("var/lib/wsgate");
        std::fs::create_dir_all(&state).unwrap();
        cmd.env("WSGATE_STATE_DIR", state);
    }
    let out = cmd.output().expect("run wsgate check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `${NAME}` references without a default in `text`.
fn required_vars(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(inner, _)| inner))
        .filter(|inner| !inner.contains(":-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_deploy_yaml_parses_and_embedded_configs_pass_check() {
    let files = yaml_files(&repo().join("deploy"));
    assert!(!files.is_empty(), "no YAML under deploy/");
    let mut checked = Vec::new();
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{}: no YAML documents", file.display());
        let env = Env::from_documents(&docs);
        for doc in &docs {
            let config_text = if str_at(doc, &["kind"]) == Some("ConfigMap") {
                str_at(doc, &["data", "gateway.yaml"]).map(str::to_owned)
            } else if doc.get("listeners").is_some() && doc.get("kind").is_none() {
                // A standalone gateway config (deploy/docker/gateway.yaml).
                Some(std::fs::read_to_string(file).unwrap())
            } else {
                None
            };
            let Some(config_text) = config_text else {
                continue;
            };
            let mut vars = env.vars.clone();
            if doc.get("kind").is_none() {
                // A standalone config gets its variables from `docker run -e`
                // (see its header): give each required one a value.
                for name in required_vars(&config_text) {
                    // Long enough for the checks on secrets (32+ bytes).
                    vars.entry(name.clone())
                        .or_insert_with(|| placeholder(&name));
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("etc/wsgate/gateway.yaml");
            std::fs::create_dir_all(config.parent().unwrap()).unwrap();
            std::fs::write(&config, &config_text).unwrap();
            let (ok, output) = check(&config, &vars, dir.path());
            assert!(
                ok,
                "{}: embedded gateway.yaml fails `wsgate check`:\n{output}",
                file.display()
            );
            assert!(output.contains("OK"), "{output}");
            checked.push(file.clone());
        }
    }
    for expected in [
        "deploy/kubernetes/sidecar.yaml",
        "deploy/kubernetes/gateway.yaml",
        "deploy/docker/gateway.yaml",
    ] {
        assert!(
            checked.contains(&repo().join(expected)),
            "{expected}: no gateway config found to check (checked: {checked:?})"
        );
    }
}

#[test]
fn kubernetes_manifests_have_the_expected_shape() {
    let sidecar = documents(&repo().join("deploy/kubernetes/sidecar.yaml"));
    let gateway = documents(&repo().join("deploy/kubernetes/gateway.yaml"));
    let kinds = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .filter_map(|d| str_at(d, &["kind"]).map(str::to_owned))
            .collect()
    };
    for kind in ["Secret", "ConfigMap", "Deployment", "Service"] {
        assert!(
            kinds(&sidecar).iter().any(|k| k == kind),
            "sidecar lacks {kind}"
        );
    }
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
        assert!(
            kinds(&gateway).iter().any(|k| k == kind),
            "gateway lacks {kind}"
        );
    }

    // Every wsgate container probes /healthz and /readyz, and the pod waits
    // longer than shutdown_grace before it is killed.
    for (name, docs) in [("sidecar", &sidecar), ("gateway", &gateway)] {
        let config: Value = docs
            .iter()
            .find_map(|d| str_at(d, &["data", "gateway.yaml"]))
            .map(|t| serde_yaml::from_str(t).unwrap())
            .unwrap();
        let grace = str_at(&config, &["limits", "shutdown_grace"]).unwrap();
        let grace = wsgate::config::parse_duration(grace).unwrap().as_secs();
        let drain_delay = str_at(&config, &["limits", "drain_delay"])
            .map_or(0, |d| wsgate::config::parse_duration(d).unwrap().as_secs());
        let mut found = false;
        for doc in docs
            .iter()
            .filter(|d| str_at(d, &["kind"]) == Some("Deployment"))
        {
            let spec = &doc["spec"]["template"]["spec"];
            let Some(containers) = spec["containers"].as_sequence() else {
                continue;
            };
            for c in containers {
                let image = str_at(c, &["image"]).unwrap_or_default();
                if !image.starts_with("wsgate") {
                    continue;
                }
                found = true;
                assert_eq!(
                    str_at(c, &["livenessProbe", "httpGet", "path"]),
                    Some("/healthz"),
                    "{name}"
                );
                assert_eq!(
                    str_at(c, &["readinessProbe", "httpGet", "path"]),
                    Some("/readyz"),
                    "{name}"
                );
                // The kubelet's clock runs from the preStop hook: the
                // pause, drain_delay and the grace must all fit.
                let termination = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
                let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
                    .as_u64()
                    .unwrap_or(0);
                let needed = pause + drain_delay + grace;
                assert!(
                    termination > needed,
                    "{name}: terminationGracePeriodSeconds {termination} <= preStop {pause}s + drain_delay {drain_delay}s + shutdown_grace {grace}s"
                );
            }
        }
        assert!(found, "{name}: no wsgate container");
    }

    let replicas = gateway
        .iter()
        .find(|d| {
            str_at(d, &["kind"]) == Some("Deployment")
                && str_at(d, &["metadata", "name"]) == Some("wsgate")
        })
        .and_then(|d| d["spec"]["replicas"].as_u64());
    assert_eq!(replicas, Some(3));
}

#[test]
fn the_quick_start_gateway_yaml_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, output) = check(&repo().join("gateway.yaml"), &BTreeMap::new(), dir.path());
    assert!(ok, "gateway.yaml fails `wsgate check`:\n{output}");
}

/// `docker run` commands in `text` (Markdown, or `#` comments), each joined
/// from its `\` continuation lines and split on whitespace.
fn docker_run_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches('#').trim();
        if current.is_empty() && !line.starts_with("docker run ") {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(current.split_whitespace().map(str::to_owned).collect());
                current.clear();
            }
        }
    }
    out
}

/// The names a `docker run` command passes with `-e NAME[=VALUE]`.
fn env_names(cmd: &[String]) -> Vec<String> {
    cmd.windows(2)
        .filter(|w| w[0] == "-e" || w[0] == "--env")
        .map(|w| w[1].split('=').next().unwrap().to_owned())
        .collect()
}

#[test]
fn docker_run_examples_pass_every_variable_the_config_needs() {
    let config = std::fs::read_to_string(repo().join("deploy/docker/gateway.yaml")).unwrap();
    let needed = required_vars(&config);
    assert!(needed.contains(&"JWT_SECRET".to_owned()), "{needed:?}");
    let mut seen = 0;
    for file in [
        "deploy/README.md",
        "deploy/Dockerfile",
        "deploy/docker/gateway.yaml",
        "deploy/docker/compose.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for cmd in docker_run_commands(&text) {
            let line = cmd.join(" ");
            // The ones that mount the quick-start config.
            if !cmd.iter().any(|a| a.contains("deploy/docker:/etc/wsgate")) {
                continue;
            }
            seen += 1;
            let passed = env_names(&cmd);
            for name in &needed {
                assert!(
                    passed.contains(name),
                    "{file}: `{line}` does not pass {name}, which deploy/docker/gateway.yaml needs"
                );
            }
            if !cmd.iter().any(|a| a == "--entrypoint") {
                assert!(
                    cmd.iter().any(|a| a == "--read-only"),
                    "{file}: `{line}` runs the gateway without --read-only"
                );
            }
        }
    }
    assert!(seen >= 4, "only {seen} docker run commands found");
}

/// The Dockerfile's instructions per stage: (instruction, arguments), with
/// comments dropped and `\` continuations joined.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (current.is_empty() && line.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (instr, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        let instr = instr.to_uppercase();
        if instr == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push((instr, args.trim().to_owned()));
        current.clear();
    }
    stages
}

#[test]
fn the_image_is_stripped_and_runs_as_non_root_on_a_read_only_root_filesystem() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[stages.len() - 2], &stages[stages.len() - 1]);
    let args_of = |stage: &[(String, String)], instr: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(i, _)| i == instr)
            .map(|(_, a)| a.clone())
            .collect()
    };

    // Stripped: the build stage sets CARGO_PROFILE_RELEASE_STRIP before it
    // builds, or strips the binary itself.
    let build_at = build
        .iter()
        .position(|(i, a)| i == "RUN" && a.contains("cargo build --release"))
        .expect("the build stage runs cargo build --release");
    let strips = build[..build_at].iter().any(|(i, a)| {
        (i == "ENV" || i == "ARG")
            && a.replace(' ', "=")
                .contains("CARGO_PROFILE_RELEASE_STRIP=symbols")
    }) || args_of(build, "RUN")
        .iter()
        .any(|a| a.contains("strip ") && a.contains("wsgate"));
    assert!(strips, "the image's binary is not stripped");
    // ...for the image only: the release profile keeps the symbols the
    // benchmarks' profiles need.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let release = manifest
        .split("\n[profile.release]\n")
        .nth(1)
        .map(|rest| rest.split("\n[").next().unwrap())
        .unwrap_or_default();
    assert!(
        !release.lines().any(|l| l.trim_start().starts_with("strip")),
        "Cargo.toml's [profile.release] strips; strip in the Dockerfile instead"
    );

    // A distroless (or empty) base: no shell, so no RUN and an exec-form
    // ENTRYPOINT.
    let base = &runtime[0].1;
    assert!(
        base.contains("distroless") || base.starts_with("scratch"),
        "runtime base {base}"
    );
    assert!(
        args_of(runtime, "RUN").is_empty(),
        "RUN in a runtime stage without a shell"
    );
    let entrypoint = args_of(runtime, "ENTRYPOINT");
    assert!(
        entrypoint.len() == 1 && entrypoint[0].starts_with('['),
        "ENTRYPOINT in exec form: {entrypoint:?}"
    );

    // Not root.
    let user = args_of(runtime, "USER");
    let user = user.last().expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "the image runs as {user}");

    // Read-only root filesystem: the only writable folder is a volume, owned
    // by that user.
    let volumes = args_of(runtime, "VOLUME").join(" ");
    assert!(volumes.contains("/var/lib/wsgate"), "VOLUME {volumes}");
    assert!(
        args_of(runtime, "COPY")
            .iter()
            .any(|a| a.contains(&format!("--chown={user}")) && a.ends_with("/var/lib/wsgate")),
        "/var/lib/wsgate is not given to {user}"
    );

    // The examples run it so.
    for file in [
        "deploy/kubernetes/sidecar.yaml",
        "deploy/kubernetes/gateway.yaml",
    ] {
        let mut found = false;
        for doc in documents(&repo().join(file)) {
            let spec = &doc["spec"]["template"]["spec"];
            let Some(containers) = spec["containers"].as_sequence() else {
                continue;
            };
            for c in containers
                .iter()
                .filter(|c| str_at(c, &["image"]).is_some_and(|i| i.starts_with("wsgate")))
            {
                found = true;
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}");
                assert_eq!(
                    sc["allowPrivilegeEscalation"].as_bool(),
                    Some(false),
                    "{file}"
                );
                let non_root = sc["runAsNonRoot"]
                    .as_bool()
                    .or(spec["securityContext"]["runAsNonRoot"].as_bool());
                assert_eq!(non_root, Some(true), "{file}: runAsNonRoot");
                assert_ne!(sc["runAsUser"].as_u64(), Some(0), "{file}");
            }
        }
        assert!(found, "{file}: no wsgate container");
    }
    let compose = documents(&repo().join("deploy/docker/compose.yaml"));
    let service = &compose[0]["services"]["wsgate"];
    assert_eq!(
        service["read_only"].as_bool(),
        Some(true),
        "compose: read_only"
    );
    let compose_user = str_at(service, &["user"]).unwrap_or(user);
    assert!(!compose_user.starts_with('0') && !compose_user.starts_with("root"));
    let config = std::fs::read_to_string(repo().join("deploy/docker/gateway.yaml")).unwrap();
    for name in required_vars(&config) {
        assert!(
            service["environment"].get(name.as_str()).is_some(),
            "compose: {name} not in environment"
        );
    }
    let grace = |v: &str| wsgate::config::parse_duration(v).unwrap();
    let config: Value = serde_yaml::from_str(&config).unwrap();
    assert!(
        grace(str_at(service, &["stop_grace_period"]).unwrap())
            > grace(str_at(&config, &["limits", "shutdown_grace"]).unwrap()),
        "compose: stop_grace_period not longer than shutdown_grace"
    );
}
