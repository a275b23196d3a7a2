#!/bin/sh
# Builds wsgate and the bench (release, niced), then runs every scenario
# against direct, HAProxy and wsgate. Usage, from anywhere:
#   bench/run.sh            # full run, a few minutes
#   bench/run.sh --quick    # tiny run, under a minute (CI smoke test)
# Extra arguments go to the runner (--haproxy none, --wsgate PATH, ...).
set -eu
cd "$(dirname "$0")/.."
nice -n 10 cargo build --release --bin wsgate
(cd bench && nice -n 10 cargo build --release)
mkdir -p bench/work
# A private copy, so a rebuild by someone else cannot swap it mid-run.
cp target/release/wsgate bench/work/wsgate
command -v haproxy >/dev/null 2>&1 || echo "note: haproxy not installed (apt-get install -y haproxy); running direct + wsgate only" >&2
HAPROXY=$(command -v haproxy || echo none)
exec bench/target/release/runner --wsgate bench/work/wsgate --haproxy "$HAPROXY" "$@"
