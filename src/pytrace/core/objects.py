"""Where the precompiled BPF objects and their sources live, and their checks.

The objects are package data (pytrace/bpf/*.bpf.o), built by build.py.  Before
libbpf sees one we check that it is there, readable and a BPF ELF object, so a
broken install gets one clear line instead of a libbpf error.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PytraceError

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
SRC_DIR = BPF_DIR / "src"
EM_BPF = 247

_btf_override: str | None = None


def path(name: str) -> Path:
    obj = BPF_DIR / f"{name}.bpf.o"
    try:
        with open(obj, "rb") as fh:
            head = fh.read(20)
    except FileNotFoundError:
        raise PytraceError(f"{obj} is missing: this install has no built BPF objects "
                           "(reinstall pytrace, or run python3 build.py in a source tree)") from None
    except OSError as exc:
        raise PytraceError(f"{obj} is not readable: {exc.strerror}") from None
    if head[:4] != b"\x7fELF" or int.from_bytes(head[18:20], "little") != EM_BPF:
        raise PytraceError(f"{obj} is not a BPF object (damaged install? reinstall pytrace)")
    return obj


def source(name: str) -> str:
    """The C source an object was built from, followed by the local headers it includes."""
    parts: list[str] = []
    seen: set[str] = set()

    def add(fname: str) -> None:
        if fname in seen or not (SRC_DIR / fname).exists():
            return
        seen.add(fname)
        text = (SRC_DIR / fname).read_text()
        parts.append(f"/* ===== {fname} ===== */\n{text}")
        for line in text.splitlines():
            if line.startswith('#include "'):
                add(line.split('"')[1])

    add(f"{name}.bpf.c")
    if not parts:
        raise PytraceError(f"the source of {name} is not in this install ({SRC_DIR})")
    return "\n".join(parts)


def set_custom_btf(path_: str | None) -> None:
    global _btf_override
    _btf_override = path_


def custom_btf() -> str | None:
    """External kernel BTF (--btf or PYTRACE_BTF) for kernels without /sys/kernel/btf/vmlinux."""
    p = _btf_override or os.environ.get("PYTRACE_BTF")
    if not p:
        return None
    if not os.path.isfile(p):
        raise PytraceError(f"BTF file {p} (from {'--btf' if _btf_override else 'PYTRACE_BTF'}) does not exist")
    return p


def check_kernel_btf() -> None:
    if custom_btf() is None and not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise PytraceError("this kernel has no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF): "
                           "point PYTRACE_BTF or --btf at a BTF file for it (e.g. from BTFHub)")
