"""The suite runs as root against the real kernel: no mocks.

It needs the package importable with its built objects (scripts/test.sh sets
that up on a fresh machine).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("the pytrace suite loads BPF programs: run it as root (scripts/test.sh)", returncode=2)
    from pytrace.core import objects
    if not os.path.exists(os.path.join(objects.BPF_DIR, "tcpstates.bpf.o")):
        pytest.exit(f"no built BPF objects in {objects.BPF_DIR}: run scripts/test.sh (or python3 build.py)",
                    returncode=2)
