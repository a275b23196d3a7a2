#!/usr/bin/env bash
# wsgate soak test: bounded churn + long-lived sessions on loopback, sampling
# the gateway's RSS, open fds and wsgate_sessions_active every 10 s.
#
#   tests/soak/run.sh [--minutes 30] [--rate 200] [--long 1000] [--out DIR]
#                     [--ping-interval 5s --ping-timeout 5s] [--vanish 0.2]
#
# Builds wsgate (release) and the soak driver (tests/soak), starts an echo
# upstream and the gateway on free loopback ports, runs the load for
# --minutes, closes the long-lived sessions, waits, and checks that
# wsgate_sessions_active is 0 and the fd count is back near its baseline.
# --ping-interval/--ping-timeout set the route's session keepalive; --vanish F
# makes that fraction of the long-lived and churn sessions go silent without a
# close (socket held open, never read), for the keepalive to find and close
# with 1011; the summary reports wsgate_session_closes_total{reason="unresponsive"}.
# WSGATE_BIN=path uses that gateway binary instead of building the repo's;
# CARGO_TARGET_DIR (absolute) puts both builds in one target directory.
# Exit status: 0 pass, 1 leak or failed sessions, 2 setup error.
# Everything runs under `nice -n 10`; every process it starts is stopped by PID.
set -euo pipefail

MINUTES=30
RATE=200
LONG=1000
OUT=""
DURATION_S=""
FD_SLACK=50          # fds allowed above the baseline at the end
PING_INTERVAL=""
PING_TIMEOUT=""
VANISH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --long) LONG="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --seconds) DURATION_S="$2"; shift 2 ;;   # overrides --minutes (quick checks)
    --ping-interval) PING_INTERVAL="$2"; shift 2 ;;
    --ping-timeout) PING_TIMEOUT="$2"; shift 2 ;;
    --vanish) VANISH="$2"; shift 2 ;;
    -h|--help) sed -n 2,19p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

secs_of() { # duration as the config takes it (500ms, 5s, 2m, or plain seconds) -> whole seconds, rounded up
  case "$1" in
    *ms) echo $(( (${1%ms} + 999) / 1000 )) ;;
    *s) echo "${1%s}" ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *) echo "$1" ;;
  esac
}
if ! awk -v v="$VANISH" 'BEGIN{exit !(v+0 == v && v >= 0 && v <= 1)}'; then
  echo "--vanish takes a fraction between 0 and 1" >&2; exit 2
fi
if awk -v v="$VANISH" 'BEGIN{exit !(v > 0)}' && [ -z "$PING_INTERVAL" ]; then
  echo "soak: note: --vanish without --ping-interval relies on the route's default keepalive (30s/10s)"
fi
# The driver holds the vanished sessions this long after the last one went
# silent, so that the keepalive (interval + timeout, then at most 1 s for the
# close handshake) has closed each of them before they are dropped.
VANISH_HOLD=$(( $(secs_of "${PING_INTERVAL:-30s}") + $(secs_of "${PING_TIMEOUT:-10s}") + 10 ))

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/wsgate-soak.XXXXXX)}"
mkdir -p "$OUT"
echo "soak: output in $OUT"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "soak: building (release)"
if [ -n "${WSGATE_BIN:-}" ]; then
  WSGATE="$WSGATE_BIN"      # a prebuilt gateway, e.g. from a clean checkout
else
  (cd "$ROOT" && nice -n 10 cargo build --release --quiet)
  WSGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/wsgate"
fi
(cd "$HERE" && nice -n 10 cargo build --release --quiet)
SOAK="${CARGO_TARGET_DIR:-$HERE/target}/release/wsgate-soak"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ECHO_PORT=$(free_port)
nice -n 10 "$SOAK" echo --bind "127.0.0.1:$ECHO_PORT" > "$OUT/echo.log" 2>&1 &
PIDS+=($!)

