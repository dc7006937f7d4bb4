#!/usr/bin/env bash
# Load benchmark, for exploring: the real server against the floor (bench/floor: same stack,
# fixed "allowed", a crate of its own with default features), measured alternately in one run
# with wrk over keep-alive HTTPS. The acceptance measurement is ../shared/perf/ratio.sh.
#
#   bench/load.sh [ROUNDS=3] [CONNECTIONS=16] [SECONDS=10] [BODY=benches/fixtures/replicaset-review.json]
#
# FLOOR=value (default): the floor parses the review into a serde_json::Value, as a typical
# webhook does. FLOOR=raw: it only scans it (the object stays raw): the cheapest floor.
# CONFIG: the server's configuration (default: the shipped one, manifests/base/config).
# CONNECTIONS=1 measures latency: one request at a time.
#
# Prints a table per round, then medians, the project/floor ratios, and the server's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} conns=${2:-16} secs=${3:-10} body=${4:-benches/fixtures/replicaset-review.json}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sidecar-injector
cargo build --release --quiet --manifest-path bench/floor/Cargo.toml
floor_bin=bench/floor/target/release/floor

work=$(mktemp -d)
trap 'kill $proj_pid $floor_pid 2>/dev/null || true; rm -rf "$work"' EXIT
proj_port=18443 floor_port=18444
LOG_LEVEL=${LOG_LEVEL:-info} target/release/sidecar-injector serve --config "${CONFIG:-manifests/base/config}" --dev-certs-dir "$work/certs" \
  --listen 127.0.0.1:$proj_port --metrics-listen 127.0.0.1:19090 2>"$work/proj.log" &
proj_pid=$!
for _ in $(seq 100); do [[ -f $work/certs/tls.key ]] && curl -sf --cacert "$work/certs/ca.crt" https://localhost:$proj_port/readyz >/dev/null && break; sleep 0.1; done
"$floor_bin" 127.0.0.1:$floor_port "$work/certs/tls.crt" "$work/certs/tls.key" "${FLOOR:-value}" 2>"$work/floor.log" &
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
