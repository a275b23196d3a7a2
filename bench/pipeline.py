#!/usr/bin/env python3
"""Where the CPU of the whole throughput pipeline goes, HAProxy beside wsgate.

The throughput scenario runs the load generator, the echo upstream and the
proxy on the same cores, so a proxy is as fast as the pipeline it leaves
room for. This prints, per target and round, messages/s and the CPU (cores)
of each process plus the machine's idle time, read from /proc over 3 s in
the middle of a 5 s run (64 connections, 16 in flight). Needs a previous
bench/run.sh (keys, tokens, configs in bench/work).

Usage: bench/pipeline.py [size] [rounds]
       WSGATE_EXTRA='workers: 1' bench/pipeline.py    # prepend to wsgate's config
       WSGATE_BIN=path/to/other/wsgate bench/pipeline.py  # another build
"""
import os, re, signal, socket, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
W = os.path.join(HERE, "work"); B = os.path.join(HERE, "target", "release")
size = sys.argv[1] if len(sys.argv) > 1 else "64"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TICK = os.sysconf("SC_CLK_TCK")

echo = subprocess.Popen([B + "/echo"], stdout=subprocess.PIPE, text=True)
eaddr = echo.stdout.readline().strip().split("addr=")[1]
cfg = open(os.path.join(W, "wsgate.yaml")).read()
cfg = re.sub(r"ws://127.0.0.1:\d+", "ws://" + eaddr, cfg)
for f in ("tls.crt", "tls.key", "jwt_pub.pem"):
    cfg = cfg.replace(f, os.path.join(W, f))
gw_cfg = os.path.join(W, "pipeline-gw.yaml")
extra = os.environ.get("WSGATE_EXTRA", "")
open(gw_cfg, "w").write((extra + "\n" if extra else "") + cfg)
gw = subprocess.Popen([os.environ.get("WSGATE_BIN", os.path.join(W, "wsgate")), "run", "--config", gw_cfg],
                      stderr=subprocess.PIPE, text=True,
                      env=dict(os.environ, RUST_LOG="warn,wsgate::app=info"))
addr = None
for line in gw.stderr:
    m = re.search(r"listener ready.*?(127\.0\.0\.1:\d+)", line)
    if m:
        addr = m.group(1)
        break
threading.Thread(target=lambda: [None for _ in gw.stderr], daemon=True).start()
hcfg = open(os.path.join(W, "haproxy.cfg")).read()
hcfg = re.sub(r"server echo1 127.0.0.1:\d+", "server echo1 " + eaddr, hcfg)
with socket.socket() as sk:
    sk.bind(("127.0.0.1", 0))
    hport = sk.getsockname()[1]
hcfg = re.sub(r"bind 127.0.0.1:\d+", f"bind 127.0.0.1:{hport}", hcfg)
h_cfg = os.path.join(W, "pipeline-haproxy.cfg")
open(h_cfg, "w").write(hcfg)
hp = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", h_cfg],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def idle():
    return int(open("/proc/stat").readline().split()[4]) / TICK


for r in range(rounds):
    for name, a, pid in [("haproxy", f"127.0.0.1:{hport}", hp.pid), ("wsgate", addr, gw.pid)]:
        lg = subprocess.Popen([B + "/loadgen", "throughput", "--addr", a, "--tls-ca", W + "/tls.crt",
                               "--path", "/echo", "--tokens", W + "/tokens_sessions.txt",
                               "--conns", "64", "--size", size, "--window", "16", "--secs", "5",
                               "--warmup", "1", "--sources", "127.0.0.2,127.0.0.3"],
                              stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        ps = {"echo": echo.pid, "loadgen": lg.pid, "proxy": pid}
        c0 = {k: cpu(v) for k, v in ps.items()}
        i0, t0 = idle(), time.time()
        time.sleep(3)
        c1 = {k: cpu(v) for k, v in ps.items()}
        i1, dt = idle(), time.time() - t0
        out = lg.communicate()[0]
        rate = float(re.search(r'"msgs_per_s":([0-9.]+)', out).group(1))
        cores = {k: (c1[k] - c0[k]) / dt for k in ps}
        print(f"round {r + 1} {name:8s} {rate:9.0f} msgs/s  cores: "
              + " ".join(f"{k} {v:.2f}" for k, v in cores.items())
              + f"  idle {(i1 - i0) / dt:.2f}  µs per msg: "
              + " ".join(f"{k} {v / rate * 1e6:.2f}" for k, v in cores.items()), flush=True)
hp.send_signal(signal.SIGTERM); hp.wait()
gw.send_signal(signal.SIGTERM); gw.wait()
echo.kill(); echo.wait()
