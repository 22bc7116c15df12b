#!/usr/bin/env bash
# Instructions per request of gamify-api builds, counted by valgrind's callgrind: unlike seconds,
# the count does not move with what else the shared machine is doing, so it can tell changes of a
# few per cent apart. For each binary: the same stack as ab-gateway.sh (a release development
# broker of its own, the database gamify_cg, Redis), gamify-api under `valgrind --tool=callgrind`,
# warmed up, counters zeroed, wrk on one scenario, counters dumped and divided by wrk's requests.
#
#   scripts/bench/callgrind-gateway.sh BINARY...   # CG_SECONDS (20), CG_SCENARIOS ("healthz track batch")
#
# The counts include librdkafka's threads and everything gamify-api runs in user space, not the
# kernel's work (system calls, loopback TCP). valgrind serialises threads and runs ~50× slower, so
# wrk sees a few hundred requests per second; the count per request is what matters.
{
[ $# -ge 1 ] || { echo "usage: $0 GAMIFY_API_BINARY..." >&2; exit 2; }
BENCH_STACK=cg
source "$(dirname "$0")/gateway-stack.sh"
SECS=${CG_SECONDS:-20} PORT=${CG_PORT:-3920} SCENARIOS=${CG_SCENARIOS:-healthz track batch}
API="http://127.0.0.1:$PORT" OUT="$ROOT/target/cg"
command -v valgrind >/dev/null 2>&1 || apt_install valgrind
rm -rf "$OUT"
gateway_stack cg "$1"

publishable_key "$1"

echo "| binary | scenario | requests | instructions/request | per event |"
echo "|---|---|---|---|---|"
for bin in "$@"; do
  for scenario in $SCENARIOS; do
    case $scenario in
      healthz) args=(-c32 "$API/healthz") per=1 ;;
      track) args=(-c32 -s "$ROOT/scripts/bench/track.lua" "$API") per=1 ;;
      batch) args=(-c8 -s "$ROOT/scripts/bench/batch.lua" "$API") per=100 ;;
      *) die "unknown scenario $scenario" ;;
    esac
    dir="$OUT/$(basename "$bin")-$scenario" && mkdir -p "$dir"
    valgrind --tool=callgrind --collect-atstart=yes --callgrind-out-file="$dir/callgrind.out.%p" \
      "$bin" serve >>"$dir/api.log" 2>&1 &
    api_pid=$!
    wait_for 120 "gamify-api under callgrind" curl -fsS "$API/readyz"
    # Warm-up: key cache, producer connection, allocator, then only the measured window counts.
    wrk -t1 -d5s "${args[@]}" >/dev/null 2>&1
    callgrind_control -z "$api_pid" >/dev/null 2>&1
    wrk -t1 -d"${SECS}s" "${args[@]}" >"$dir/wrk.txt" 2>&1
    callgrind_control -d "$api_pid" >/dev/null 2>&1
    if grep -q 'Non-2xx' "$dir/wrk.txt"; then die "non-2xx answers in $scenario with $bin ($dir/wrk.txt)"; fi
    requests=$(awk '/ requests in / {print $1}' "$dir/wrk.txt")
    instructions=$(cat "$dir"/callgrind.out.*.[0-9]* 2>/dev/null | awk '/^summary:/ {s += $2} END {print s}')
    kill "$api_pid"; wait "$api_pid" 2>/dev/null || true; api_pid=""
    awk -v i="$instructions" -v n="$requests" -v per="$per" -v b="\`$bin\`" -v s="$scenario" \
      'BEGIN {printf "| %s | %s | %d | %.0f | %.0f |\n", b, s, n, i / n, i / (n * per)}'
  done
done
exit 0
}
