#!/usr/bin/env python3
"""Per core: where the time goes, per relayed 64 B message and per TLS +
RS256 handshake, for direct (load generator -> echo: the floor), HAProxy
and wsgate, each proxy pinned alone to one core with one thread (wsgate
`workers: 1`, HAProxy `nbthread 1`) and the echo, the load generator and
this script on the other core (issue 18).

Per target and round, while the load generator runs (64 connections x 16
in flight of 64 B messages; or 32 workers making handshakes, each token
used once), `perf stat -p` counts over a window, in the proxy, the echo and
the load generator:
  - syscalls (tracepoints: counts, exact),
  - task-clock (CPU time, user + kernel; a time, so it moves with whatever
    else runs on the machine),
and the load generator's `--progress` lines give the exact number of
messages (handshakes) inside each window, so every figure is per message
(per handshake). /proc/stat gives each core's busy share over the window
(is the proxy's core saturated, is the client's core not?). A second, short
`perf record` of the proxy's syscall exits gives bytes per read and per
write and how many reads found nothing (EAGAIN).

`--callgrind` also runs each proxy (and the echo, for the floor) under
`valgrind --tool=callgrind`, zeroes its counters once the load is steady and
dumps them after a fixed window: user-space instructions (Ir) per message and
per handshake (this VM has no hardware counters: `perf stat -e
instructions` is <not supported>). Kernel instructions are not in Ir; the
syscall counts stand for them.

Needs a previous `bench/run.sh --pinned` (keys, tokens, configs in
bench/work; the full profile's 40,000-token pool, since wsgate caches each
verified token and every handshake round here takes fresh ones).

Usage: bench/percore.py [--rounds 3] [--only relay,handshake] [--targets direct,haproxy,wsgate]
                        [--callgrind [--client]] [--no-perf] [--json out.json]
       bench/percore.py --areas CALLGRIND_OUT COUNT   # self cost by area, per message/handshake
       bench/percore.py --massif 1000                 # wsgate's heap per idle TLS session, by site
       WSGATE_BIN=path/to/other/wsgate bench/percore.py ...   # another build
"""
import argparse, glob, json, os, re, signal, statistics, subprocess, sys, threading, time

from side_by_side import Targets, W, B

PIN = ("0", "1")
SYSCALLS = ["sendto", "recvfrom", "read", "write", "writev", "readv", "sendmsg", "recvmsg",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "accept4", "connect", "close",
            "socket", "setsockopt", "getsockopt", "shutdown", "splice", "sched_yield",
            "clock_gettime", "mmap", "munmap", "madvise", "brk", "getrandom"]
READS = ("recvfrom", "read", "readv", "recvmsg")
WRITES = ("sendto", "write", "writev", "sendmsg")


def available_syscalls():
    have = set(os.listdir("/sys/kernel/tracing/events/syscalls"))
    return [s for s in SYSCALLS if f"sys_enter_{s}" in have]


class Progress:
    """Reads `PROGRESS <unix ns> <count>` lines of a load generator."""

    def __init__(self, proc):
        self.points = []
        self.first = threading.Event()
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc):
        for line in proc.stderr:
            if line.startswith("PROGRESS "):
                _, ns, n = line.split()
                self.points.append((int(ns) / 1e9, int(n)))
                self.first.set()

    def at(self, t):
        """The count at unix time `t`, interpolated between reports."""
        pts = self.points
        if not pts:
            return 0
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, n0), (t1, n1) in zip(pts, pts[1:]):
            if t0 <= t <= t1:
                return n0 + (n1 - n0) * (t - t0) / max(t1 - t0, 1e-9)
        return pts[-1][1]

    def between(self, t0, t1):
        return self.at(t1) - self.at(t0)


