#!/bin/bash
# Set everything up (scripts/setup.sh), then run the whole test suite:
#  0. the unit tier (tests/unit), as nobody with no capability: it needs
#     neither root nor a kernel, and this proves it;
#  1. the host suite as root, against this machine's kernel, with the
#     installed package (extra arguments go to pytest: scripts/test.sh -k tcpstates);
#  2. the kernel matrix (scripts/kernel_lab.py): every tool and hook variant
#     on Debian's stock 5.10, 6.1 and 6.12, each booted under qemu.
# PYTRACE_KERNELS picks the guest kernels ("6.1 6.12"), or none: "none".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PYTRACE_VENV:-/opt/pytrace}
LAB=${PYTRACE_LAB:-/var/lib/pytrace-lab}
KERNELS=${PYTRACE_KERNELS:-5.10 6.1 6.12}
# the suite must test the installed package, not the source tree; what the
# host's matrix cases found joins the guests' in the lab's report
status=0
setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs \
	env HOME=/tmp "$VENV/bin/python" -m pytest -p no:cacheprovider tests/unit "$@" || status=$?
"$VENV/bin/python" -m pytest -p no:cacheprovider tests --ignore=tests/unit --durations=25 \
	--matrix-results="$LAB/results/host.json" "$@" || status=$?
if [ "$KERNELS" != none ]; then
	# shellcheck disable=SC2086  # a list of kernel names
	python3 scripts/kernel_lab.py matrix $KERNELS || status=1
fi
exit $status
