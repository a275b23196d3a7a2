//! The deployment files under `deploy/` stay in step with the gateway: every
//! YAML file parses, and every `gateway.yaml` they carry (a ConfigMap's
//! `data."gateway.yaml"`, or a standalone config file) passes `wsgate check`
//! with the environment the manifests would give it. The repository's
//! quick-start `gateway.yaml` is checked the same way.
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

/// Every `.yaml`/`.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
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
                        .unwrap_or_else(|| format!("test-value-for-{name}"))
                } else {
                    format!("test-value-for-{name}")
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
                        .or_insert_with(|| format!("test-value-for-{name}-0123456789abcdef"));
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
                let termination = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
                assert!(
                    termination > grace,
                    "{name}: terminationGracePeriodSeconds {termination} <= shutdown_grace {grace}s"
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
