"""Echo, HAProxy and wsgate started side by side on free loopback ports from
the keys, tokens and configs a previous bench/run.sh left in bench/work, for
the scripts that look inside a throughput run (pipeline.py, syscalls.py,
percore.py).

`pin=("0", "1")` runs each proxy on the first CPU list with one thread
(wsgate `workers: 1`, HAProxy `nbthread 1`) and the echo and load generator
on the second, as `bench/run.sh --pinned` does. `wrap` maps a proxy's name to
a command prefix (a profiler); `only` starts just the proxies named.
"""
import os, re, signal, socket, subprocess, threading

HERE = os.path.dirname(os.path.abspath(__file__))
W = os.path.join(HERE, "work")
B = os.path.join(HERE, "target", "release")


class Targets:
    """`proxies`: (name, address, pid) for HAProxy then wsgate; `direct`:
    the same for the echo itself (plain ws://, the floor)."""

    def __init__(self, tag, wsgate_bin=None, wsgate_extra="", pin=None, wrap=None,
                 only=("haproxy", "wsgate")):
        self.pin = pin
        wrap = wrap or {}
        self.echo = subprocess.Popen(self.on_rest([B + "/echo"]), stdout=subprocess.PIPE, text=True)
        echo_addr = self.echo.stdout.readline().strip().split("addr=")[1]
        self.direct = ("direct", echo_addr, self.echo.pid)
        self.proxies = []
        self.procs = []
        if "haproxy" in only:
            hcfg = open(os.path.join(W, "haproxy.cfg")).read()
            hcfg = re.sub(r"server echo1 127.0.0.1:\d+", "server echo1 " + echo_addr, hcfg)
            with socket.socket() as sk:
                sk.bind(("127.0.0.1", 0))
                hport = sk.getsockname()[1]
            hcfg = re.sub(r"bind 127.0.0.1:\d+", f"bind 127.0.0.1:{hport}", hcfg)
            if pin:
                hcfg = re.sub(r"nbthread \d+", "nbthread 1", hcfg)
            h_cfg = os.path.join(W, f"{tag}-haproxy.cfg")
            open(h_cfg, "w").write(hcfg)
            self.hp = subprocess.Popen(
                self.on_proxy(wrap.get("haproxy", []) + ["/usr/sbin/haproxy", "-db", "-f", h_cfg]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(self.hp)
            self.proxies.append(("haproxy", f"127.0.0.1:{hport}", self.hp.pid))
            if "haproxy" in wrap:
                wait_port(hport)
        if "wsgate" in only:
            cfg = open(os.path.join(W, "wsgate.yaml")).read()
            cfg = re.sub(r"ws://127.0.0.1:\d+", "ws://" + echo_addr, cfg)
            for f in ("tls.crt", "tls.key", "jwt_pub.pem"):
                cfg = cfg.replace(f, os.path.join(W, f))
            if pin:
                cfg = re.sub(r"(?m)^workers:.*\n?", "", cfg) + "workers: 1\n"
            gw_cfg = os.path.join(W, f"{tag}-gw.yaml")
            open(gw_cfg, "w").write((wsgate_extra + "\n" if wsgate_extra else "") + cfg)
            self.gw = subprocess.Popen(
                self.on_proxy(wrap.get("wsgate", []) + [wsgate_bin or os.path.join(W, "wsgate"),
                                                         "run", "--config", gw_cfg]),
                stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, RUST_LOG="warn,wsgate::app=info"))
            self.procs.append(self.gw)
            gw_addr = None
            for line in self.gw.stderr:
                m = re.search(r"listener ready.*?(127\.0\.0\.1:\d+)", line)
                if m:
                    gw_addr = m.group(1)
                    break
            threading.Thread(target=lambda: [None for _ in self.gw.stderr], daemon=True).start()
            self.proxies.append(("wsgate", gw_addr, self.gw.pid))

    def on_proxy(self, cmd):
        return ["taskset", "-c", self.pin[0]] + cmd if self.pin else cmd

    def on_rest(self, cmd):
        return ["taskset", "-c", self.pin[1]] + cmd if self.pin else cmd

    def throughput(self, addr, size, secs, pid=None, tls=True, warmup=1, progress=False,
                   wrap=()):
        """Starts the load generator's throughput run (64 connections, 16 in
        flight, 1 s warm-up) against `addr`; its stdout carries the RESULT,
        its stderr the PROGRESS lines when `progress`."""
        cmd = [B + "/loadgen", "throughput", "--addr", addr,
               "--path", "/echo", "--tokens", W + "/tokens_sessions.txt",
               "--conns", "64", "--size", size, "--window", "16", "--secs", str(secs),
               "--warmup", str(warmup), "--sources", "127.0.0.2,127.0.0.3"]
        if tls:
            cmd += ["--tls-ca", W + "/tls.crt"]
        if pid is not None:
            cmd += ["--pid", str(pid)]
        if progress:
            cmd += ["--progress"]
        cmd = list(wrap) + cmd
        return subprocess.Popen(self.on_rest(cmd), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE if progress else None, text=True)

    def handshakes(self, addr, tokens, secs, workers=32, tls=True, progress=True, once=True,
                   wrap=()):
        """Starts the load generator's handshake run, `workers` at a time;
        `once`: each token of the file `tokens` used once."""
        cmd = [B + "/loadgen", "handshake", "--addr", addr, "--path", "/echo",
               "--tokens", tokens, "--workers", str(workers), "--secs", str(secs),
               "--sources", "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"]
        if once:
            cmd += ["--once"]
        cmd = list(wrap) + cmd
        if tls:
            cmd += ["--tls-ca", W + "/tls.crt"]
        if progress:
            cmd += ["--progress"]
        return subprocess.Popen(self.on_rest(cmd), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE if progress else None, text=True)

    def stop(self):
        # Only the processes started here, by their PIDs.
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.echo.kill()
        self.echo.wait()


def wait_port(port, tries=600):
    import time
    for _ in range(tries):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)


def msgs_per_s(loadgen_stdout):
    return float(re.search(r'"msgs_per_s":([0-9.]+)', loadgen_stdout).group(1))
