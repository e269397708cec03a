#!/bin/bash
# What the text formatter costs under the harness's connection storm
# (../shared/bench/bench_tracer.py), in one run: `pytrace tcpstates > file`
# and `pytrace tcplife > file` with the native formatter (core/rowfmt.py,
# src/native/rowfmt.c) and with CPython's (PYTRACE_ROWFMT=python), each way
# in PAIRS A/B pairs, the two ways alternating ROUNDS times.
#
#   sudo bash bench/textfmt_cost.sh            # ~8 minutes on 2 cores
#
# Knobs: N, K, PAIRS, ROUNDS (default 2), PYTRACE (default: the installed
# command), OUT.  Run it on a quiet machine.
set -euo pipefail
source "$(dirname "$0")/storm_lib.sh"
trap 'rm -rf "$WORK"' EXIT
ROUNDS=${ROUNDS:-2}
for tool in tcpstates tcplife; do
	calibrate "$PYTRACE $tool"
	[ "$tool" = tcpstates ] && fill_time_wait
	for round in $(seq "$ROUNDS"); do
		storm "$PYTRACE $tool" "$tool >file native (round $round)"
		storm "env PYTRACE_ROWFMT=python $PYTRACE $tool" "$tool >file CPython (round $round)"
	done
done
report