SESSION_YAML=""
if [ -n "$PING_INTERVAL$PING_TIMEOUT" ]; then
  SESSION_YAML="    session: {${PING_INTERVAL:+ ping_interval: $PING_INTERVAL}${PING_INTERVAL:+${PING_TIMEOUT:+,}}${PING_TIMEOUT:+ ping_timeout: $PING_TIMEOUT} }"
fi

SECRET="soak-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$OUT/gateway.yaml" <<YAML
log: { level: "warn,wsgate::app=info", format: json }
listeners:
  - bind: "127.0.0.1:0"
admin:
  bind: "127.0.0.2:0"
  token: "soak-admin-token-0123456789"
issuers:
  - id: soak
    issuer: "https://soak.wsgate.local"
    audiences: ["soak"]
    algorithms: [HS256]
    keys: { secret: "$SECRET" }
routes:
  - id: soak
    path: /soak
    upstream: ws://127.0.0.1:$ECHO_PORT
$SESSION_YAML
limits:
  max_sessions: 100000
  shutdown_grace: 5s
revocation: { store: memory }
YAML

DURATION_S="${DURATION_S:-$((MINUTES * 60))}"
TTL_MIN=$((DURATION_S / 60 + 30))
TOKEN=$("$WSGATE" token -c "$OUT/gateway.yaml" --issuer soak --sub soak-client --ttl "${TTL_MIN}m")

nice -n 10 "$WSGATE" run -c "$OUT/gateway.yaml" > "$OUT/gateway.log" 2>&1 &
GW=$!
PIDS+=($GW)

addr_of() { # message -> addr from the JSON log
  grep -F "\"$1\"" "$OUT/gateway.log" | head -1 | sed -E 's/.*"addr":"([^"]+)".*/\1/'
}
for _ in $(seq 1 100); do
  LISTEN=$(addr_of "listener ready" || true); ADMIN=$(addr_of "admin listener ready" || true)
  [ -n "$LISTEN" ] && [ -n "$ADMIN" ] && break
  kill -0 "$GW" 2>/dev/null || { echo "soak: gateway exited" >&2; cat "$OUT/gateway.log" >&2; exit 2; }
  sleep 0.1
done
if [ -z "${LISTEN:-}" ] || [ -z "${ADMIN:-}" ]; then echo "soak: gateway did not report its addresses" >&2; exit 2; fi
echo "soak: gateway pid $GW on $LISTEN, admin $ADMIN, echo on 127.0.0.1:$ECHO_PORT"

