#!/bin/bash
# Set everything up (scripts/setup.sh), then run the whole test suite as root
# against the real kernel, with the installed package.  Extra arguments go to
# pytest (e.g. scripts/test.sh -k tcpstates).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PYTRACE_VENV:-/opt/pytrace}
# the suite must test the installed package, not the source tree
exec "$VENV/bin/python" -m pytest -p no:cacheprovider tests "$@"