def cores():
    """Per-core jiffies: (user + nice, system, irq + softirq, busy, total)."""
    out = {}
    for line in open("/proc/stat"):
        m = re.match(r"cpu(\d+) (.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()][:8]
            idle = v[3] + v[4]
            out[m.group(1)] = (v[0] + v[1], v[2], v[5] + v[6], sum(v) - idle, sum(v))
    return out


TICK = os.sysconf("SC_CLK_TCK")


def user_sys(pid):
    """User and system CPU seconds of a process so far (/proc, 10 ms ticks)."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) / TICK, int(f[12]) / TICK


def perf_stat(pid, secs, evs):
    ev = ["task-clock"] + [f"syscalls:sys_enter_{s}" for s in evs]
    return subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(ev), "-p", str(pid),
                             "--", "sleep", str(secs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def parse_stat(err):
    out = {}
    for line in err.strip().splitlines():
        p = line.split(",")
        if len(p) < 3:
            continue
        try:
            v = float(p[0])
        except ValueError:
            v = 0.0
        name = p[2]
        if name.startswith("syscalls:sys_enter_"):
            name = name[len("syscalls:sys_enter_"):]
        out[name] = v
    return out


def window(procs, secs, evs, prog):
    """Counts `procs` ({role: pid}) for `secs` with perf stat (task-clock
    and, if `evs`, syscall tracepoints), all at once; returns
    ({role: counts}, {role: count of messages/handshakes in its window},
    {core: {user, system, irq, busy: µs-shares}}). Each perf's window ends
    when it returns (a thread waits for each) and lasts `secs`."""
    c0 = cores()
    u0 = {role: user_sys(pid) for role, pid in procs.items()}
    t0 = time.time()
    ps = {role: perf_stat(pid, secs, evs) for role, pid in procs.items()}
    res, n = {}, {}

    def wait(role, p):
        err = p.communicate()[1]
        end = time.time()
        res[role] = parse_stat(err)
        res[role]["window_s"] = secs
        n[role] = prog.between(end - secs, end)

    ths = [threading.Thread(target=wait, args=(r, p)) for r, p in ps.items()]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    c1 = cores()
    t1 = time.time()
    n["_all"] = prog.between(t0, t1)
    for role, pid in procs.items():
        u1 = user_sys(pid)
        res[role]["user_s"] = u1[0] - u0[role][0]
        res[role]["sys_s"] = u1[1] - u0[role][1]
        res[role]["_n_all"] = n["_all"]
    busy = {}
    for k in c1:
        tot = max(c1[k][4] - c0[k][4], 1)
        busy[k] = {name: (c1[k][i] - c0[k][i]) / tot
                   for i, name in enumerate(("user", "system", "irq", "busy"))}
        busy[k]["secs"] = t1 - t0
    return res, n, busy


def syscall_sizes(pid, secs):
    """Bytes per data read/write and reads that found nothing, from a short
    `perf record` of the syscall exits (their return values)."""
    evs = [f"syscalls:sys_exit_{s}" for s in READS + WRITES]
    have = set(os.listdir("/sys/kernel/tracing/events/syscalls"))
    evs = [e for e in evs if e.split(":")[1] in have]
    data = os.path.join(W, f"percore.{pid}.perf.data")
    subprocess.run(["perf", "record", "-q", "-o", data, "-e", ",".join(evs), "-p", str(pid),
                    "--", "sleep", str(secs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(["perf", "script", "-i", data, "-F", "event,trace"],
                         capture_output=True, text=True).stdout
    os.remove(data)
    agg = {}
    for line in out.splitlines():
        m = re.search(r"sys_exit_(\w+):.*?(0x[0-9a-f]+|-?\d+)\s*$", line)
        if not m:
            continue
        name, v = m.group(1), int(m.group(2), 0)
        if v >= 1 << 63:
            v -= 1 << 64
        a = agg.setdefault(name, {"data": 0, "bytes": 0, "empty": 0})
        if v > 0:
            a["data"] += 1
            a["bytes"] += v
        else:
            a["empty"] += 1
    return agg


def measure(t, name, addr, pid, evs, lg, cpu_secs, count_secs, settle):
    """Two windows while `lg` runs: CPU (task-clock alone, and /proc/stat
    per core), then syscall counts (tracepoints slow the processes down, so
    they are not counted in the CPU window)."""
    prog = Progress(lg)
    if not prog.first.wait(120):
        raise RuntimeError(f"{name}: the load generator never started")
    time.sleep(settle)
    procs = {"server": pid, "loadgen": lg.pid}
    if name != "direct":
        procs["echo"] = t.echo.pid
    cpu, n_cpu, busy = window(procs, cpu_secs, [], prog)
    cnt, n_cnt, _ = window(procs, count_secs, evs, prog)
    return {"cpu": cpu, "n_cpu": n_cpu, "busy": busy, "cnt": cnt, "n_cnt": n_cnt}


def run_relay(t, name, addr, pid, evs, size="64"):
    lg = t.throughput(addr, size, 7, None, tls=name != "direct", progress=True)
    x = measure(t, name, addr, pid, evs, lg, 2.5, 2, 0.8)
    x["sizes"] = syscall_sizes(pid, 1)
    lg.wait()
    return x


def run_handshakes(t, name, addr, pid, evs, tokens):
    # The echo checks no token: direct may cycle through the file.
    lg = t.handshakes(addr, tokens, 3.5, tls=name != "direct", once=name != "direct")
    x = measure(t, name, addr, pid, evs, lg, 1.5, 1.2, 0.3)
    out = lg.communicate()[0]
    m = re.search(r"RESULT (.*)", out)
    x["result"] = json.loads(m.group(1)) if m else {}
    return x


def token_slices():
    pool = open(os.path.join(W, "tokens_pool.txt")).read().split()
    sess = open(os.path.join(W, "tokens_sessions.txt")).read().split()
    # The relay's 64 sessions take the first tokens_sessions; never those.
    return pool + sess[200:]


def write_tokens(toks, tag):
    f = os.path.join(W, f"percore-{tag}.txt")
    open(f, "w").write("\n".join(toks) + "\n")
    return f


ROLES = ("server", "echo", "loadgen")


def summarise(rounds):
    """Medians over rounds of per-unit figures, per role; `core0`/`core1`:
    the whole core's busy time (user + system + irq/softirq) per unit."""
    rows = {}
    for r in rounds:
        for role in r["cpu"]:
            d = rows.setdefault(role, {})
            n = r["n_cpu"][role]
            s = r["cpu"][role]
            d.setdefault("cpu_us", []).append(s.get("task-clock", 0) * 1e3 / n)
            d.setdefault("cores", []).append(s.get("task-clock", 0) / 1e3 / s["window_s"])
            d.setdefault("rate", []).append(n / s["window_s"])
            d.setdefault("user_us", []).append(s["user_s"] * 1e6 / s["_n_all"])
            d.setdefault("sys_us", []).append(s["sys_s"] * 1e6 / s["_n_all"])
            n = r["n_cnt"][role]
            for k, v in r["cnt"][role].items():
                if k not in ("task-clock", "window_s", "user_s", "sys_s", "_n_all"):
                    d.setdefault(k, []).append(v / n)
        n = r["n_cpu"]["_all"]
        for core, b in r["busy"].items():
            d = rows.setdefault("core" + core, {})
            for k in ("user", "system", "irq", "busy"):
                d.setdefault(k + "_us", []).append(b[k] * b["secs"] * 1e6 / n)
                d.setdefault(k + "_share", []).append(b[k])
    return {role: {k: statistics.median(v) for k, v in d.items()} for role, d in rows.items()}


LABEL = {"server": "core 0: proxy (direct: the echo)", "echo": "echo", "loadgen": "load generator"}


def fmt_table(title, unit, data, evs):
    """data: {target: summarise(...)}"""
    lines = [f"\n### {title}\n",
             f"Pinned; medians over rounds; per {unit}. Syscalls are counts (exact); "
             "CPU µs are times (task-clock of the process; core: the whole core's busy time, "
             "softirq included), so they move with whatever else runs.\n"]
    for tgt, d in data.items():
        lines.append(f"\n**{tgt}** ({d['server']['rate']:.0f} {unit}s/s during the CPU window; "
                     f"core 0 busy {d['core0']['busy_share']:.2f}, core 1 busy {d['core1']['busy_share']:.2f})\n")
        roles = [r for r in ROLES if r in d]
        lines.append(f"| per {unit} | " + " | ".join(LABEL[r] for r in roles) + " |")
        lines.append("|---|" + "---:|" * len(roles))
        def row(label, f):
            lines.append(f"| {label} | " + " | ".join(f(d[r]) for r in roles) + " |")
        row("process CPU µs (task-clock)", lambda x: f"{x['cpu_us']:.3f}")
        row("of which user µs (/proc)", lambda x: f"{x['user_us']:.3f}")
        row("of which system µs (/proc)", lambda x: f"{x['sys_us']:.3f}")
        row("process CPU (cores)", lambda x: f"{x['cores']:.2f}")
        row("syscalls (all counted)", lambda x: f"{sum(x.get(s, 0) for s in evs):.3f}")
        for s in evs:
            if any(d[r].get(s, 0) >= 0.0005 for r in roles):
                row(s, lambda x, s=s: f"{x.get(s, 0):.4f}")
        for c in ("core0", "core1"):
            x = d[c]
            lines.append(f"\n{c}: busy {x['busy_us']:.3f} µs per {unit} (user {x['user_us']:.3f}, "
                         f"system {x['system_us']:.3f}, irq+softirq {x['irq_us']:.3f})")
    return "\n".join(lines)


def sizes_table(relay):
    lines = ["\n### Reads and writes of the core-0 process (64 B relay; `perf record` of syscall exits, 1 s)\n",
             "A proxy reads and writes each relayed message twice (client leg and upstream leg); "
             "the echo once each.\n",
             "| target | syscall | calls with data | calls with nothing (EAGAIN) | mean bytes per data call | 64 B messages per data call |",
             "|---|---|---:|---:|---:|---:|"]
    for tgt, rounds in relay.items():
        s = rounds[-1]["sizes"]
        for name, a in sorted(s.items()):
            if not a["data"] and not a["empty"]:
                continue
            mean = a["bytes"] / a["data"] if a["data"] else 0
            # On the wire a 64 B message is 70 B from a client (masked) and
            # 66 B from the echo; TLS adds 22 B per record.
            lines.append(f"| {tgt} | {name} | {a['data']} | {a['empty']} | {mean:.0f} | {mean / 68:.1f} |")
    return "\n".join(lines)


def callgrind_run(name, kind, tokens=None, secs=10, client=False):
    """User-space instructions per message or handshake of one target
    (the echo for direct) under callgrind, over a window of `secs` after
    the load is steady. `client`: the load generator is profiled instead,
    the target running natively."""
    who = "loadgen" if client else "echo" if name == "direct" else name
    out = os.path.join(W, f"percore.callgrind.{name}.{kind}" + (".loadgen" if client else ""))
    for f in glob.glob(out + "*"):
        os.remove(f)
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    if who == "echo":
        # The echo is started by Targets itself; run it under callgrind there.
        t = Targets(f"percore-cg-{os.getpid()}", os.environ.get("WSGATE_BIN"), pin=PIN, only=())
        t.echo.kill(); t.echo.wait()
        t.echo = subprocess.Popen(t.on_proxy(vg + [B + "/echo"]), stdout=subprocess.PIPE, text=True)
        addr = t.echo.stdout.readline().strip().split("addr=")[1]
        pid = t.echo.pid
    elif client:
        t = Targets(f"percore-cg-{os.getpid()}", os.environ.get("WSGATE_BIN"), pin=PIN,
                    only=(name,) if name != "direct" else ())
        addr = t.proxies[0][1] if name != "direct" else t.direct[1]
    else:
        t = Targets(f"percore-cg-{os.getpid()}", os.environ.get("WSGATE_BIN"), pin=PIN, wrap={name: vg}, only=(name,))
        _, addr, pid = t.proxies[0]
    time.sleep(2)
    try:
        wrap = vg if client else ()
        if kind == "relay":
            lg = t.throughput(addr, "64", 60, None, tls=name != "direct", progress=True, wrap=wrap)
        else:
            lg = t.handshakes(addr, tokens, 60, workers=8, tls=name != "direct",
                              once=name != "direct", wrap=wrap)
        if client:
            pid = lg.pid
        prog = Progress(lg)
        if not prog.first.wait(120):
            raise RuntimeError("no progress")
        time.sleep(3)
        a = time.time(); subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True); b = time.time()
        t0 = (a + b) / 2
        time.sleep(secs)
        a = time.time(); subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True); b = time.time()
        t1 = (a + b) / 2
        n = prog.between(t0, t1)
        lg.kill(); lg.wait()
    finally:
        t.stop()
    dumps = sorted(f for f in glob.glob(out + "*") if re.search(r"\.\d+$", f))
    dump = dumps[0] if dumps else out
    ir = 0
    for line in open(dump):
        if line.startswith("summary:") or line.startswith("totals:"):
            ir = int(line.split()[1])
            break
    return {"ir": ir, "n": n, "per": ir / n if n else float("nan"), "file": dump}


