#!/usr/bin/env python3
"""Syscalls per relayed message for HAProxy and wsgate, side by side.

Counts sendto/recvfrom/epoll_wait/futex (perf tracepoints, 2 s inside a 6 s
throughput run: 64 connections, 16 in flight) in the proxy, the echo and the
load generator. Needs a previous bench/run.sh (keys, tokens, configs in
bench/work) and perf with tracepoints. Usage: bench/syscalls.py [size]
"""
import subprocess, sys, time, re, os, signal, threading
HERE = os.path.dirname(os.path.abspath(__file__))
W = os.path.join(HERE, "work"); B = os.path.join(HERE, "target", "release")
size = sys.argv[1] if len(sys.argv) > 1 else "64"
echo = subprocess.Popen([B+"/echo"], stdout=subprocess.PIPE, text=True)
eaddr = echo.stdout.readline().strip().split("addr=")[1]
cfg = open(W+"/wsgate.yaml").read()
cfg = re.sub(r"ws://127.0.0.1:\d+", "ws://"+eaddr, cfg)
cfg = cfg.replace("tls.crt", W+"/tls.crt").replace("tls.key", W+"/tls.key").replace("jwt_pub.pem", W+"/jwt_pub.pem")
open(os.path.join(W, "syscalls-gw.yaml"), "w").write(cfg)
gw = subprocess.Popen([W+"/wsgate", "run", "--config", os.path.join(W, "syscalls-gw.yaml")], stderr=subprocess.PIPE, text=True, env=dict(os.environ, RUST_LOG="warn,wsgate::app=info"))
addr = None
for line in gw.stderr:
    m = re.search(r"listener ready.*?(127\.0\.0\.1:\d+)", line)
    if m: addr = m.group(1); break
threading.Thread(target=lambda: [None for _ in gw.stderr], daemon=True).start()
hcfg = open(W+"/haproxy.cfg").read()
hcfg = re.sub(r"server echo1 127.0.0.1:\d+", "server echo1 "+eaddr, hcfg)
import socket
with socket.socket() as sk:
    sk.bind(("127.0.0.1", 0))
    hport = sk.getsockname()[1]
hcfg = re.sub(r"bind 127.0.0.1:\d+", f"bind 127.0.0.1:{hport}", hcfg)
open(os.path.join(W, "syscalls-haproxy.cfg"), "w").write(hcfg)
hp = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", os.path.join(W, "syscalls-haproxy.cfg")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
EV="syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex"
for name, a, pid in [("haproxy", f"127.0.0.1:{hport}", hp.pid), ("wsgate", addr, gw.pid)]:
    lg = subprocess.Popen([B+"/loadgen", "throughput", "--addr", a, "--tls-ca", W+"/tls.crt", "--path", "/echo", "--tokens", W+"/tokens_sessions.txt",
       "--conns", "64", "--size", size, "--window", "16", "--secs", "6", "--warmup", "1", "--pid", str(pid), "--sources", "127.0.0.2,127.0.0.3"], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    outs = {}
    ps = {}
    for who, p in [("echo", echo.pid), ("loadgen", lg.pid), ("proxy", pid)]:
        ps[who] = subprocess.Popen(["perf", "stat", "-x,", "-e", EV, "-p", str(p), "--", "sleep", "2"], stderr=subprocess.PIPE, text=True)
    for who, p in ps.items():
        outs[who] = p.communicate()[1]
    res = lg.communicate()[0]
    m = re.search(r'"msgs_per_s":([0-9.]+)', res); rate = float(m.group(1))
    print(f"== {name}: {rate:.0f} msgs/s")
    for who, o in outs.items():
        counts = {}
        for l in o.strip().splitlines():
            parts = l.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls"):
                counts[parts[2].split("sys_enter_")[1]] = int(parts[0]) if parts[0].isdigit() else 0
        per = {k: v / (rate * 2) for k, v in counts.items()}  # 2 s of counting
        print(f"  {who:8s} per message: " + " ".join(f"{k}={v:.3f}" for k, v in per.items()))
hp.send_signal(signal.SIGTERM); hp.wait()
gw.send_signal(signal.SIGTERM); gw.wait(); echo.kill(); echo.wait()
