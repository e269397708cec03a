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
source "$(dirname "$0")/storm_lib.sh"
BASE_REV=${BASE_REV:-3427a72^1}
cleanup() {
	git -C "$REPO" worktree remove --force "$WORK/base" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

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

# output lines per connection, the same for every way (the filters let all through)
calibrate "$PYTRACE tcpstates"
fill_time_wait
# the base gets a cache of its own: older builds speculated on any installation's remembered object
storm "env PYTRACE_CACHE=$WORK/cache-base $WORK/pytrace-base tcpstates" "base ($BASE_REV) tcpstates >file"
storm "$PYTRACE tcpstates" "tcpstates >file (filters off)"
storm "$PYTRACE tcpstates --cgroup /" "tcpstates --cgroup / >file"
storm "$PYTRACE tcpstates --show-container" "tcpstates --show-container >file"
report