# Self cost by area: the first pattern that matches the function an
# instruction belongs to (inlined code counts where it was inlined).
AREAS = [
    ("AES-GCM (aws-lc)", r"aesni|gcm|ghash|aes_hw|EVP_AEAD|aead_aes|CRYPTO_gcm"),
    ("TLS handshake crypto (aws-lc: X25519, SHA-384/HKDF, ECDSA, RSA)",
     r"x25519|curve25519|sha512|sha256|HKDF|HMAC|ecp_nistz|ecdsa|ECDSA|bn_|RSA|rsa_|p256|bignum"),
    ("rustls (records, handshake)", r"rustls::"),
    ("relay frame scan (wsgate)", r"wsgate::proxy::relay::scan|wsgate::proxy::frame"),
    ("relay loop and accounting (wsgate)", r"wsgate::proxy::relay|wsgate::metrics|prometheus"),
    ("session control: select, timers, Notify", r"wsgate::proxy::pump|tokio::sync::notify|tokio::time|Sleep"),
    ("TLS stream (wsgate)", r"wsgate::tls::"),
    ("tokio runtime, I/O readiness, mio", r"tokio::|mio::"),
    ("hyper, upgrade, TokioIo", r"hyper"),
    ("token verification, claims (jsonwebtoken, serde_json, wsgate::auth)", r"jsonwebtoken|serde_json|wsgate::auth|base64"),
    ("allocation (malloc/free)", r"malloc|free|_int_|unlink_chunk|tcache|arena"),
    ("copies and zeroing (memcpy/memset)", r"memcpy|memmove|memset"),
    ("socket calls in libc/std (send, recv, epoll)", r"\bsend|\brecv|epoll|__libc|std::sys::net|socket"),
]


