#!/usr/bin/env bash
# Instructions per message (callgrind), switchboard vs raw async-nats in the
# same harness: see benches/instructions.rs. Needs valgrind and NATS on
# 127.0.0.1:4222. Prints one line per mode and the ratios to the baselines:
# publishing (to nats-raw), receiving and reacting (the publishing, the same
# on both sides, subtracted; to nats-raw-recv and to the raw loops).
#   benches/instructions.sh [N1 N2]     (default 20000 120000)
#   MODES="nats-raw nats-worker" benches/instructions.sh    (some modes only)
#   FLAGS=--fresh-payload benches/instructions.sh      (a payload made per message)
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-20000}
n2=${2:-120000}
modes=${MODES:-"nats-raw nats-raw-static nats nats-dyn memory nats-raw-recv nats-recv nats-pubsub memory-recv nats-raw-loop nats-raw-foreach nats-worker memory-worker"}
bin=$(cargo bench --bench instructions --no-run 2>&1 | grep -o 'target/release/deps/instructions-[0-9a-f]*' | tail -1)
[ -x "$bin" ] || { echo "error: could not build the instructions benchmark" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # mode n -> total instructions
  # shellcheck disable=SC2086 # FLAGS is a list of flags.
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" ${FLAGS:-} 2>"$out/log" >/dev/null || {
    echo "error: mode $1 with $2 messages failed:" >&2; tail -5 "$out/log" >&2; exit 1; }
  grep -o 'Collected : [0-9]*' "$out/log" | awk '{print $3}'
}
declare -A per
for mode in $modes; do
  a=$(count "$mode" "$n1")
  b=$(count "$mode" "$n2")
  per[$mode]=$(( (b - a) / (n2 - n1) ))
  case $mode in
    *-recv|*-pubsub|*-loop|*-foreach|*-worker) what="per message published and taken" ;;
    *) what="per publish" ;;
  esac
  printf '%-16s %6d instructions %s   (I(%d)=%d, I(%d)=%d)\n' "$mode" "${per[$mode]}" "$what" "$n1" "$a" "$n2" "$b"
done
ratio() { # label mode baseline publishing
  [ -n "${per[$2]:-}" ] && [ -n "${per[$3]:-}" ] && [ -n "${per[$4]:-}" ] || return 0
  awk -v s="${per[$2]}" -v r="${per[$3]}" -v p="${per[$4]}" -v l="$1" -v m="$2" -v b="$3" \
    'BEGIN { printf "%-10s %-16s %6d vs %-16s %6d: %+5d, %.3f x\n", l, m, s - p, b, r - p, s - r, (s - p) / (r - p) }'
}
for mode in nats-raw-static nats nats-dyn; do
  [ -n "${per[$mode]:-}" ] && [ -n "${per[nats-raw]:-}" ] || continue
  awk -v s="${per[$mode]}" -v r="${per[nats-raw]}" -v m="$mode" 'BEGIN { printf "%-9s %.3f x nats-raw\n", m, s / r }'
done
# Receiving and reacting: what the receiving side costs per message (the
# publishing subtracted), switchboard's against the raw client's.
ratio receiving nats-recv nats-raw-recv nats-raw
# Both sides through switchboard, as `switchboard bench --mode pubsub` runs
# them: its publishing is switchboard's (`nats-dyn`), its baseline's raw.
if [ -n "${per[nats-pubsub]:-}" ] && [ -n "${per[nats-raw-recv]:-}" ]; then
  awk -v s="${per[nats-pubsub]}" -v r="${per[nats-raw-recv]}" \
    'BEGIN { printf "%-10s %-16s %6d vs %-16s %6d: %+5d, %.3f x (publishing and receiving)\n", "pub+sub", "nats-pubsub", s, "nats-raw-recv", r, s - r, s / r }'
fi
ratio reacting nats-worker nats-raw-loop nats-raw
ratio reacting nats-worker nats-raw-foreach nats-raw
for mode in memory-recv memory-worker; do
  [ -n "${per[$mode]:-}" ] && [ -n "${per[memory]:-}" ] || continue
  printf '%-10s %-16s %6d instructions per message over publishing alone (memory)\n' "$([ "$mode" = memory-recv ] && echo receiving || echo reacting)" "$mode" $(( per[$mode] - per[memory] ))
done
