"""A minimal Debian root made by debootstrap, cached: the bare host of
test_wheel.py and the root filesystem of test_containers.py's containers.

The root is cached under $PYTRACE_TEST_CACHE (/var/cache/pytrace-test)/roots/,
keyed by suite, variant, mirror and package list, and built once (the
mirror must be reachable then; no image registry is involved).  Users take
a writable overlay of it (mount overlay, podman --rootfs DIR:O,
systemd-nspawn --volatile=overlay): the cache itself is never modified.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("PYTRACE_TEST_CACHE", "/var/cache/pytrace-test"))
MIRROR = os.environ.get("PYTRACE_TEST_MIRROR", "http://deb.debian.org/debian")
SUITE, VARIANT = "bookworm", "minbase"
PACKAGES = ("python3", "libbpf1")       # test_wheel's bare host; python3 runs the containers' traffic


class cache_lock:
    """One builder of the cache at a time (CI and a developer share this machine)."""

    def __enter__(self):
        CACHE.mkdir(parents=True, exist_ok=True)
        self.fh = open(CACHE / ".lock", "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.fh.close()


def debian_root(packages: tuple[str, ...] = PACKAGES) -> Path:
    key = hashlib.sha256(json.dumps([SUITE, VARIANT, MIRROR, sorted(packages)]).encode()).hexdigest()[:16]
    final = CACHE / "roots" / f"{SUITE}-{VARIANT}-{key}"
    done = final / ".pytrace-complete"
    if done.exists():
        return final
    if not shutil.which("debootstrap"):
        pytest.fail("debootstrap is not installed (scripts/setup.sh installs it)")
    with cache_lock():
        if done.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(final.name + ".*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp = final.with_name(f"{final.name}.{os.getpid()}")
        # in a private mount namespace: the /proc debootstrap mounts cannot outlive it
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "debootstrap",
                               f"--variant={VARIANT}", f"--include={','.join(packages)}",
                               SUITE, str(tmp), MIRROR], capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(f"debootstrap failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
        (tmp / done.name).write_text(json.dumps({"suite": SUITE, "variant": VARIANT, "mirror": MIRROR,
                                                 "packages": sorted(packages)}))
        tmp.rename(final)
    return final
