# Shared by the storm benchmarks that compare ways of running pytrace in one
# run (filters_cost.sh, textfmt_cost.sh): sourced, not run.  It finds the
# harness (../shared/bench), copies it into a work directory, builds
# connstorm, mounts tracefs if needed, and defines
#
#   calibrate "TOOL COMMAND"    sets lines_per_conn / lines_per_listener
#   fill_time_wait              a warm-up storm up to the TIME_WAIT cap (steady rates)
#   storm "TOOL COMMAND" LABEL  PAIRS A/B pairs of that tool > file, into $J
#
# Knobs: N, K, PAIRS (the harness's), OUT.  Needs root and a quiet machine.
HERE=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
[ -d "$SHARED" ] || SHARED=$HERE/../shared/bench
NAME=$(basename "${BASH_SOURCE[1]}")
[ -f "$SHARED/bench_tracer.py" ] || { echo "$NAME: harness not found (set SHARED)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "$NAME: needs root" >&2; exit 1; }
PYTRACE=${PYTRACE:-$(command -v pytrace)}
N=${N:-30000}; K=${K:-2}; PAIRS=${PAIRS:-5}
OUT=${OUT:-/tmp/tracebench}
mkdir -p "$OUT"
WORK=$(mktemp -d "/tmp/pytrace-${NAME%.sh}.XXXXXX")
STAMP=$(date -u +%Y%m%d-%H%M%S)
J="$OUT/${NAME%.sh}-$STAMP.jsonl"
cp "$SHARED"/*.py "$SHARED"/*.c "$WORK"/
(cd "$WORK" && gcc -O2 -Wall -o connstorm connstorm.c)
if [ -z "$(ls -A /sys/kernel/tracing 2>/dev/null)" ]; then
	mount -t tracefs nodev /sys/kernel/tracing
fi

calibrate() {
	eval "$(cd "$WORK" && python3 calibrate.py --tool "$1" --label calibration --ready sleep:1.0 \
		--workdir "$WORK/cal" --json "$J" | tail -1)"
}

fill_time_wait() {
	local twmax
	twmax=$(sysctl -n net.ipv4.tcp_max_tw_buckets)
	(cd "$WORK" && ./connstorm -n $(( twmax * 11 / 10 )) -k "$K" -p 47000 -t 30 >/dev/null 2>&1) || true
}

storm() {
	(cd "$WORK" && python3 bench_tracer.py -n "$N" -k "$K" --pairs "$PAIRS" --workdir "$WORK/run" --json "$J" \
		--ready sleep:1.0 --tool "$1" --out file --lines-per-conn "$lines_per_conn" \
		--lines-per-listener "$lines_per_listener" --label "$2" >&2)
}

report() {
	(cd "$WORK" && python3 report.py "$J") | tee "$OUT/${NAME%.sh}-$STAMP.md"
}
