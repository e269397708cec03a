#!/bin/bash
# Side-by-side benchmark: libbpf-tools (the C reference) and pytrace, measured
# by the same harness (../shared/bench: connection storms, start-up latency,
# whole-command wall time) in one run, then one table with both.
#
#   sudo bash bench/side_by_side.sh            # ~6 minutes on 2 cores
#
# Knobs are the harness's (N, K, PAIRS, RUNS, OUT) plus PYTRACE (the pytrace
# command, default: the installed one).  Run it on a quiet machine: the
# ratios are what matter, and other load skews them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
[ -d "$SHARED" ] || SHARED=$HERE/../shared/bench
[ -f "$SHARED/run_anchor.sh" ] || { echo "side_by_side.sh: harness not found (set SHARED)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "side_by_side.sh: needs root" >&2; exit 1; }
PYTRACE=${PYTRACE:-$(command -v pytrace)}
export OUT=${OUT:-/tmp/tracebench}
WORK=$(mktemp -d /tmp/pytrace-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# the harness builds its C helpers next to itself: work on a copy
cp "$SHARED"/*.py "$SHARED"/*.sh "$SHARED"/*.c "$WORK"/
before=$(ls "$OUT"/anchor-*.jsonl 2>/dev/null || true)
bash "$WORK/run_anchor.sh" >/dev/null
TAG=pytrace TCPSTATES="$PYTRACE tcpstates" TCPLIFE="$PYTRACE tcplife" SOFTIRQS="$PYTRACE softirqs" \
	READY=sleep:1.0 bash "$WORK/run_anchor.sh" >/dev/null
new=$(ls -t "$OUT"/anchor-*.jsonl | head -2 | tac)
python3 "$WORK/report.py" $new | tee "$OUT/side_by_side-$(date -u +%Y%m%d-%H%M%S).md"
