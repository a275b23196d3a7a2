#!/usr/bin/env python3
"""Syscalls per relayed message for HAProxy and wsgate, side by side.

Counts sendto/recvfrom/epoll_wait/futex (perf tracepoints, 2 s inside a 6 s
throughput run: 64 connections, 16 in flight) in the proxy, the echo and the
load generator. Needs a previous bench/run.sh (keys, tokens, configs in
bench/work) and perf with tracepoints. Usage: bench/syscalls.py [size]
"""
import subprocess, sys, time

from side_by_side import Targets, msgs_per_s

size = sys.argv[1] if len(sys.argv) > 1 else "64"
t = Targets("syscalls")
time.sleep(1)
EV="syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex"
for name, a, pid in t.proxies:
    lg = t.throughput(a, size, 6, pid)
    time.sleep(3)
    outs = {}
    ps = {}
    for who, p in [("echo", t.echo.pid), ("loadgen", lg.pid), ("proxy", pid)]:
        ps[who] = subprocess.Popen(["perf", "stat", "-x,", "-e", EV, "-p", str(p), "--", "sleep", "2"], stderr=subprocess.PIPE, text=True)
    for who, p in ps.items():
        outs[who] = p.communicate()[1]
    rate = msgs_per_s(lg.communicate()[0])
    print(f"== {name}: {rate:.0f} msgs/s")
    for who, o in outs.items():
        counts = {}
        for l in o.strip().splitlines():
            parts = l.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls"):
                counts[parts[2].split("sys_enter_")[1]] = int(parts[0]) if parts[0].isdigit() else 0
        per = {k: v / (rate * 2) for k, v in counts.items()}  # 2 s of counting
        print(f"  {who:8s} per message: " + " ".join(f"{k}={v:.3f}" for k, v in per.items()))
t.stop()
