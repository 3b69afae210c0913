#!/usr/bin/env bash
# Latency and throughput of `anomalysd serve` under load, against the cold `detect` process, for the README's "Serving" table.
#
#   tools/serve_bench.sh CHECKPOINT CATEGORY IMAGE [REQUESTS]
#
# For batching off (--max-batch 1) and on (--max-batch 16 --max-delay-ms 10), at concurrency 1, 4 and 16, it starts the server,
# waits for /v2/health/ready, and runs hey (Debian's load generator) with REQUESTS posts of IMAGE (default 200); each post is one
# image, so requests/s = images/s. It then times the same image's cold `detect` process (load + score) 3 times. Prints one
# markdown table; the raw hey outputs stay in $OUT (default /tmp/serve-bench). Run it alone on the machine: timings are shared.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CKPT=${1:?checkpoint}; CATEGORY=${2:?category}; IMAGE=${3:?image}; N=${4:-200}
OUT=${OUT:-/tmp/serve-bench}
PORT=${PORT:-18080}
command -v hey >/dev/null || { echo "serve_bench: hey is missing (apt-get install hey)" >&2; exit 2; }
mkdir -p "$OUT"
CT=image/png
case "$IMAGE" in *.jpg|*.jpeg) CT=image/jpeg ;; *.bmp) CT=image/bmp ;; *.tif|*.tiff) CT=image/tiff ;; esac

percentile() { # hey's "  50% in 0.0123 secs" -> ms
  awk -v p="$1%" '$1 == p && $2 == "in" {printf "%.1f", $3 * 1000}' "$2"
}

echo "| batching | concurrency | p50 ms | p90 ms | p99 ms | images/s |"
echo "|---|---|---|---|---|---|"
for mode in off on; do
  if [[ $mode == off ]]; then batch=(--max-batch 1); else batch=(--max-batch 16 --max-delay-ms 10); fi
  "$ROOT/anomalysd" serve --checkpoint "$CKPT" --port "$PORT" "${batch[@]}" --max-queue 256 >"$OUT/serve-$mode.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
    sleep 0.5
  done
  for c in 1 4 16; do
    hey -n 20 -c "$c" -m POST -T "$CT" -D "$IMAGE" "http://127.0.0.1:$PORT/v1/categories/$CATEGORY/detect" >/dev/null # warm the connection pool
    hey -n "$N" -c "$c" -m POST -T "$CT" -D "$IMAGE" "http://127.0.0.1:$PORT/v1/categories/$CATEGORY/detect" >"$OUT/hey-$mode-c$c.txt"
    grep -q '\[200\]' "$OUT/hey-$mode-c$c.txt" || { echo "serve_bench: no 200 answers (see $OUT/hey-$mode-c$c.txt)" >&2; exit 1; }
    rps=$(awk '/Requests\/sec:/ {printf "%.1f", $2}' "$OUT/hey-$mode-c$c.txt")
    echo "| $mode | $c | $(percentile 50 "$OUT/hey-$mode-c$c.txt") | $(percentile 90 "$OUT/hey-$mode-c$c.txt") | $(percentile 99 "$OUT/hey-$mode-c$c.txt") | $rps |"
  done
  kill -TERM $pid; wait $pid || true
  trap - EXIT
done

# The cold detect process: load the engine, the checkpoint and the banks, then score the one image.
times=()
for _ in 1 2 3; do
  start=$(date +%s.%N)
  "$ROOT/anomalysd" detect --checkpoint "$CKPT" --category "$CATEGORY" "$IMAGE" >/dev/null 2>&1
  times+=("$(echo "$(date +%s.%N) - $start" | bc)")
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo
echo "cold detect process (load + score), 3 runs: min $(echo "$sorted" | head -1 | awk '{printf "%.0f", $1 * 1000}') ms, median $(echo "$sorted" | sed -n 2p | awk '{printf "%.0f", $1 * 1000}') ms"
