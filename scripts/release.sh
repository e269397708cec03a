#!/bin/bash
# Release without make, as root on Debian 12: build the one platform wheel
# (py3-none-linux_x86_64: Python package, every BPF object and its layout, the
# C sources for --ebpf, libbpf + libelf bundled) from the COMMITTED tree, then
# run the bare-host test (tests/test_wheel.py) against exactly that wheel:
# installed into a debootstrapped Debian root with and without libbpf1, and
# into a fresh venv with no toolchain on PATH.
#
#   sudo scripts/release.sh [OUTDIR]      # the wheel lands in OUTDIR (default dist/)
#
# scripts/setup.sh runs first: it installs what the build and the test need
# (clang, libbpf1, debootstrap, the test venv).  Extra arguments after OUTDIR
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "release.sh: run as root (the test loads BPF programs and builds a chroot)" >&2; exit 1; }
OUT=${1:-dist}
shift || true

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	echo "release.sh: note: uncommitted changes are NOT in the release (it is built from HEAD)" >&2
fi

bash scripts/setup.sh
VENV=${PYTRACE_VENV:-/opt/pytrace}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Exactly what is committed: no stray, stale or locally built files can reach the wheel.
git archive --format=tar HEAD | tar -x -C "$work/"
"$VENV/bin/python" -m pip wheel -q --no-deps --disable-pip-version-check -w "$work/dist" "$work"

wheels=("$work"/dist/pytrace-*.whl)
[ ${#wheels[@]} = 1 ] || { echo "release.sh: expected one wheel, got: ${wheels[*]}" >&2; exit 1; }
mkdir -p "$OUT"
cp "${wheels[0]}" "$OUT/"
wheel=$(realpath "$OUT/$(basename "${wheels[0]}")")
echo "release.sh: built $wheel ($(du -k "$wheel" | cut -f1) KiB); testing it on a bare host" >&2

PYTRACE_WHEEL="$wheel" "$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/test_wheel.py "$@"
echo "release.sh: $wheel passed the bare-host test" >&2
