#!/usr/bin/env python3
"""Replicas on one host, measured: several wsgate processes on one TLS port
(`reuse_port`), one Redis, echo upstreams and load generators holding tens of
thousands of authenticated sessions; then a subject revocation (sessions on
every process) and a claim revocation covering 10,000 sessions.

    bench/cluster.py                  # 42,000 sessions: 5 gateways, 3 loadgens, 3 echoes
    bench/cluster.py --sessions 3000 --gateways 2 --loadgens 1 --echoes 1   # quick

Loopback only. Every process it starts is ended by PID on exit. Each process
may open at most 20,000 files here, so a gateway (two per session) holds at
most ~9,900 sessions and a load generator or echo (one each) ~19,900.
Records: sessions held, RSS per session, idle CPU, Redis commands per second
(idle and around the revocations), the time from each admin call to the last
close (p50/p99/max over the closed sessions), and the cluster-wide list.
Writes bench/results/cluster-<date>.md and prints the same table.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "cluster")
SECRET = "cluster-bench-secret-0123456789abcdef"
ADMIN = "cluster-bench-admin-token"
PROCS = []


def say(*a):
    print("==", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, **kw):
    p = subprocess.Popen(args, **kw)
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in PROCS:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cmd(port, *args):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def redis_commands(port):
    for line in redis_cmd(port, "INFO", "stats").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return 0


def admin(port, method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def metric(port, name):
    _, body = admin(port, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def config(node, port, admin_port, echoes, redis_port, max_sessions):
    urls = ", ".join(f"ws://127.0.0.1:{e}" for e in echoes)
    return f"""# Written by bench/cluster.py.
log: {{ level: info, format: text }}
node_id: {node}
listeners:
  - bind: "127.0.0.1:{port}"
    reuse_port: true
    tls: {{ cert: tls.crt, key: tls.key }}
admin:
  bind: "127.0.0.1:{admin_port}"
  token: "{ADMIN}"
issuers:
  - id: bench
    audiences: [bench]
    algorithms: [HS256]
    keys: {{ secret: "{SECRET}" }}
token_sources: [header]
routes:
  - id: echo
    path: /echo
    upstream: {{ urls: [{urls}] }}
revocation:
  store: redis
  redis_url: "redis://127.0.0.1:{redis_port}/0"
limits:
  max_sessions: {max_sessions}
  handshake_timeout: 30s
  shutdown_grace: 2s
