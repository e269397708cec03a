"""The tests' own BPF programs (tests/bpf/*.bpf.c): scaffolding, not tools.

build.py builds them beside their sources, outside the package, so no wheel
carries them; BpfObject and loader.load take the file name bpf_object() gives
(core/objects.path: a name with a slash is an object from outside the install).
"""

from __future__ import annotations

import os

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf")


def bpf_object(name: str) -> str:
    """The file name of tests/bpf/<name>.bpf.o, which must have been built."""
    path = os.path.join(DIR, f"{name}.bpf.o")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is not built: run python3 build.py (or pip install .) in the source tree")
    return path
