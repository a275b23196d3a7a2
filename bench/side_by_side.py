"""Echo, HAProxy and wsgate started side by side on free loopback ports from
the keys, tokens and configs a previous bench/run.sh left in bench/work, for
the scripts that look inside a throughput run (pipeline.py, syscalls.py).
"""
import os, re, signal, socket, subprocess, threading

HERE = os.path.dirname(os.path.abspath(__file__))
W = os.path.join(HERE, "work")
B = os.path.join(HERE, "target", "release")


class Targets:
    """`proxies`: (name, address, pid) for HAProxy then wsgate."""

    def __init__(self, tag, wsgate_bin=None, wsgate_extra=""):
        self.echo = subprocess.Popen([B + "/echo"], stdout=subprocess.PIPE, text=True)
        echo_addr = self.echo.stdout.readline().strip().split("addr=")[1]
        cfg = open(os.path.join(W, "wsgate.yaml")).read()
        cfg = re.sub(r"ws://127.0.0.1:\d+", "ws://" + echo_addr, cfg)
        for f in ("tls.crt", "tls.key", "jwt_pub.pem"):
            cfg = cfg.replace(f, os.path.join(W, f))
        gw_cfg = os.path.join(W, f"{tag}-gw.yaml")
        open(gw_cfg, "w").write((wsgate_extra + "\n" if wsgate_extra else "") + cfg)
        self.gw = subprocess.Popen([wsgate_bin or os.path.join(W, "wsgate"), "run", "--config", gw_cfg],
                                   stderr=subprocess.PIPE, text=True,
                                   env=dict(os.environ, RUST_LOG="warn,wsgate::app=info"))
        gw_addr = None
        for line in self.gw.stderr:
            m = re.search(r"listener ready.*?(127\.0\.0\.1:\d+)", line)
            if m:
                gw_addr = m.group(1)
                break
        threading.Thread(target=lambda: [None for _ in self.gw.stderr], daemon=True).start()
        hcfg = open(os.path.join(W, "haproxy.cfg")).read()
        hcfg = re.sub(r"server echo1 127.0.0.1:\d+", "server echo1 " + echo_addr, hcfg)
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            hport = sk.getsockname()[1]
        hcfg = re.sub(r"bind 127.0.0.1:\d+", f"bind 127.0.0.1:{hport}", hcfg)
        h_cfg = os.path.join(W, f"{tag}-haproxy.cfg")
        open(h_cfg, "w").write(hcfg)
        self.hp = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", h_cfg],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proxies = [("haproxy", f"127.0.0.1:{hport}", self.hp.pid),
                        ("wsgate", gw_addr, self.gw.pid)]

    def throughput(self, addr, size, secs, pid=None):
        """Starts the load generator's throughput run (64 connections, 16 in
        flight, 1 s warm-up) against `addr`; its stdout carries the RESULT."""
        cmd = [B + "/loadgen", "throughput", "--addr", addr, "--tls-ca", W + "/tls.crt",
               "--path", "/echo", "--tokens", W + "/tokens_sessions.txt",
               "--conns", "64", "--size", size, "--window", "16", "--secs", str(secs),
               "--warmup", "1", "--sources", "127.0.0.2,127.0.0.3"]
        if pid is not None:
            cmd += ["--pid", str(pid)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def stop(self):
        # Only the processes started here, by their PIDs.
        for p in (self.hp, self.gw):
            p.send_signal(signal.SIGTERM)
            p.wait()
        self.echo.kill()
        self.echo.wait()


def msgs_per_s(loadgen_stdout):
    return float(re.search(r'"msgs_per_s":([0-9.]+)', loadgen_stdout).group(1))
