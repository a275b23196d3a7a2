#!/usr/bin/env bash
# Short fuzz smoke run: every target for a few seconds over its committed seed
# corpus. Not part of the test command; meant for a CI job that can afford a
# cold build of the fuzz package (several minutes) plus ~10 s per target.
#
#   fuzz/smoke.sh [SECONDS_PER_TARGET]   (default 10)
#
# Skips with exit 0 when cargo-fuzz is not installed. cargo-fuzz needs
# nightly compiler flags: by default it sets RUSTC_BOOTSTRAP=1 on the active
# (stable) toolchain, which shares fuzz/target with the README's commands;
# FUZZ_TOOLCHAIN=nightly uses `cargo +nightly` instead.
set -euo pipefail
cd "$(dirname "$0")"
SECS="${1:-10}"
TARGETS="request_path rules template token_sources jwt_verify config upgrade tls_accept authority proxy_protocol close_frame"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke: cargo-fuzz is not installed (cargo install cargo-fuzz); skipping"
  exit 0
fi
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  FUZZ=(cargo "+$FUZZ_TOOLCHAIN" fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${FUZZ[@]}" build
for t in $TARGETS; do
  mkdir -p "$work/$t"
  echo "fuzz smoke: $t (${SECS}s)"
  # New inputs go to the scratch folder; the committed seeds are only read.
  if ! "${FUZZ[@]}" run "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 > "$work/$t.log" 2>&1; then
    tail -40 "$work/$t.log"
    echo "fuzz smoke: $t FAILED (reproducer under fuzz/artifacts/$t/)"
    exit 1
  fi
  grep -E '^Done' "$work/$t.log" || true
done
echo "fuzz smoke: all targets ran clean"
