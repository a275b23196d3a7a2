#!/bin/sh
# CPU profile of wsgate's relay and handshake paths with callgrind (perf has
# no hardware counters on this VM). Needs a previous `bench/run.sh` (keys,
# tokens and config in bench/work). Writes bench/work/callgrind.{relay,handshake}.out
# and prints the top functions by self cost.
#   bench/profile.sh [relay|handshake]...
set -eu
cd "$(dirname "$0")/work"
B=../target/release
ECHO_PORT=${ECHO_PORT:-47101}
GW_PORT=${GW_PORT:-47102}
sed -e "s#127.0.0.1:0#127.0.0.1:$GW_PORT#" -e "s#ws://127.0.0.1:[0-9]*#ws://127.0.0.1:$ECHO_PORT#" wsgate.yaml > profile.yaml
$B/echo --bind 127.0.0.1:$ECHO_PORT > /dev/null &
ECHO_PID=$!
trap 'kill $ECHO_PID 2>/dev/null || true' EXIT
for what in "${@:-relay handshake}"; do
  for w in $what; do
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=callgrind.$w.out ./wsgate run -c profile.yaml 2> callgrind.$w.log &
    GW_PID=$!
    i=0; until grep -q "listener ready" callgrind.$w.log 2>/dev/null || [ $i -gt 300 ]; do sleep 0.1; i=$((i+1)); done
    sleep 1
    case $w in
      relay)
        $B/loadgen throughput --addr 127.0.0.1:$GW_PORT --tls-ca tls.crt --tokens tokens_sessions.txt --conns 16 --size 64 --window 16 --secs 8 --warmup 2
        $B/loadgen throughput --addr 127.0.0.1:$GW_PORT --tls-ca tls.crt --tokens tokens_sessions.txt --conns 16 --size 16384 --window 4 --secs 8 --warmup 2 ;;
      handshake)
        $B/loadgen handshake --addr 127.0.0.1:$GW_PORT --tls-ca tls.crt --tokens tokens_pool.txt --once --workers 4 --secs 15 --sources 127.0.0.2,127.0.0.3 ;;
    esac
    kill -INT $GW_PID; wait $GW_PID || true
    callgrind_annotate callgrind.$w.out 2>/dev/null | head -45 > callgrind.$w.top.txt
    echo "== $w: top functions by self cost (bench/work/callgrind.$w.top.txt)"
    cat callgrind.$w.top.txt
  done
done