def areas(dump, n):
    """Self instructions per unit by area, from `callgrind_annotate`."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no",
                          dump], capture_output=True, text=True).stdout
    tot = {}
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(3)
        if "PROGRAM TOTALS" in fn:
            total = ir
            continue
        if float(m.group(2)) > 90 or fn.startswith("=>"):
            # The frames at the bottom of every thread's stack when the
            # dump was taken are listed with the whole cost: not self cost.
            continue
        fn = fn.split(":", 1)[1] if ":" in fn else fn
        # Whole-thread frames (clone, start_thread) carry no self cost of note.
        name = next((a for a, pat in AREAS if re.search(pat, fn)), "other")
        tot[name] = tot.get(name, 0) + ir
    tot["(sum of areas)"] = sum(tot.values())
    return total, {k: v / n for k, v in sorted(tot.items(), key=lambda kv: -kv[1])}


def massif_idle(n):
    """Heap per idle TLS session: wsgate (pinned, `workers: 1`) under
    massif while the load generator holds `n` sessions; stopped with
    SIGINT while they are held, so that the peak snapshot is them."""
    out = os.path.join(W, f"massif.idle.{n}.out")
    vg = ["valgrind", "--tool=massif", f"--massif-out-file={out}", "--depth=40", "--threshold=0.1"]
    t = Targets(f"massif-{os.getpid()}", os.environ.get("WSGATE_BIN"), pin=PIN, wrap={"wsgate": vg},
                only=("wsgate",))
    _, addr, _ = t.proxies[0]
    time.sleep(2)
    lg = subprocess.Popen(t.on_rest([B + "/loadgen", "hold", "--addr", addr, "--tls-ca", W + "/tls.crt",
                                     "--path", "/echo", "--tokens", W + "/tokens_sessions.txt",
                                     "--levels", str(n), "--parallel", "16",
                                     "--sources", "127.0.0.2,127.0.0.3"]),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    print(lg.stdout.readline().strip(), flush=True)
    time.sleep(8)
    try:
        t.gw.send_signal(signal.SIGINT)
        t.gw.wait(timeout=300)
    finally:
        lg.kill(); lg.wait()
        t.stop()
    return out


# Frames that say nothing about who holds the memory.
PLUMBING = re.compile(r"UnknownInlinedFun|^alloc$|^alloc_zeroed$|alloc_impl|grow_impl|^grow$|^with_capacity"
                      r"|^new$|^clone$|reserve|extend|to_vec|^push$|^from$|alloc::|core::|__rust|__rdl|std::"
                      r"|<alloc::|hashbrown|RawVec|Vec<|Box<|Arc<|<T as|bytes::|smallvec|malloc|calloc"
                      r"|realloc|_int_|OPENSSL_|memdup|BUF_|CRYPTO_")


def massif_sites(path, n, top=40):
    """Bytes per session of the peak snapshot, by the first three frames
    of each allocation that are not allocator plumbing."""
    snap = [x for x in open(path).read().split("snapshot=") if "heap_tree=peak" in x][0]
    hdr = dict(re.findall(r"(mem_heap_B|mem_heap_extra_B)=(\d+)", snap))
    print(f"peak: {int(hdr['mem_heap_B']) / n:.0f} B of heap per session, "
          f"{int(hdr['mem_heap_extra_B']) / n:.0f} B allocator overhead")
    sites, stack = {}, []
    for line in snap.split("heap_tree=peak\n", 1)[1].splitlines():
        m = re.match(r"( *)n(\d+): (\d+) (.*)", line)
        if not m:
            continue
        stack = stack[:len(m.group(1))]
        fn = m.group(4).split(": ", 1)[1] if ": " in m.group(4) else m.group(4)
        stack.append(re.sub(r" \(.*\)$", "", fn))
        if int(m.group(2)) == 0:
            named = [x for x in stack[1:] if not PLUMBING.search(x) and "below threshold" not in x]
            key = " < ".join(named[:3]) if named else stack[-1]
            sites[key] = sites.get(key, 0) + int(m.group(3))
    for k, v in sorted(sites.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{v / n:8.0f}  {k[:200]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="relay,handshake")
    ap.add_argument("--targets", default="direct,haproxy,wsgate")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--no-perf", action="store_true")
    ap.add_argument("--client", action="store_true",
                    help="with --callgrind: profile the load generator instead of the target")
    ap.add_argument("--json")
    ap.add_argument("--massif", type=int, metavar="SESSIONS",
                    help="only measure wsgate's heap per idle TLS session (massif, peak snapshot)")
    ap.add_argument("--areas", nargs=2, metavar=("CALLGRIND_OUT", "UNITS"),
                    help="only print the self cost by area of a callgrind dump over UNITS messages")
    a = ap.parse_args()
    if a.areas:
        total, by = areas(a.areas[0], float(a.areas[1]))
        print(f"{total / float(a.areas[1]):.0f} Ir per unit")
        for k, v in by.items():
            print(f"  {v:10.0f}  {k}")
        return
    os.sched_setaffinity(0, {int(PIN[1])})
    if a.massif:
        massif_sites(massif_idle(a.massif), a.massif)
        return
    only = a.only.split(",")
    names = a.targets.split(",")
    evs = available_syscalls()
    report = {}
    if not a.no_perf:
        t = Targets("percore", os.environ.get("WSGATE_BIN"), pin=PIN,
                    only=tuple(n for n in names if n != "direct"))
        # The floor: a second echo alone on the proxies' core, the load
        # generator straight at it.
        floor = subprocess.Popen(t.on_proxy([B + "/echo"]), stdout=subprocess.PIPE, text=True)
        floor_addr = floor.stdout.readline().strip().split("addr=")[1]
        targets = [tg for tg in [("direct", floor_addr, floor.pid)] + t.proxies if tg[0] in names]
        time.sleep(1)
        relay = {n: [] for n, _, _ in targets}
        hs = {n: [] for n, _, _ in targets}
        toks = token_slices()
        per_round = 16000
        shared = write_tokens(toks[-per_round:], "shared")
        try:
            for r in range(a.rounds):
                for name, addr, pid in targets:
                    if "relay" in only:
                        x = run_relay(t, name, addr, pid, evs)
                        relay[name].append(x)
                        print(f"round {r + 1} relay {name}: {x['n_cpu']['_all'] / x['busy']['0']['secs']:.0f} msgs/s, "
                              f"core busy {x['busy']['0']['busy']:.2f}/{x['busy']['1']['busy']:.2f}",
                              file=sys.stderr, flush=True)
                    if "handshake" in only:
                        # wsgate caches verified tokens: fresh ones each round.
                        f = write_tokens(toks[r * per_round:(r + 1) * per_round], f"r{r}") \
                            if name == "wsgate" else shared
                        x = run_handshakes(t, name, addr, pid, evs, f)
                        hs[name].append(x)
                        print(f"round {r + 1} handshakes {name}: {x['result'].get('per_s', 0):.0f}/s, "
                              f"core busy {x['busy']['0']['busy']:.2f}/{x['busy']['1']['busy']:.2f}, "
                              f"exhausted={x['result'].get('exhausted')} fail={x['result'].get('fail')}",
                              file=sys.stderr, flush=True)
        finally:
            t.stop()
            floor.kill()
            floor.wait()
        if "relay" in only:
            report["relay"] = {n: summarise(v) for n, v in relay.items()}
            report["relay_rounds"] = relay
            print(fmt_table("64 B relay (64 connections x 16 in flight), per relayed message",
                            "message", report["relay"], evs))
            print(sizes_table(relay))
        if "handshake" in only:
            report["handshake"] = {n: summarise(v) for n, v in hs.items()}
            report["handshake_rounds"] = hs
            print(fmt_table("TLS + RS256 handshakes (32 workers, distinct tokens), per handshake",
                            "handshake", report["handshake"], evs))
    if a.callgrind:
        cg = {}
        toks = token_slices()
        for i, name in enumerate(names):
            for kind in only:
                f = write_tokens(toks[-(i + 1) * 3000:-(i) * 3000 or None], f"cg{i}") if kind == "handshake" else None
                x = callgrind_run(name, kind, f, client=a.client)
                x["areas"] = areas(x["file"], x["n"])[1] if x["n"] else {}
                cg[f"{name} {kind}" + (" loadgen" if a.client else "")] = x
                print(f"callgrind {name} {kind}{' (load generator)' if a.client else ''}: {x['ir']} Ir / {x['n']:.0f} = {x['per']:.0f} Ir per "
                      f"{'message' if kind == 'relay' else 'handshake'} ({x['file']})", flush=True)
        report["callgrind"] = cg
    if a.json:
        json.dump(report, open(a.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
