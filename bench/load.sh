#!/usr/bin/env bash
# Load benchmark: the real server (shipped config) against the floor (examples/floor.rs: same
# stack, fixed "allowed"), measured alternately in one run with wrk over keep-alive HTTPS.
#
#   bench/load.sh [ROUNDS=3] [CONNECTIONS=16] [SECONDS=10] [BODY=benches/fixtures/replicaset-review.json]
#
# FLOOR=value (default): the floor parses the review into a serde_json::Value, as a typical
# webhook does. FLOOR=raw: it only scans it (the object stays raw): the cheapest floor.
#
# Prints a table per round, then medians, the project/floor ratios, and the server's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} conns=${2:-16} secs=${3:-10} body=${4:-benches/fixtures/replicaset-review.json}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sidecar-injector --example floor

work=$(mktemp -d)
trap 'kill $proj_pid $floor_pid 2>/dev/null || true; rm -rf "$work"' EXIT
proj_port=18443 floor_port=18444
LOG_LEVEL=${LOG_LEVEL:-info} target/release/sidecar-injector serve --config manifests/base/config --dev-certs-dir "$work/certs" \
  --listen 127.0.0.1:$proj_port --metrics-listen 127.0.0.1:19090 2>"$work/proj.log" &
proj_pid=$!
for _ in $(seq 100); do [[ -f $work/certs/tls.key ]] && curl -sf --cacert "$work/certs/ca.crt" https://localhost:$proj_port/readyz >/dev/null && break; sleep 0.1; done
target/release/examples/floor 127.0.0.1:$floor_port "$work/certs/tls.crt" "$work/certs/tls.key" "${FLOOR:-value}" 2>"$work/floor.log" &
floor_pid=$!
sleep 0.5

# The project must inject: check one answer before measuring.
curl -sf --cacert "$work/certs/ca.crt" -H 'Content-Type: application/json' --data-binary @"$body" \
  https://localhost:$proj_port/mutate | grep -q '"patchType":"JSONPatch"' || { echo "the server did not inject" >&2; exit 1; }

run() { # name port -> RESULT line
  BODY_FILE="$body" wrk -t$(( conns < 2 ? 1 : 2 )) -c"$conns" -d"${secs}s" --latency -s bench/post.lua "https://localhost:$2/mutate" | grep '^RESULT' | sed "s/^RESULT/$1/"
}
echo "floor: ${FLOOR:-value}; body: $body ($(wc -c <"$body") bytes), $conns connections, ${secs}s per run, $rounds rounds, $(nproc) cores"
results=()
for r in $(seq "$rounds"); do
  if (( r % 2 )); then order="floor project"; else order="project floor"; fi
  for who in $order; do
    port=$floor_port; [[ $who == project ]] && port=$proj_port
    line=$(run "$who" $port); echo "round $r: $line"; results+=("$line")
  done
done
peak_kib=$(awk '/VmHWM/ {print $2}' /proc/$proj_pid/status)
printf '%s\n' "${results[@]}" | python3 bench/summary.py
echo "project peak RSS: $((peak_kib / 1024)) MiB ($peak_kib KiB)"
