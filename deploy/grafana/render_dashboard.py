"""Draws the panels of deploy/grafana/wsgate.json from a real gateway, for
the docs, where no Grafana is installed.

It starts the built wsgate with an echo upstream and a JWKS issuer (the test
harness of tests/py), puts a few minutes of mixed load on it (sessions coming
and going, messages, refused tokens, unknown routes, a dead upstream, an
admin kill, a revocation, short-lived tokens expiring, reloads good and bad),
scrapes /metrics every 2 s, evaluates each panel's PromQL over those scrapes
(promql_lite.py) and renders the grid with matplotlib.

    target/pyenv/bin/pip install matplotlib
    target/pyenv/bin/python deploy/grafana/render_dashboard.py --out docs/grafana-dashboard.png
"""

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import promql_lite  # noqa: E402
from harness import HS_SECRET, claims, mint  # noqa: E402

ISS = "https://dashboard.test"
ADMIN = "admin-token-for-python-tests"


def admin(gw, method, path, body=None):
    req = urllib.request.Request(gw.admin_url(path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {ADMIN}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Load:
    """Background clients; each thread holds a few sessions and talks on them."""

    def __init__(self, gw, stop):
        self.gw, self.stop, self.lock = gw, stop, threading.Lock()
        self.target = 10

    def token(self, sub, ttl=600, jti=None):
        c = claims(sub=sub, iss=ISS, ttl=ttl)
        if jti:
            c["jti"] = jti
        return mint(c, HS_SECRET, "HS256")

    def session_worker(self, n):
        rnd = random.Random(n)
        while not self.stop.is_set():
            if n >= self.target:
                time.sleep(0.5)
                continue
            route = rnd.choice(["/chat", "/chat", "/feed/live"])
            ttl = rnd.choice([600, 600, 600, 25])
            try:
                with harness.open_ws(self.gw.ws_url(route), self.token(f"user{n % 40}", ttl)) as ws:
                    life = time.monotonic() + rnd.uniform(10, 50)
                    while time.monotonic() < life and not self.stop.is_set():
                        if n >= self.target:
                            break
                        ws.send("x" * rnd.randint(10, 4000))
                        ws.recv(timeout=10)
                        time.sleep(rnd.uniform(0.05, 0.4))
            except Exception:
                time.sleep(0.5)

    def noise_worker(self):
        rnd = random.Random(99)
        bad = mint(claims(iss=ISS), "w" * 64, "HS256")
        while not self.stop.is_set():
            kind = rnd.random()
            try:
                if kind < 0.5:
                    harness.refused(self.gw.ws_url("/chat"), bad)
                elif kind < 0.7:
                    harness.refused(self.gw.ws_url("/nowhere"), self.token("x"))
                elif kind < 0.85:
                    harness.refused(self.gw.ws_url("/dead"), self.token("x"))
                else:
                    harness.refused(self.gw.ws_url("/chat"))
            except Exception:
                pass
            time.sleep(rnd.uniform(0.1, 0.6))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs" / "grafana-dashboard.png"))
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--interval", type=float, default=2.0)
    args = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads((HERE / "wsgate.json").read_text())
    echo = harness.EchoUpstream()
    jwks = harness.DocServer()
    key = harness.gen_key("ec256")
    jwks.set("/jwks", {"keys": [harness.jwk(key, "2025-01")]}, headers={"Cache-Control": "max-age=60"})
    routes = [{"id": "chat", "path": "/chat", "upstream": echo.url},
              {"id": "feed", "path": "/feed/*", "upstream": echo.url},
              {"id": "dead", "path": "/dead", "upstream": "ws://127.0.0.1:9"}]
    issuers = [{"id": "main", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}},
               {"id": "idp", "issuer": "https://idp.dashboard.test", "audiences": [harness.AUD],
                "algorithms": ["ES256"], "keys": {"jwks_url": jwks.base + "/jwks"}}]
    config = harness.base_config(routes, issuers, admin=True)
    work = Path(tempfile.mkdtemp(prefix="wsgate-dashboard-"))
    gw = harness.Gateway(work, config)
    stop = threading.Event()
    load = Load(gw, stop)
    threads = [threading.Thread(target=load.session_worker, args=(n,), daemon=True) for n in range(60)]
    threads.append(threading.Thread(target=load.noise_worker, daemon=True))
    for t in threads:
        t.start()

    scrapes = promql_lite.Scrapes()
    start = time.monotonic()
    events = []
    try:
        while (now := time.monotonic() - start) < args.duration:
            # A ramp up, a plateau, a dip: the panels have a shape to show.
            load.target = int(10 + 50 * min(1, now / (args.duration * 0.4)))
            if now > args.duration * 0.75:
                load.target = 30
            frac = now / args.duration
            if not events and frac > 0.3:
                events.append(("reload", admin(gw, "POST", "/admin/reload")))
            if len(events) == 1 and frac > 0.45:
                sessions = json.loads(urllib.request.urlopen(urllib.request.Request(
                    gw.admin_url("/admin/sessions"), headers={"Authorization": f"Bearer {ADMIN}"})).read())
                for s in sessions[:3]:
                    admin(gw, "DELETE", f"/admin/sessions/{s['id']}")
                events.append(("kill", 3))
            if len(events) == 2 and frac > 0.55:
                events.append(("revoke", admin(gw, "POST", "/admin/revocations", {"sub": "user7"})))
            if len(events) == 3 and frac > 0.65:
                gw.config_path.write_text("listeners: [")
                events.append(("bad reload", admin(gw, "POST", "/admin/reload")))
                gw.config_path.write_text(json.dumps(config))
            with urllib.request.urlopen(gw.admin_url("/metrics"), timeout=10) as r:
                scrapes.add(time.monotonic() - start, r.read().decode())
            time.sleep(args.interval)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        gw.stop()
        echo.stop()
        jwks.stop()
    print("events:", events, "scrapes:", len(scrapes.times))

    panels = dashboard["panels"]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    plt.style.use("dark_background")
    fig, axes = plt.subplots(rows, cols, figsize=(18, 3.1 * rows))
    fig.patch.set_facecolor("#111217")
    for ax, panel in zip(axes.flat, panels):
        ax.set_facecolor("#181b1f")
        ax.set_title(panel["title"], loc="left", fontsize=10, color="#d8d9da")
        lines = {}
        for target in panel["targets"]:
            for i in range(len(scrapes.times)):
                for labels, v in promql_lite.evaluate(scrapes, i, target["expr"]).items():
                    name = promql_lite.legend(target["legendFormat"], labels)
                    lines.setdefault(name, ([], []))
                    lines[name][0].append(scrapes.times[i])
                    lines[name][1].append(v)
        for name, (xs, ys) in sorted(lines.items()):
            ax.plot(xs, ys, linewidth=1.4, label=name)
        if not lines:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="#8e8e8e",
                    transform=ax.transAxes)
        unit = panel["fieldConfig"]["defaults"]["unit"]
        if unit == "bytes":
            ax.yaxis.set_major_formatter(lambda v, _: f"{v / 2**20:.0f} MiB")
        elif unit == "Bps":
            ax.yaxis.set_major_formatter(lambda v, _: f"{v / 1024:.0f} KiB/s")
        elif unit == "s":
            ax.yaxis.set_major_formatter(lambda v, _: f"{v * 1000:.1f} ms" if v < 1 else f"{v:.0f} s")
        ax.set_ylim(bottom=0)
        ax.grid(color="#2c3235", linewidth=0.6)
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        ax.set_xlabel("seconds", fontsize=8, color="#9fa7b3")
        if lines:
            ax.legend(fontsize=7, loc="upper left", frameon=False, ncol=2)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle("wsgate dashboard (deploy/grafana/wsgate.json), drawn with matplotlib from "
                 f"{len(scrapes.times)} real /metrics scrapes of a running gateway under load; not a Grafana screenshot",
                 fontsize=11, color="#d8d9da")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(args.out, dpi=80, facecolor=fig.get_facecolor())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
