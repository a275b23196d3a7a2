#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client against its own echo testee
# (`wstest -m testeeserver`) three ways, in one wstest run, and prints every
# case whose verdict through wsgate differs from the direct one:
#
#   direct                  fuzzingclient -> testeeserver
#   wsgate-auth-none        fuzzingclient -> wsgate (route `auth: none`) -> testeeserver
#   wsgate-bearer-header    fuzzingclient -> wsgate (route `auth: required`,
#                           token in `Authorization: Bearer`) -> testeeserver
#
# Usage, from anywhere:
#   bench/autobahn/run.sh                    # every case (see docs/conformance.md for the time)
#   bench/autobahn/run.sh --no-compression   # without 12.* and 13.* (permessage-deflate), much faster
#   bench/autobahn/run.sh --cases '1.*,7.*'  # only these (wstest patterns, comma-separated)
#   bench/autobahn/run.sh --wsgate PATH      # this binary instead of `cargo build` (debug)
#   bench/autobahn/run.sh --no-header-route  # direct and auth: none only
#
# Everything listens on 127.0.0.1, on ports the OS picks. Output, under
# target/autobahn/: reports/index.html (wstest's report, all three agents side
# by side), differences.md (the table printed at the end, ready to paste into
# docs/conformance.md), and the logs of wsgate, the testee and the client.
# Not part of tests/run or CI: it is slow.
#
# The suite's wstest runs on Python 2.7 only (the package index's
# autobahntestsuite 0.8.2; under Python 3 it fails with "No module named
# '_version'"). On first use this script makes a Python 2.7 virtualenv in
# target/autobahn-venv:
#   1. a Python 2.7 interpreter: $AUTOBAHN_PYTHON27, else `python2.7` on PATH,
#      else pyenv's (`pyenv install 2.7.18` makes one); none: it stops and says so;
#   2. `virtualenv<20.22` (the last line that can still create 2.7 envs),
#      installed with python3's pip into target/autobahn-venv-tools, makes the venv;
#   3. the venv's pip installs bench/autobahn/requirements.txt (pinned versions).
# The venv is made again when requirements.txt or the interpreter changes.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE="$ROOT/bench/autobahn"
OUT="$ROOT/target/autobahn"
VENV="$ROOT/target/autobahn-venv"
TOOLS="$ROOT/target/autobahn-venv-tools"

die() { printf 'bench/autobahn/run.sh: %s\n' "$*" >&2; exit 2; }
say() { printf '==> %s\n' "$*" >&2; }

CASES='*'
EXCLUDE=''
WSGATE=''
HEADER_ROUTE=1
while (($#)); do
    case "$1" in
        --no-compression) EXCLUDE='12.*,13.*' ;;
        --cases) [[ $# -ge 2 ]] || die "--cases needs a value"; CASES="$2"; shift ;;
        --wsgate) [[ $# -ge 2 ]] || die "--wsgate needs a path"; WSGATE="$2"; shift ;;
        --no-header-route) HEADER_ROUTE=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

# ------------------------------------------------------------ Python 2.7 venv
find_python27() {
    local c candidates=()
    [[ -n "${AUTOBAHN_PYTHON27:-}" ]] && candidates+=("$AUTOBAHN_PYTHON27")
    command -v python2.7 >/dev/null 2>&1 && candidates+=("$(command -v python2.7)")
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/2.7*/bin/python2.7)
    fi
    candidates+=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7)
    for c in "${candidates[@]}"; do
        # A pyenv shim for a version that is not selected fails this test.
        if [[ -x "$c" ]] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is needed (to make the venv and compare the reports)"
PY27=$(find_python27) || die "no Python 2.7 interpreter found.
  The Autobahn|Testsuite (wstest) runs on Python 2.7 only. Either
    - set AUTOBAHN_PYTHON27=/path/to/python2.7, or
    - put python2.7 on PATH, or
    - install one with pyenv: pyenv install 2.7.18
  and run this script again."

STAMP="$VENV/.made-from"
want_stamp=$(printf '%s\n' "$PY27"; cat "$HERE/requirements.txt")
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "$want_stamp" ]]; then
    say "making the Python 2.7 venv for wstest in target/autobahn-venv (from $PY27)"
    rm -rf "$VENV" "$TOOLS"
    export PIP_ROOT_USER_ACTION=ignore
    python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" 'virtualenv<20.22' \
        || die "could not install virtualenv<20.22 with python3's pip"
    PYTHONPATH="$TOOLS" python3 -m virtualenv --quiet -p "$PY27" "$VENV" \
        || die "virtualenv could not make a venv from $PY27"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-python-version-warning \
        -r "$HERE/requirements.txt" || die "pip could not install bench/autobahn/requirements.txt"
    printf '%s\n' "$want_stamp" >"$STAMP"
fi
# Python 2 is deprecated by cryptography and says so on every start.
export PYTHONWARNINGS=ignore

# ------------------------------------------------------------------- wsgate
if [[ -z "$WSGATE" ]]; then
    say "cargo build (debug)"
    nice -n 10 cargo build --quiet --bin wsgate || die "cargo build failed"
    WSGATE="$ROOT/target/debug/wsgate"
