#!/usr/bin/env bash
# Compares gamify-api builds in one sitting: for each round, each binary in turn serves the same
# stack (a release development broker of its own, the database gamify_ab, Redis) and gets wrk on
# /healthz, single-event track and batch; prints requests/s and gamify-api's CPU per request (per
# event for batch) from /proc/<pid>/stat. Interleaving the binaries spreads the shared machine's
# swings over all of them; CPU per request moves less with them than requests/s does.
#
#   scripts/bench/ab-gateway.sh OLD_BINARY NEW_BINARY...   # AB_ROUNDS (2), AB_SECONDS (6)
#
# Build the binaries first, e.g. `git worktree add /tmp/old REV && cargo build --release
# --manifest-path /tmp/old/Cargo.toml -p gamify-api` (or copy target/release/gamify-api aside).
{
[ $# -ge 1 ] || { echo "usage: $0 GAMIFY_API_BINARY..." >&2; exit 2; }
BENCH_STACK=ab
source "$(dirname "$0")/gateway-stack.sh"
ROUNDS=${AB_ROUNDS:-2} SECS=${AB_SECONDS:-6} PORT=${AB_PORT:-3910}
API="http://127.0.0.1:$PORT"
gateway_stack ab "$1"

publishable_key "$1"

HZ=$(getconf CLK_TCK)
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
echo "| round | binary | /healthz req/s | api µs/req | track req/s | api µs/req | ÷ /healthz | batch events/s | api µs/event |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    start_api "$bin"
    curl -fsS -o /dev/null -X POST "$API/v1/events/track" -H "x-api-key: $GAMIFY_KEY" \
      -H 'Content-Type: application/json' -d '{"event":"warm","userId":"u"}'
    row="| $round | \`$bin\`"
    healthz=0
    for scenario in healthz track batch; do
      case $scenario in
        healthz) args=(-c256 "$API/healthz") per=1 ;;
        track) args=(-c256 -s "$ROOT/scripts/bench/track.lua" "$API") per=1 ;;
        batch) args=(-c32 -s "$ROOT/scripts/bench/batch.lua" "$API") per=100 ;;
      esac
      before=$(ticks "$api_pid")
      wrk -t2 -d"${SECS}s" "${args[@]}" >"$ROOT/target/ab/wrk.txt" 2>&1
      after=$(ticks "$api_pid")
      if grep -q 'Non-2xx' "$ROOT/target/ab/wrk.txt"; then die "non-2xx answers in $scenario with $bin"; fi
      requests=$(awk '/ requests in / {print $1}' "$ROOT/target/ab/wrk.txt")
      rate=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$ROOT/target/ab/wrk.txt")
      us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" -v per="$per" \
        'BEGIN {printf "%.1f", t / hz / (n * per) * 1e6}')
      case $scenario in
        healthz) healthz=$rate row="$row | $rate | $us" ;;
        track) row="$row | $rate | $us | $(awk -v a="$rate" -v b="$healthz" 'BEGIN {printf "%.2f×", a / b}')" ;;
        batch) row="$row | $((rate * per)) | $us |" ;;
      esac
    done
    echo "$row"
    stop_api
  done
done
exit 0
}
