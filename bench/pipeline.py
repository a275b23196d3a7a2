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
import os, sys, time

from side_by_side import Targets, msgs_per_s

size = sys.argv[1] if len(sys.argv) > 1 else "64"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TICK = os.sysconf("SC_CLK_TCK")
t = Targets("pipeline", os.environ.get("WSGATE_BIN"), os.environ.get("WSGATE_EXTRA", ""))
time.sleep(1)


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def idle():
    return int(open("/proc/stat").readline().split()[4]) / TICK


for r in range(rounds):
    for name, a, pid in t.proxies:
        lg = t.throughput(a, size, 5)
        time.sleep(2)
        ps = {"echo": t.echo.pid, "loadgen": lg.pid, "proxy": pid}
        c0 = {k: cpu(v) for k, v in ps.items()}
        i0, t0 = idle(), time.time()
        time.sleep(3)
        c1 = {k: cpu(v) for k, v in ps.items()}
        i1, dt = idle(), time.time() - t0
        rate = msgs_per_s(lg.communicate()[0])
        cores = {k: (c1[k] - c0[k]) / dt for k in ps}
        print(f"round {r + 1} {name:8s} {rate:9.0f} msgs/s  cores: "
              + " ".join(f"{k} {v:.2f}" for k, v in cores.items())
              + f"  idle {(i1 - i0) / dt:.2f}  µs per msg: "
              + " ".join(f"{k} {v / rate * 1e6:.2f}" for k, v in cores.items()), flush=True)
t.stop()
