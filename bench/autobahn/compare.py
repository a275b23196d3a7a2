#!/usr/bin/env python3
"""Compares the agents of one Autobahn|Testsuite fuzzingclient report.

Reads the report's index.json ({agent: {case: {behavior, behaviorClose,
remoteCloseCode, ...}}}) and prints, as a Markdown table ready to paste into
docs/conformance.md, every case whose verdict (behavior, behaviorClose) for
some agent differs from the baseline agent's. Each cell reads
`behavior / behaviorClose (close code the client received)`. Consecutive
cases (in case order, with no agreeing case between them) whose rows are
identical are folded into one range row (within one chapter: 3.*, 4.*, ...)
unless --each is given.

    compare.py target/autobahn/reports/index.json --baseline direct
"""

import argparse
import collections
import json
import sys


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def verdict(result):
    return (result.get("behavior"), result.get("behaviorClose"))


def cell(result):
    if result is None:
        return "not run"
    text = "%s / %s" % verdict(result)
    code = result.get("remoteCloseCode")
    return text + (" (%s)" % code if code is not None else " (no close)")


def duration(secs):
    secs = int(secs)
    return "%d min %02d s" % divmod(secs, 60) if secs >= 60 else "%d s" % secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", help="the fuzzingclient's reports/index.json")
    ap.add_argument("--baseline", default="direct", help="agent the others are compared with")
    ap.add_argument("--each", action="store_true", help="one row per case, no ranges")
    ap.add_argument("--took", type=float, help="run time in seconds, for the header line")
    ap.add_argument("--cases", default="*", help="case patterns run, for the header line")
    ap.add_argument("--exclude", default="", help="case patterns excluded, for the header line")
    args = ap.parse_args()

    with open(args.index) as f:
        index = json.load(f)
    if args.baseline not in index:
        sys.exit("compare.py: no agent %r in %s (agents: %s)"
                 % (args.baseline, args.index, ", ".join(sorted(index))))
    agents = [args.baseline] + sorted(a for a in index if a != args.baseline)
    cases = sorted(set().union(*(index[a] for a in agents)), key=case_key)

    rows = []  # (case ids, cells); cells is None where every agent agrees
    for case in cases:
        results = [index[a].get(case) for a in agents]
        base = results[0]
        differs = any(r is None or base is None or verdict(r) != verdict(base) for r in results[1:])
        cells = tuple(cell(r) for r in results) if differs else None
        if (cells is not None and not args.each and rows and rows[-1][1] == cells
                and case_key(rows[-1][0][-1])[0] == case_key(case)[0]):
            rows[-1][0].append(case)
        else:
            rows.append(([case], cells))

    run = "cases `%s`" % args.cases + (", excluding `%s`" % args.exclude if args.exclude else "")
    took = ", run in %s" % duration(args.took) if args.took is not None else ""
    print("Autobahn|Testsuite fuzzingclient, %s: %d cases per agent%s." % (run, len(cases), took))
    print()
    for a in agents:
        counts = collections.Counter(r.get("behavior") for r in index[a].values())
        ms = sum(r.get("duration") or 0 for r in index[a].values())
        deflate = sum(r.get("duration") or 0 for c, r in index[a].items() if case_key(c)[0] in (12, 13))
        print("- `%s`: %s; cases took %s%s" % (
            a, ", ".join("%d %s" % (n, b) for b, n in sorted(counts.items())), duration(ms / 1000),
            " (12.* and 13.*: %s)" % duration(deflate / 1000) if deflate else ""))
    print()

    differing = [r for r in rows if r[1] is not None]
    if not differing:
        print("No verdict differs from `%s`." % args.baseline)
        return
    print("Verdicts (behavior / behaviorClose, and the close code the client received) "
          "that differ from `%s`:" % args.baseline)
    print()
    print("| case | " + " | ".join("`%s`" % a for a in agents) + " |")
    print("|---" * (len(agents) + 1) + "|")
    for ids, cells in differing:
        name = ids[0] if len(ids) == 1 else "%s – %s (%d cases)" % (ids[0], ids[-1], len(ids))
        print("| %s | %s |" % (name, " | ".join(cells)))
    print()
    base = index[args.baseline]
    for a in agents[1:]:
        n = sum(1 for c in cases if base.get(c) is None or index[a].get(c) is None
                or verdict(base[c]) != verdict(index[a][c]))
        print("`%s` differs from `%s` in %d of %d cases." % (a, args.baseline, n, len(cases)))


if __name__ == "__main__":
    main()
