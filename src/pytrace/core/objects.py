"""Where the precompiled BPF objects and their sources live, and their checks.

The objects are package data (pytrace/bpf/*.bpf.o), built by build.py, which
also writes pytrace/bpf/manifest.json: the package version and architecture
they were built for, and their names.  Before libbpf sees an object we check
that the manifest matches this package and machine, and that the object is
listed, there, readable, and a BPF ELF object of this byte order, so a broken
or mixed install gets one clear line instead of a libbpf or verifier error.
"""

from __future__ import annotations

import os
import sys

from . import jsonfile
from .errors import PytraceError

# Strings, not pathlib.Path: pathlib costs a tool ~3 ms of start-up.
BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "bpf")
# the kernel BTF the wheel carries for kernels that lack /sys/kernel/btf/vmlinux:
# <release>.btf, only the types every object's CO-RE relocations need (build.py)
SHIPPED_BTF_DIR = os.path.join(os.path.dirname(BPF_DIR), "btf")
KERNEL_BTF = "/sys/kernel/btf/vmlinux"
SRC_DIR = os.path.join(BPF_DIR, "src")
MANIFEST = os.path.join(BPF_DIR, "manifest.json")
EM_BPF = 247
ELFCLASS64 = 2
ELFDATA = {"little": 1, "big": 2}[sys.byteorder]  # BPF objects are built in the host's byte order
REINSTALL = "reinstall pytrace, or run python3 build.py in a source tree"

_manifest: dict | None = None

_btf_override: str | None = None


def manifest() -> dict:
    """The build manifest, checked once per process against this package and machine."""
    global _manifest
    if _manifest is not None:
        return _manifest
    from .. import __version__

    try:
        with open(MANIFEST) as fh:
            info = jsonfile.loads(fh.read())
    except FileNotFoundError:
        raise PytraceError(f"{MANIFEST} is missing: the BPF objects were not built for this install "
                           f"({REINSTALL})") from None
    except (OSError, ValueError) as exc:
        raise PytraceError(f"{MANIFEST} is unreadable ({exc}): {REINSTALL}") from None
    if not isinstance(info, dict) or info.get("package") != "pytrace":
        raise PytraceError(f"{MANIFEST} is not a pytrace build manifest: {REINSTALL}")
    if info.get("version") != __version__:
        raise PytraceError(f"the BPF objects in {BPF_DIR} were built for pytrace {info.get('version')}, "
                           f"this is pytrace {__version__}: {REINSTALL}")
    machine = os.uname().machine
    if info.get("arch") != machine:
        raise PytraceError(f"the BPF objects in {BPF_DIR} were built for {info.get('arch')}, "
                           f"this machine is {machine}: install the pytrace wheel for {machine}")
    _manifest = info
    return info


def core_roots() -> frozenset:
    """The root types, (name, BTF kind), of every CO-RE relocation of the
    shipped objects (build.py): what core/corebtf keeps of the kernel's BTF."""
    return frozenset(tuple(r) for r in manifest().get("core_roots", ()))


def path(name: str) -> str:
    """The checked file name of a tool's object.

    A name with a slash is the file name of an object from outside this
    install (the tests' own, built into tests/bpf/): checked the same way,
    except against the manifest, which lists the install's objects only."""
    if "/" in name:
        obj, built = name, None
    else:
        obj = os.path.join(BPF_DIR, f"{name}.bpf.o")
        built = manifest()
    try:
        with open(obj, "rb") as fh:
            head = fh.read(20)
    except FileNotFoundError:
        raise PytraceError(f"{obj} is missing: this install lacks the tool's BPF object ({REINSTALL})") from None
    except OSError as exc:
        raise PytraceError(f"{obj} is not readable: {exc.strerror}") from None
    if head[:4] != b"\x7fELF" or len(head) < 20:
        raise PytraceError(f"{obj} is not an ELF file (damaged install? {REINSTALL})")
    order = "little" if head[5] == 1 else "big"
    if head[4] != ELFCLASS64 or head[5] != ELFDATA or int.from_bytes(head[18:20], order) != EM_BPF:
        raise PytraceError(f"{obj} is not a 64-bit {sys.byteorder}-endian BPF object, as this machine needs "
                           f"(damaged install? {REINSTALL})")
    if built is not None and os.path.basename(obj) not in built.get("objects", ()):
        raise PytraceError(f"{obj} is not from this build (not in {os.path.basename(MANIFEST)}): {REINSTALL}")
    return obj


def source(name: str) -> str:
    """The C source an object was built from, followed by the local headers it includes."""
    parts: list[str] = []
    seen: set[str] = set()

    def add(fname: str) -> None:
        fpath = os.path.join(SRC_DIR, fname)
        if fname in seen or not os.path.exists(fpath):
            return
        seen.add(fname)
        with open(fpath) as fh:
            text = fh.read()
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


def kernel_has_btf() -> bool:
    """Whether the running kernel shows its BTF (an empty file there counts as none)."""
    try:
        return os.stat(KERNEL_BTF).st_size > 0
    except OSError:
        return False


def shipped_btf(release: str | None = None) -> str | None:
    """The BTF this install carries for a kernel release (the running one by default), if any."""
    path = os.path.join(SHIPPED_BTF_DIR, f"{release or os.uname().release}.btf")
    return path if os.path.isfile(path) else None


def custom_btf() -> str | None:
    """The kernel BTF to relocate against, when not the kernel's own: --btf or
    PYTRACE_BTF (checked: raw BTF or an ELF file), else, where the kernel shows
    none, the one this install carries for its release; None when the
    kernel's own is used."""
    p = _btf_override or os.environ.get("PYTRACE_BTF")
    if p:
        origin = '--btf' if _btf_override else 'PYTRACE_BTF'
        if not os.path.isfile(p):
            raise PytraceError(f"BTF file {p} (from {origin}) does not exist")
        try:
            with open(p, "rb") as fh:
                head = fh.read(4)
        except OSError as exc:
            raise PytraceError(f"BTF file {p} (from {origin}): {exc.strerror}") from None
        if head[:2] not in (b"\x9f\xeb", b"\xeb\x9f") and head != b"\x7fELF":    # as cliutil.btf_file
            raise PytraceError(f"{p} (from {origin}) is not a BTF file (raw BTF, or ELF with a .BTF section)")
        return p
    if kernel_has_btf():
        return None
    return shipped_btf()


def check_kernel_btf() -> None:
    if custom_btf() is None and not kernel_has_btf():
        carried = sorted(f[:-4] for f in os.listdir(SHIPPED_BTF_DIR)) if os.path.isdir(SHIPPED_BTF_DIR) else []
        raise PytraceError(f"this kernel ({os.uname().release}) has no BTF in {KERNEL_BTF} (CONFIG_DEBUG_INFO_BTF) "
                           f"and pytrace carries none for it (it has {', '.join(carried) or 'none'}): "
                           "give one with --btf FILE or PYTRACE_BTF (e.g. from BTFHub)")
