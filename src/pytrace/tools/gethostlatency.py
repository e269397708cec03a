"""gethostlatency: latency of host name lookups through libc, by process.

Library:

    from pytrace.tools.gethostlatency import GetHostLatency
    with GetHostLatency() as t:                 # libc found automatically
        for q in t.events(duration=10):
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
from dataclasses import dataclass
from typing import Any

from ..core import libbpf, privileges
from ..core.bpfobject import BpfObject
from ..core.cliutil import (Clock, LATENCY_NOTE, Output, add_common, add_container_args, container_filters, elf_file,
                            json_renderer, process_id, stream_events)
from ..core.containers import Labels
from ..core.errors import PytraceError, UsageError
from ..core.loader import Variant
from ..core.net import comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "gethostlatency"
SUMMARY = "latency of getaddrinfo/gethostbyname[2] calls, by process (uprobes on libc)"

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


@dataclass(frozen=True, slots=True)
class HostLookup:
    ts_ns: int                 # CLOCK_MONOTONIC of the return
    pid: int
    tid: int
    comm: str
    function: str              # getaddrinfo, gethostbyname or gethostbyname2
    host: str                  # the name asked for
    latency_ns: int
    ret: int                   # getaddrinfo's result (0 or EAI_*); low 32 bits of a pointer for the others
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    @property
    def latency_ms(self) -> float:
        return self.latency_ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "tid": self.tid, "comm": self.comm,
                "function": self.function, "host": self.host, "latency_ms": round(self.latency_ns / 1e6, 3),
                "ret": self.ret,
                **(self.labels.to_dict() if self.labels else {})}


class GetHostLatency(EventTracer):
    OBJECT = "gethostlatency"
    EVENT = "gethostlatency_event"
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

    def make_event(self, raw: tuple) -> HostLookup:
        i = self.idx
        func = raw[i["func"]]
        return HostLookup(raw[i["ts_ns"]], raw[i["pid"]], raw[i["tid"]], comm_text(raw[i["comm"]]),
                          FUNCTIONS[func] if func < len(FUNCTIONS) else str(func), comm_text(raw[i["host"]]),
                          raw[i["latency_ns"]], raw[i["ret"]], *self.owner(raw))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Show latency for getaddrinfo/gethostbyname[2] calls, with uprobes on the C library "
                     "(found automatically; --libc to choose). " + LATENCY_NOTE)
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process (and probe its libc)")
    p.add_argument("-l", "--libc", metavar="LIBC", type=elf_file, help="the libc.so to probe")
    add_container_args(p, GetHostLatency)
    add_common(p, [v.hook for v in GetHostLatency.VARIANTS])


def run(args: argparse.Namespace) -> int:
    if args.libc is not None and not os.path.isfile(args.libc):
        raise UsageError(f"--libc {args.libc}: no such file")
    if args.pid and not os.path.exists(f"/proc/{args.pid}"):
        raise UsageError(f"-p {args.pid}: no such process")
    tracer = GetHostLatency(pid=args.pid, libc=args.libc, hook=args.hook, **container_filters(args))
    out = Output(args.json)
    with tracer:
        return stream_events(tracer, out, renderer(tracer, args, out))


def renderer(source: GetHostLatency, args: argparse.Namespace, out: Output):
    """libbpf-tools' columns: TIME PID COMM LATms HOST."""
    if args.json:
        return json_renderer(source)
    out.write(f"{'TIME':<8} {'PID':<7} {'COMM':<16} {'LATms':<10} {'HOST'}\n")
    i = source.idx
    clock = Clock()

    def render(batch: list[tuple]) -> str:
        return "".join(f"{clock.hms(r[i['ts_ns']]):<8} {r[i['pid']]:<7} {comm_text(r[i['comm']]):<16} "
                       f"{r[i['latency_ns']] / 1e6:<10.3f} {comm_text(r[i['host']])}\n" for r in batch)
    return render
