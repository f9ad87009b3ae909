#!/bin/bash
# weft-control at scale: AGENTS simulated agents (lightweight clients in one process, doing what
# weftd does against the API: long-poll the node snapshot with after=<version>, then report status)
# watch while CHANGES resource changes are applied one at a time, once with the SQLite store and
# once with a three-member etcd cluster on loopback (Debian's etcd-server, data dirs on disk).
#
#   make bench-control                    AGENTS=1000 CHANGES=10 STORES="sqlite etcd"
#   AGENTS=200 CHANGES=5 make bench-control
#
# Reported per store: propagation of each change to each agent (p50, p99), the time until every
# agent had it, weft-control's CPU (% of one core, from /proc/<pid>/stat) while idle and during the
# changes, its memory (VmRSS, VmHWM), and etcd's CPU and memory. The agents run on the same two
# cores as the control plane; the machine is shared, so figures are noisy: rerun and compare.
# Output: the summary on stdout and the table rows in Benchmarks/control/results/latest.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
AGENTS=${AGENTS:-1000}
CHANGES=${CHANGES:-10}
STORES=${STORES:-sqlite etcd}
SCRATCH=${SCRATCH:-$ROOT/.build-release}
export PATH="$PATH:/opt/swift/usr/bin"

command -v etcd >/dev/null || { echo "bench-control: etcd is not on PATH; run make deps (Debian's etcd-server)" >&2; exit 1; }
# Many agents: one TLS connection each, on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cd "$ROOT"
swift build -c release --scratch-path "$SCRATCH" --product weft-control
swift build -c release --scratch-path "$SCRATCH" --product weft-control-bench
BIN=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)

mkdir -p "$HERE/results"
OUT="$HERE/results/latest.md"
{
    echo "# weft-control at $AGENTS agents ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
    echo
    echo "| store | agents | propagation p50 | p99 | until all agents (median) | weft-control CPU idle / changes | weft-control memory | etcd CPU idle / changes, memory |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$OUT"
for store in $STORES; do
    echo "== $store"
    "$BIN/weft-control-bench" --store "$store" --agents "$AGENTS" --changes "$CHANGES" --control-binary "$BIN/weft-control" | tee "$HERE/results/$store.txt"
    grep '^|' "$HERE/results/$store.txt" >> "$OUT"
done
echo
cat "$OUT"