"""


def pct(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


class Loadgen:
    """A `loadgen hold --watch` child and a thread reading its lines."""

    def __init__(self, args):
        self.p = start(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            with self.cv:
                self.lines.append(line.strip())
                self.cv.notify_all()

    def wait_line(self, prefix, timeout):
        deadline = time.time() + timeout
        with self.cv:
            while True:
                for i, l in enumerate(self.lines):
                    if l.startswith(prefix):
                        del self.lines[i]
                        return l
                left = deadline - time.time()
                if left <= 0 or self.p.poll() is not None:
                    raise SystemExit(f"loadgen: no {prefix} line (exit {self.p.poll()})")
                self.cv.wait(left)

    def send(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def closes(self):
        self.send("CLOSES")
        line = self.wait_line("CLOSES", 60)
        _, n, values = line.split(" ", 2)
        return json.loads(values)


def log_times(path, needle):
    """Unix ns of the log lines of `path` that contain `needle`."""
    import datetime
    out = []
    with open(path) as f:
        for line in f:
            if needle in line:
                ts = line.split()[0].rstrip("Z")
                d = datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc)
                out.append(int(d.timestamp() * 1e9))
    return out


def cpu_of(pids):
    total = 0.0
    for pid in pids:
        try:
            total += cpu_secs(pid)
        except OSError:
            pass
    return total


def revoke(gws, loadgens, rport, body, settle, idle_rate, roles):
    """Revokes on the first gateway; returns the measurements. Redis
    commands are counted over the window, less the idle rate (heartbeats)."""
    for lg in loadgens:
        lg.closes()  # forget earlier closes
    c0 = redis_commands(rport)
    cpu0 = {k: cpu_of(v) for k, v in roles.items()}
    t0 = time.time_ns()
    status, answer = admin(gws[0]["admin"], "POST", "/admin/revocations", body)
    answered_ms = (time.time_ns() - t0) / 1e6
    time.sleep(settle)
    c1 = redis_commands(rport)
    window = (time.time_ns() - t0) / 1e9
    cpu = {k: round(cpu_of(v) - cpu0[k], 3) for k, v in roles.items()}
    # When each other node applied it (its log line), after the admin call.
    applied = []
    for gw in gws[1:]:
        ts = [t for t in log_times(gw["log"], "revocation received from the store") if t >= t0]
        if ts:
            applied.append(round((ts[0] - t0) / 1e6, 1))
    closes = sorted((ns - t0) / 1e6 for lg in loadgens for ns in lg.closes())
    return {
        "status": status,
        "closed_reported": json.loads(answer).get("closed"),
        "closed_seen": len(closes),
        "admin_answer_ms": round(answered_ms, 1),
        "p50_ms": pct(closes, 0.50),
        "p99_ms": pct(closes, 0.99),
        "max_ms": closes[-1] if closes else None,
        "redis_commands": round(c1 - c0 - 1 - idle_rate * window),
        "applied_ms": applied,
        "cpu_secs": cpu,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=42000)
    ap.add_argument("--gateways", type=int, default=5)
    ap.add_argument("--loadgens", type=int, default=3)
    ap.add_argument("--echoes", type=int, default=3)
    ap.add_argument("--big-claim", type=int, default=10000)
    ap.add_argument("--idle-secs", type=float, default=10.0)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--wsgate", help="a wsgate binary to use instead of the release build")
    a = ap.parse_args()
    per_gw = a.sessions / a.gateways
    if per_gw > 9000 or a.sessions / a.loadgens > 19000 or a.sessions / a.echoes > 19000:
        raise SystemExit("too many sessions per process for a 20,000-file limit")

    if not a.no_build:
        say("building (release, niced)")
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "--bin", "wsgate"],
                       cwd=ROOT, check=True)
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release"],
                       cwd=os.path.join(ROOT, "bench"), check=True)
    os.makedirs(WORK, exist_ok=True)
    w = lambda n: os.path.join(WORK, n)
    shutil.copy(a.wsgate or os.path.join(ROOT, "target", "release", "wsgate"), w("wsgate"))
    bench_bin = os.path.join(ROOT, "bench", "target", "release")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", w("tls.key"), "-out", w("tls.crt"), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)

    # Tokens: `victim` spread over every load generator (so every gateway),
    # `tenant: t-big` on exactly --big-claim sessions, everyone else alone.
    now = int(time.time())
    claims = []
    every = max(2, a.sessions // a.big_claim)
    big = 0
    for i in range(a.sessions):
        sub = "victim" if i % 210 == 0 else f"user-{i}"
        # i % every == 1 never meets i % 210 == 0 (every <= 210 here).
        in_big = i % every == 1 and big < a.big_claim
        big += in_big
        tenant = "t-big" if in_big else f"t-{i % 97}"
        claims.append(json.dumps({"sub": sub, "aud": "bench", "jti": f"j-{i}", "iat": now - 10,
                                  "exp": now + 3 * 3600, "tenant": tenant}))
    victims = sum(1 for i in range(a.sessions) if i % 210 == 0)
    tokens = subprocess.run([os.path.join(bench_bin, "mint"), "--secret", SECRET],
                            input="\n".join(claims), capture_output=True, text=True,
                            check=True).stdout.split()
    for j in range(a.loadgens):
        with open(w(f"tokens-{j}.txt"), "w") as f:
            f.write("\n".join(tokens[j::a.loadgens]) + "\n")

    try:
        rport = free_port()
        redis_pid = start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no"], stdout=subprocess.DEVNULL).pid
        wait_port(rport)
        echoes, echo_pids = [], []
        for _ in range(a.echoes):
            port = free_port()
            echo_pids.append(start([os.path.join(bench_bin, "echo"), "--bind", f"127.0.0.1:{port}"],
                                   stdout=subprocess.DEVNULL).pid)
            echoes.append(port)
        for port in echoes:
            wait_port(port)

        port = free_port()
        gws = []
        for g in range(a.gateways):
            node = f"gw-{g + 1}"
            admin_port = free_port()
            with open(w(f"{node}.yaml"), "w") as f:
                f.write(config(node, port, admin_port, echoes, rport, 9800))
            log = open(w(f"{node}.log"), "w")
            p = start([w("wsgate"), "run", "-c", w(f"{node}.yaml")], stdout=log, stderr=log)
            gws.append({"node": node, "admin": admin_port, "pid": p.pid, "log": w(f"{node}.log")})
        for gw in gws:
            wait_port(gw["admin"])
        wait_port(port)
        time.sleep(2)  # heartbeats in, subscriptions up
        base_rss = {gw["node"]: rss_kib(gw["pid"]) for gw in gws}
        say(f"{a.gateways} gateways on 127.0.0.1:{port} (reuse_port), redis :{rport}, "
            f"echoes {echoes}; baseline RSS {base_rss} KiB")

        # Load generators, each from its own source addresses.
        per_lg = a.sessions // a.loadgens
        loadgens = []
        t_open = time.time()
        for j in range(a.loadgens):
            sources = ",".join(f"127.0.{j + 1}.{k}" for k in range(2, 10))
            loadgens.append(Loadgen([
                os.path.join(bench_bin, "loadgen"), "hold", "--addr", f"127.0.0.1:{port}",
                "--tls-ca", w("tls.crt"), "--path", "/echo", "--tokens", w(f"tokens-{j}.txt"),
                "--levels", str(per_lg), "--parallel", "32", "--watch", "--sources", sources]))
        held = 0
        for lg in loadgens:
            line = lg.wait_line("LEVEL", 900)
            say(line)
            held += int(line.split("ok=")[1].split()[0])
            lg.send("go")  # past the last level: the loadgen now takes commands
        open_secs = time.time() - t_open

        per_node = {gw["node"]: int(metric(gw["admin"], "wsgate_sessions_active")) for gw in gws}
        rss = {gw["node"]: rss_kib(gw["pid"]) for gw in gws}
        per_session = {n: (rss[n] - base_rss[n]) / max(per_node[n], 1) for n in rss}
        say(f"held {held} in {open_secs:.0f} s; per node {per_node}")

        # Idle: CPU of the gateways and Redis commands per second.
        cpu0 = sum(cpu_secs(gw["pid"]) for gw in gws)
        r0 = redis_commands(rport)
        time.sleep(a.idle_secs)
        idle_cpu = (sum(cpu_secs(gw["pid"]) for gw in gws) - cpu0) / a.idle_secs
        idle_redis = (redis_commands(rport) - r0) / a.idle_secs - 1 / a.idle_secs

        # The cluster-wide list from one node.
        t0 = time.time()
        _, body = admin(gws[0]["admin"], "GET", "/admin/sessions")
        listed = json.loads(body)
        list_secs = time.time() - t0
        victim_nodes = sorted({s["node"] for s in listed if s["sub"] == "victim"})
        say(f"listed {len(listed)} in {list_secs:.2f} s; victim on {victim_nodes}")

        roles = {"gateways": [g["pid"] for g in gws], "loadgens": [lg.p.pid for lg in loadgens],
                 "echoes": echo_pids, "redis": [redis_pid]}
        sub = revoke(gws, loadgens, rport, {"sub": "victim"}, 3, idle_redis, roles)
        say("revoke sub:", sub)
        claim = revoke(gws, loadgens, rport, {"claim": "tenant", "value": "t-big"}, 4, idle_redis, roles)
        say("revoke claim:", claim)
        for lg in loadgens:
            lg.send("QUIT")
    finally:
        stop_all()

    rows = [
        ("gateway processes / load generators / echoes", f"{a.gateways} / {a.loadgens} / {a.echoes}"),
        ("sessions held (TLS, authenticated)", f"{held:,} (per node: {', '.join(str(v) for v in per_node.values())})"),
        ("time to open them", f"{open_secs:.0f} s"),
        ("RSS per session, KiB (per node)", ", ".join(f"{v:.1f}" for v in per_session.values())),
        ("gateway CPU while idle (all processes, cores)", f"{idle_cpu:.4f}"),
        ("Redis commands/s while idle", f"{idle_redis:.1f}"),
        ("GET /admin/sessions from one node", f"{len(listed):,} sessions in {list_secs:.2f} s"),
        (f"revoke sub (sessions on {len(victim_nodes)} of {a.gateways} nodes)",
         f"closed {sub['closed_reported']} (expected {victims}, seen {sub['closed_seen']}); "
         f"answer {sub['admin_answer_ms']} ms; close p50 {sub['p50_ms']:.1f} ms, p99 {sub['p99_ms']:.1f} ms, "
         f"last {sub['max_ms']:.1f} ms; ≈{sub['redis_commands']} Redis commands beyond the idle rate; "
         f"applied on the other nodes after {sub['applied_ms']} ms; CPU s {sub['cpu_secs']}"),
        (f"revoke claim ({big:,} sessions)",
         f"closed {claim['closed_reported']} (seen {claim['closed_seen']}); answer {claim['admin_answer_ms']} ms; "
         f"close p50 {claim['p50_ms']:.1f} ms, p99 {claim['p99_ms']:.1f} ms, last {claim['max_ms']:.1f} ms; "
         f"≈{claim['redis_commands']} Redis commands beyond the idle rate; "
         f"applied on the other nodes after {claim['applied_ms']} ms; CPU s {claim['cpu_secs']}"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", time.strftime("cluster-%Y%m%d-%H%M.md"))
    with open(out, "w") as f:
        f.write(table + "\n\n```json\n" + json.dumps(
            {"per_node": per_node, "rss_kib": rss, "base_rss_kib": base_rss, "sub": sub,
             "claim": claim, "idle_cpu": idle_cpu, "idle_redis": idle_redis}, indent=1) + "\n```\n")
    say("written", out)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
