#!/usr/bin/env bash
# Instructions per published message (callgrind), switchboard vs raw async-nats
# in the same harness: see benches/instructions.rs. Needs valgrind and NATS on
# 127.0.0.1:4222. Prints one line per mode and the ratios to nats-raw.
#   benches/instructions.sh [N1 N2]     (default 20000 120000)
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-20000}
n2=${2:-120000}
bin=$(cargo bench --bench instructions --no-run 2>&1 | grep -o 'target/release/deps/instructions-[0-9a-f]*' | tail -1)
[ -x "$bin" ] || { echo "error: could not build the instructions benchmark" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # mode n -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>"$out/log" >/dev/null
  grep -o 'Collected : [0-9]*' "$out/log" | awk '{print $3}'
}
declare -A per
for mode in nats-raw nats-raw-static nats nats-dyn memory; do
  a=$(count "$mode" "$n1")
  b=$(count "$mode" "$n2")
  per[$mode]=$(( (b - a) / (n2 - n1) ))
  printf '%-9s %6d instructions per publish   (I(%d)=%d, I(%d)=%d)\n' "$mode" "${per[$mode]}" "$n1" "$a" "$n2" "$b"
done
for mode in nats-raw-static nats nats-dyn; do
  awk -v s="${per[$mode]}" -v r="${per[nats-raw]}" -v m="$mode" 'BEGIN { printf "%-9s %.3f x nats-raw\n", m, s / r }'
done