metrics() { curl -fsS "http://$ADMIN/metrics"; }
active() { # sum of wsgate_sessions_active over routes
  metrics | awk '/^wsgate_sessions_active[{ ]/ {s+=$NF} END {print s+0}'
}
unresponsive() { # sum of wsgate_session_closes_total{reason="unresponsive"}
  metrics | awk '/^wsgate_session_closes_total\{/ && /reason="unresponsive"/ {s+=$NF} END {print s+0}'
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$GW/status"; }
fds() { ls "/proc/$GW/fd" | wc -l; }

BASE_FDS=$(fds); BASE_RSS=$(rss_kb)
CSV="$OUT/samples.csv"
echo "t_seconds,phase,rss_kb,fds,sessions_active,unresponsive_closes" > "$CSV"
START=$(date +%s)
sample() { echo "$(( $(date +%s) - START )),$1,$(rss_kb),$(fds),$(active),$(unresponsive)" >> "$CSV"; }
sample baseline

nice -n 10 "$SOAK" drive --url "ws://$LISTEN/soak" --token "$TOKEN" --rate "$RATE" --long "$LONG" \
  --seconds "$DURATION_S" --vanish "$VANISH" --vanish-hold "$VANISH_HOLD" > "$OUT/driver.log" 2> "$OUT/driver.err" &
DRIVER=$!
PIDS+=($DRIVER)

while kill -0 "$DRIVER" 2>/dev/null; do
  sleep 10
  kill -0 "$GW" 2>/dev/null || { echo "soak: gateway died" >&2; exit 1; }
  if kill -0 "$DRIVER" 2>/dev/null; then sample load; else sample drain; fi
  tail -1 "$CSV"
done
set +e; wait "$DRIVER"; DRIVER_RC=$?; set -e

# Settle: sessions must be gone, fds back near baseline.
END_ACTIVE=-1; END_FDS=-1
for _ in $(seq 1 6); do
  sleep 5
  sample settle
  END_ACTIVE=$(active); END_FDS=$(fds)
  [ "$END_ACTIVE" = 0 ] && [ "$END_FDS" -le $((BASE_FDS + FD_SLACK)) ] && break
done
END_RSS=$(rss_kb)
END_UNRESPONSIVE=$(unresponsive)
VANISHED=$(sed -nE 's/^summary.* vanished=([0-9]+).*/\1/p' "$OUT/driver.log")

summary=$(awk -F, 'NR>1 && $2=="load" {
    n++; if (n==1) {fr=$3; ff=$4}; lr=$3; lf=$4;
    if (minr==""||$3<minr) minr=$3; if ($3>maxr) maxr=$3;
    if (minf==""||$4<minf) minf=$4; if ($4>maxf) maxf=$4;
    if ($5>maxa) maxa=$5 }
  END { printf "load samples=%d rss_kb first=%s last=%s min=%s max=%s; fds first=%s last=%s min=%s max=%s; sessions_active max=%s", n, fr, lr, minr, maxr, ff, lf, minf, maxf, maxa }' "$CSV")
echo
echo "soak: $summary"
grep '^summary' "$OUT/driver.log" | sed 's/^/soak: driver /' || true
echo "soak: baseline rss_kb=$BASE_RSS fds=$BASE_FDS; end rss_kb=$END_RSS fds=$END_FDS sessions_active=$END_ACTIVE"
echo "soak: vanished sessions ${VANISHED:-?}; closed by the gateway as unresponsive: $END_UNRESPONSIVE"
if [ -n "${VANISHED:-}" ] && [ "$VANISHED" -gt 0 ] && [ "$END_UNRESPONSIVE" -lt "$VANISHED" ]; then
  echo "soak: WARNING fewer unresponsive closes than vanished sessions (some were closed another way, see gateway.log)"
fi

# Memory: compare the mean RSS of the last quarter of the load with the
# second quarter (after warm-up). Allocators keep freed pages, so this warns
# rather than fails; the fd and session checks are the hard ones.
growth=$(awk -F, 'NR>1 && $2=="load" {r[++n]=$3} END { if (n<8) {print "n/a"; exit}
  q=int(n/4); for(i=q+1;i<=2*q;i++){a+=r[i]}; for(i=n-q+1;i<=n;i++){b+=r[i]};
  printf "%.1f", (b/q - a/q) * 100 / (a/q) }' "$CSV")
echo "soak: RSS growth, last quarter vs second quarter of the load: ${growth}%"
if [ "$growth" != "n/a" ] && awk -v g="$growth" 'BEGIN{exit !(g > 20)}'; then
  echo "soak: WARNING resident memory grew by more than 20% during the load"
fi

verdict=0
if [ "$END_ACTIVE" != 0 ]; then echo "soak: FAIL wsgate_sessions_active is $END_ACTIVE after the run"; verdict=1; fi
if [ "$END_FDS" -gt $((BASE_FDS + FD_SLACK)) ]; then echo "soak: FAIL $END_FDS fds open at the end, baseline $BASE_FDS"; verdict=1; fi
if [ "$DRIVER_RC" != 0 ]; then echo "soak: FAIL the driver reported lost long-lived sessions or >1% failed churn sessions (see $OUT/driver.err)"; verdict=1; fi
[ $verdict = 0 ] && echo "soak: PASS"
exit $verdict
