#!/usr/bin/env bash
# Instructions per admission, counted by callgrind (repeatable on a noisy machine, where
# req/s are not): the whole server process (TLS, HTTP, JSON, engine) under wrk, against the
# floor (bench/floor) doing the same.
#
#   bench/callgrind.sh [CONFIG=manifests/base/config] [BODY=benches/fixtures/replicaset-review.json] [SECONDS=15]
#
# Each server runs under `valgrind --tool=callgrind --instr-atstart=no`; instrumentation is
# switched on only while `wrk -t1 -c4` posts the body, then the count is divided by the
# requests wrk completed. The profiles stay in target/callgrind/ for callgrind_annotate.
# Needs valgrind (apt-get install valgrind) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-manifests/base/config} body=${2:-benches/fixtures/replicaset-review.json} secs=${3:-15}
for tool in valgrind wrk; do command -v $tool >/dev/null || { apt-get update -qq && apt-get install -y -qq $tool >/dev/null; }; done
out=target/callgrind
mkdir -p $out
# The shipped release profile, with line tables for the annotations.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build --release --quiet --bin sidecar-injector --target-dir $out/build
cargo build --release --quiet --manifest-path bench/floor/Cargo.toml
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" -days 1 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1

count() { # NAME PORT CMD... -> "NAME: N requests, I instructions per request"
  local name=$1 port=$2; shift 2
  rm -f $out/$name.out*
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/$name.out "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 240); do curl -sk -o /dev/null "https://127.0.0.1:$port/mutate" --data-binary @"$body" && break; sleep 0.5; done
  callgrind_control -i on $pid >/dev/null 2>&1
  local res; res=$(BODY_FILE="$body" wrk -t1 -c4 -d${secs}s -s bench/post.lua "https://127.0.0.1:$port/mutate")
  callgrind_control -i off $pid >/dev/null 2>&1
  callgrind_control -d $pid >/dev/null 2>&1
  kill $pid; wait $pid 2>/dev/null || true
  local n; n=$(echo "$res" | sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p')
  local total; total=$(callgrind_annotate $out/$name.out.1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name: $n requests, $((total / n)) instructions per request"
}
count floor 18454 bench/floor/target/release/floor 127.0.0.1:18454 "$work/tls.crt" "$work/tls.key" value
count project 18453 $out/build/release/sidecar-injector serve --config "$config" \
  --listen 127.0.0.1:18453 --metrics-listen 127.0.0.1:18455 \
  --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key" --drain-grace-seconds 0
