#!/bin/bash
# What the container filters and labels (src/bpf/filter.h, core/containers.py)
# cost: `pytrace tcpstates > file` under the harness's connection storm
# (../shared/bench/bench_tracer.py), in one run, four ways:
#
#   base        pytrace as of BASE_REV (default 3427a72^1: main before filter.h)
#   off         this tree, no filter asked for (filter.h's code is dead, removed
#               by the verifier: this must cost no more than noise against base)
#   cgroup /    this tree, --cgroup / (every socket's cgroup read and looked up;
#               all pass, so the output is the same)
#   labels      this tree, --show-container (the ids read in BPF, each event's
#               cgroup resolved to its labels in user space)
#
#   sudo bash bench/filters_cost.sh            # ~6 minutes on 2 cores
#
# Knobs: N, K, PAIRS (the harness's), BASE_REV, PYTRACE (this tree's command,
# default: the installed one), OUT.  Run it on a quiet machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
[ -d "$SHARED" ] || SHARED=$HERE/../shared/bench
[ -f "$SHARED/bench_tracer.py" ] || { echo "filters_cost.sh: harness not found (set SHARED)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "filters_cost.sh: needs root" >&2; exit 1; }
PYTRACE=${PYTRACE:-$(command -v pytrace)}
BASE_REV=${BASE_REV:-3427a72^1}
N=${N:-30000}; K=${K:-2}; PAIRS=${PAIRS:-5}
OUT=${OUT:-/tmp/tracebench}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/pytrace-filters.XXXXXX)
cleanup() {
	git -C "$REPO" worktree remove --force "$WORK/base" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
cp "$SHARED"/*.py "$SHARED"/*.c "$WORK"/
(cd "$WORK" && for p in connstorm; do gcc -O2 -Wall -o "$p" "$p.c"; done)
if [ -z "$(ls -A /sys/kernel/tracing 2>/dev/null)" ]; then
	mount -t tracefs nodev /sys/kernel/tracing
fi

# the base: BASE_REV built into a venv of its own, started as setup.sh starts pytrace
echo "filters_cost.sh: building $BASE_REV" >&2
git -C "$REPO" worktree add -q --detach "$WORK/base" "$BASE_REV"
/usr/bin/python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check pyelftools
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$WORK/base"
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$WORK/pytrace-base" <<LAUNCHER
#!$WORK/venv/bin/python -S
import sys
sys.path.append("$SITE")
from pytrace.cli import entry
sys.exit(entry())
LAUNCHER
chmod 755 "$WORK/pytrace-base"

STAMP=$(date -u +%Y%m%d-%H%M%S)
J="$OUT/filters-$STAMP.jsonl"
cd "$WORK"
# output lines per connection, the same for every way (the filters let all through)
eval "$(python3 calibrate.py --tool "$PYTRACE tcpstates" --label calibration --ready sleep:1.0 \
	--workdir "$WORK/cal" --json "$J" | tail -1)"
TWMAX=$(sysctl -n net.ipv4.tcp_max_tw_buckets)
./connstorm -n $(( TWMAX * 11 / 10 )) -k "$K" -p 47000 -t 30 >/dev/null 2>&1 || true   # TIME_WAIT at its cap
run() {
	python3 bench_tracer.py -n "$N" -k "$K" --pairs "$PAIRS" --workdir "$WORK/run" --json "$J" --ready sleep:1.0 \
		--tool "$1" --out file --lines-per-conn "$lines_per_conn" --lines-per-listener "$lines_per_listener" \
		--label "$2" >&2
}
# the base gets a cache of its own: older builds speculated on any installation's remembered object
run "env PYTRACE_CACHE=$WORK/cache-base $WORK/pytrace-base tcpstates" "base ($BASE_REV) tcpstates >file"
run "$PYTRACE tcpstates" "tcpstates >file (filters off)"
run "$PYTRACE tcpstates --cgroup /" "tcpstates --cgroup / >file"
run "$PYTRACE tcpstates --show-container" "tcpstates --show-container >file"
python3 report.py "$J" | tee "$OUT/filters-$STAMP.md"
