#!/bin/bash
# Set pytrace up on a fresh Debian 12 machine, as root:
#  - the Debian packages it builds with (clang, llvm, libbpf-dev, bpftool) and
#    runs or is tested with (libbpf1, iproute2, libbpf-tools for side-by-side
#    checks, python3-venv);
#  - a virtual environment at $PYTRACE_VENV (default /opt/pytrace) on Debian's
#    own python3 (it starts in ~20 ms, which start-up latency depends on),
#    holding pytrace installed from this tree (pip runs build.py, so the BPF
#    objects are compiled and packaged) and pytest;
#  - /usr/local/bin/pytrace.
# Safe to run again: it only does what is missing, and reinstalls the package.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (apt-get, /opt, BPF)" >&2; exit 1; }

PKGS=(clang llvm libbpf-dev libbpf1 bpftool iproute2 libbpf-tools python3 python3-venv python3-pip influxdb prometheus
      gcc libc6-dev util-linux procps debootstrap
      podman runc systemd-container  # test_containers.py: real containers (runc: crun refuses hybrid cgroup hosts)
      nodejs $(command -v npm >/dev/null || echo npm) chromium)  # npm: unless nodejs brings its own (NodeSource)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup.sh: installing ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${PYTRACE_VENV:-/opt/pytrace}
if [ ! -x "$VENV/bin/python" ]; then
	/usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check pytest pytest-timeout pyelftools prometheus_client
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .
# The command is pip's launcher minus `site`: python -S skips the .pth
# processing of the venv's site-packages (setuptools' distutils hack among
# it), ~5 ms of every start, and pytrace needs only that one directory on
# its path.  (The venv's own bin/pytrace stays pip's.)
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f /usr/local/bin/pytrace
cat > /usr/local/bin/pytrace.tmp <<LAUNCHER
#!$VENV/bin/python -S
# pytrace, written by scripts/setup.sh (see there why -S)
import sys
sys.path.append("$SITE")
from pytrace.cli import entry
sys.exit(entry())
LAUNCHER
chmod 755 /usr/local/bin/pytrace.tmp
mv /usr/local/bin/pytrace.tmp /usr/local/bin/pytrace
echo "setup.sh: pytrace $("$VENV/bin/pytrace" --version | cut -d' ' -f2) installed in $VENV; /usr/local/bin/pytrace" >&2
