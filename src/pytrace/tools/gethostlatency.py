"""gethostlatency: latency of host name lookups through libc, by process.

Library:

    from pytrace.tools.gethostlatency import GetHostLatency
    with GetHostLatency() as t:                 # libc found automatically
        for q in t.events(duration=10):         # HostLookup
            print(q.pid, q.comm, q.function, q.host, q.latency_ms)

getaddrinfo(), gethostbyname() and gethostbyname2() are timed from entry to
return with uprobes on the C library: by default the one this process runs
with (its mapping in /proc/self/maps, else `ldconfig -p`), or, with a pid,
the one that process runs with (through /proc/PID/root, so containers
work); libc="/path/to/libc.so.6" overrides.  Lookups that do not go
through that libc (static binaries, musl programs when glibc is probed, Go's
own resolver) are not seen.
"""

from __future__ import annotations

import ctypes as C
import errno
import os
import subprocess
from typing import Any

from ..core import convert, libbpf, privileges
from ..core.bpfobject import BpfObject
from ..cli.cliutil import LATENCY_NOTE, elf_file
from ..core.errors import PytraceError, UsageError
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, pid, public_classes

NAME = "gethostlatency"

FUNCTIONS = ("getaddrinfo", "gethostbyname", "gethostbyname2")    # index = the record's func
REQUIRED = "getaddrinfo"


def _libc_in_maps(pid: int | str) -> str | None:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                path = line.split(maxsplit=5)[5].strip() if len(line.split(maxsplit=5)) == 6 else ""
                name = os.path.basename(path)
                if name.startswith("libc.so") or (name.startswith("libc-") and name.endswith(".so")):
                    return path
    except OSError:
        pass
    return None


def _libc_from_ldconfig() -> str | None:
    """libc.so.6 from the loader cache: the native (x86-64) one if listed, else the first."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = []
    for line in out.splitlines():
        name, sep, path = line.strip().partition(" => ")
        if sep and name.startswith("libc.so.6 "):
            found.append((("x86-64" in name) or ("64" in name), path.strip()))
    found.sort(key=lambda f: not f[0])
    return found[0][1] if found else None


def find_libc(pid: int = 0) -> str:
    """The C library to probe: the target process's (through its root), else ours, else ldconfig's."""
    if pid:
        if not os.path.exists(f"/proc/{pid}"):
            raise UsageError(f"-p {pid}: no such process")
        path = _libc_in_maps(pid)
        if path:
            return f"/proc/{pid}/root{path}"
    path = _libc_in_maps("self") or _libc_from_ldconfig()
    if not path:
        raise PytraceError("cannot find the C library (not in /proc/self/maps nor ldconfig -p): use --libc PATH")
    return path


def function_value(raw: int) -> str:
    """getaddrinfo, gethostbyname or gethostbyname2."""
    return FUNCTIONS[raw] if raw < len(FUNCTIONS) else str(raw)


convert.register(convert.Conversion("libc_lookup", function_value, None, convert.text_parse, kind="str"))

# struct gethostlatency_event of src/bpf/gethostlatency.bpf.c; build.py generates HostLookup from its BTF
LOOKUP_EVENT = EventType("HostLookup", struct="gethostlatency_event", doc="One host name lookup through libc.",
                         fields="""
    ts_ns                       # CLOCK_MONOTONIC of the return
    pid
    tid
    comm: text
    function <- func: libc_lookup   # getaddrinfo, gethostbyname or gethostbyname2
    host: text                  # the name asked for
    latency_ns
    latency_ms <- latency_ns: ns_to_ms
    ret                         # getaddrinfo: 0 or EAI_*; gethostbyname[2]: 0 found, -1 not found (NULL)
""")


class GetHostLatency(EventTracer):
    OBJECT = "gethostlatency"
    EVENT_TYPE = LOOKUP_EVENT
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (Variant("uprobe", (*(f"gethostlatency_entry_{f}" for f in FUNCTIONS), "gethostlatency_return")),)

    def __init__(self, *, pid: int = 0, libc: str | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid = pid
        if libc is not None and not os.path.isfile(libc):
            raise UsageError(f"--libc {libc}: no such file")
        self.libc = libc

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid}

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        lb = libbpf.lib()
        path = self.libc or find_libc(self.pid)
        self.libc_path = path
        attached = []
        for func in FUNCTIONS:
            try:
                for prog, ret in ((f"gethostlatency_entry_{func}", False), ("gethostlatency_return", True)):
                    opts = libbpf.UprobeOpts(sz=C.sizeof(libbpf.UprobeOpts), retprobe=ret, func_name=func.encode())
                    link = lb.bpf_program__attach_uprobe_opts(obj.program(prog), self.pid or -1, path.encode(),
                                                              0, C.byref(opts))
                    obj.keep_link(libbpf.check_ptr(link, f"uprobe {path}:{func}"))
                attached.append(func)
            except OSError as exc:
                if func != REQUIRED:
                    continue
                if exc.errno in (errno.EPERM, errno.EACCES):
                    # CAP_BPF and CAP_PERFMON do not make uprobes here: not libc's fault
                    privileges.require_sys_admin(NAME, "attaching uprobes")
                    raise PytraceError(f"cannot probe {func} in {path}: {exc.strerror}") from None
                raise PytraceError(f"cannot probe {func} in {path}: {exc.strerror} "
                                   "(not a glibc-like C library? use --libc PATH)") from None
        self.functions = tuple(attached)

__getattr__ = public_classes(__name__, HostLookup=LOOKUP_EVENT)


SPEC = ToolSpec(
    "gethostlatency", "latency of getaddrinfo/gethostbyname[2] calls, by process (uprobes on libc)",
    GetHostLatency, EVENTS,
    description=("Show latency for getaddrinfo/gethostbyname[2] calls, with uprobes on the C library "
                 "(found automatically; --libc to choose). " + LATENCY_NOTE),
    event=LOOKUP_EVENT,
    options=(
        pid(help="trace this PID only (and probe its libc)"),
        Option("-l", "--libc", metavar="LIBC", type=elf_file, kw="libc", help="the libc.so to probe"),
    ),
    # BCC's "%-9s %-7d %-16s %10.2f %s"
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms"),
        Column("PID", "pid", width=7),
        Column("COMM", "comm", width=16),
        Column("LATms", "latency_ms", width=10, align=">", form="ns_to_ms2"),
        Column("HOST", "host"),
    ),
    examples=(
        ("pytrace gethostlatency", "time getaddrinfo/gethostbyname[2]"),
        ("pytrace gethostlatency -p 181", "only trace PID 181"),
        ("pytrace gethostlatency -l /lib/x86_64-linux-gnu/libc.so.6", "probe this C library"),
    ),
)