fi
[[ -x "$WSGATE" ]] || die "no wsgate binary at $WSGATE"
rm -rf "$OUT"
mkdir -p "$OUT"
# A private copy, so that a rebuild by someone else cannot swap it mid-run.
cp "$WSGATE" "$OUT/wsgate"

# ------------------------------------------------------ processes and cleanup
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for FILE REGEX PID WHAT: the first match of REGEX's group 1 in FILE.
wait_for() {
    local file=$1 regex=$2 pid=$3 what=$4 i m
    for ((i = 0; i < 300; i++)); do
        if m=$(sed -nE "s/.*${regex}.*/\\1/p" "$file" 2>/dev/null | head -n 1) && [[ -n "$m" ]]; then
            printf '%s\n' "$m"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$file" >&2; die "$what exited before it was ready (log: $file)"; }
        sleep 0.1
    done
    tail -n 20 "$file" >&2
    die "$what not ready after 30 s (log: $file)"
}

# ---------------------------------------------------------------- testee
"$VENV/bin/python" "$HERE/wstest_loopback.py" testeeserver "$OUT/testee.port" >"$OUT/testee.log" 2>&1 &
PIDS+=($!)
TESTEE_PORT=$(wait_for "$OUT/testee.log" 'testeeserver listening on 127\.0\.0\.1:([0-9]+)' "$!" "the testeeserver")
say "testeeserver on 127.0.0.1:$TESTEE_PORT"

# ---------------------------------------------------------------- gateway
# A fresh secret each run; the token minted with it is good for 6 hours.
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
cat >"$OUT/gateway.yaml" <<EOF
# Written by bench/autobahn/run.sh.
log: { level: info, format: text }
listeners:
  - bind: "127.0.0.1:0"
issuers:
  - id: autobahn
    audiences: [autobahn]
    algorithms: [HS256]
    keys:
      secret: "$SECRET"
routes:
  - id: public
    path: /public
    upstream: ws://127.0.0.1:$TESTEE_PORT
    auth: none
  - id: bearer
    path: /bearer
    upstream: ws://127.0.0.1:$TESTEE_PORT
    auth: required
    token_sources: [header]
revocation: { store: memory }
EOF
"$OUT/wsgate" check -c "$OUT/gateway.yaml" >&2 || die "wsgate check refused $OUT/gateway.yaml"
TOKEN=$("$OUT/wsgate" token -c "$OUT/gateway.yaml" --issuer autobahn --sub autobahn --ttl 6h) \
    || die "wsgate token failed"
"$OUT/wsgate" run -c "$OUT/gateway.yaml" >"$OUT/wsgate.log" 2>&1 &
PIDS+=($!)
GW_ADDR=$(wait_for "$OUT/wsgate.log" 'listener ready addr=(127\.0\.0\.1:[0-9]+)' "$!" "wsgate")
say "wsgate on $GW_ADDR"

# ---------------------------------------------------------------- fuzzing client
export OUT TESTEE_PORT GW_ADDR TOKEN CASES EXCLUDE HEADER_ROUTE
python3 - >"$OUT/fuzzingclient.json" <<'EOF'
import json, os
e = os.environ
split = lambda s: [p.strip() for p in s.split(",") if p.strip()]
servers = [
    {"agent": "direct", "url": "ws://127.0.0.1:%s" % e["TESTEE_PORT"]},
    {"agent": "wsgate-auth-none", "url": "ws://%s/public" % e["GW_ADDR"]},
]
if e["HEADER_ROUTE"] == "1":
    servers.append({"agent": "wsgate-bearer-header", "url": "ws://%s/bearer" % e["GW_ADDR"],
                    "headers": {"Authorization": "Bearer " + e["TOKEN"]}})
print(json.dumps({"outdir": os.path.join(e["OUT"], "reports"), "servers": servers,
                  "cases": split(e["CASES"]), "exclude-cases": split(e["EXCLUDE"])}, indent=2))
EOF
say "fuzzingclient: cases '$CASES'${EXCLUDE:+ minus '$EXCLUDE'} against $((2 + HEADER_ROUTE)) servers, one after the other (progress: tail -f target/autobahn/fuzzingclient.log)"
start=$(date +%s)
"$VENV/bin/python" "$HERE/wstest_loopback.py" fuzzingclient "$OUT/fuzzingclient.json" >"$OUT/fuzzingclient.log" 2>&1 &
PIDS+=($!)
wait "$!" || die "the fuzzingclient failed (log: $OUT/fuzzingclient.log)"
secs=$(($(date +%s) - start))
[[ -f "$OUT/reports/index.json" ]] || die "the fuzzingclient wrote no report (log: $OUT/fuzzingclient.log)"
cleanup

# ---------------------------------------------------------------- comparison
python3 "$HERE/compare.py" "$OUT/reports/index.json" --baseline direct \
    --took "$secs" --cases "$CASES" --exclude "$EXCLUDE" | tee "$OUT/differences.md"
say "report: target/autobahn/reports/index.html; this table: target/autobahn/differences.md"
