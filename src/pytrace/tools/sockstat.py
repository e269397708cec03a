"""sockstat: counts of socket system calls and socket sends/receives per interval.

Library:

    from pytrace.tools.sockstat import SockStat
    with SockStat(pid=1234) as s:
        time.sleep(1)
        snap = s.snapshot(clear=True)     # SockStatSnapshot
        print(snap.counts["connect"], snap.probes["send"])

The syscalls (socket, socketpair, bind, connect, accept, accept4) are counted
at their sys_enter tracepoints, so a call is counted whether it succeeds or
not.  send/recv count calls through sock_sendmsg()/sock_recvmsg() (every
socket send and receive system call, plus kernel users of sockets; with
kprobes, those of IP and Unix sockets).
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from ..core.aggregate import local_time, print_loop
from ..core.bpfobject import ncpus_possible
from ..core.cliutil import add_common, add_container_args, container_filters, intervals, process_id, seconds
from ..core.loader import Variant
from ..core.socklayer import SOCK_OPS_IO, attach_with_tracefs, percpu_u64
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "sockstat"
SUMMARY = "socket syscall and send/recv counts per interval"

COUNTERS = ("socket", "socketpair", "bind", "connect", "accept", "accept4", "send", "recv")
_SYSCALLS = tuple(f"sockstat_{c}" for c in COUNTERS[:6])
_PROBES = {c: f"tracepoint:syscalls:sys_enter_{c}" for c in COUNTERS[:6]}
_SENDRECV = {
    "tp_btf": ("tp_btf:sock:sock_send_length", "tp_btf:sock:sock_recv_length"),
    "tracepoint": ("tracepoint:sock:sock_send_length", "tracepoint:sock:sock_recv_length"),
    # the family operations sock_sendmsg()/sock_recvmsg() call (socklayer.h, SOCK_OPS_IO)
    "kprobe": ("kprobe:" + "+".join(op for op in SOCK_OPS_IO if "send" in op),
               "kprobe:" + "+".join(op for op in SOCK_OPS_IO if "recv" in op)),
}


@dataclass(frozen=True, slots=True)
class SockStatSnapshot:
    ts: float                     # time.time() when read
    counts: dict[str, int]        # counter -> calls (socket, bind, ..., send, recv)
    probes: dict[str, str]        # counter -> the probe that counted it

    def to_dict(self) -> dict[str, Any]:
        return {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.ts)), **self.counts}


class SockStat(Tracer):
    OBJECT = "sockstat"
    SCOPE = TASK_SCOPE
    VARIANTS = (
        Variant("tp_btf", (*_SYSCALLS, "sockstat_tp_btf_send", "sockstat_tp_btf_recv"),
                needs="tracepoints sock_send/recv_length"),
        Variant("tracepoint", (*_SYSCALLS, "sockstat_tp_send", "sockstat_tp_recv"),
                needs="tracepoints sock_send/recv_length"),
        Variant("kprobe", (*_SYSCALLS, *(f"sockstat_kprobe_{op}" for op in SOCK_OPS_IO)), note="IP and Unix sockets"),
    )

    def __init__(self, *, pid: int = 0, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid = pid

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid}

    attach = staticmethod(attach_with_tracefs)

    def setup(self) -> None:
        self._counters = self.obj.map("counters")
        send, recv = _SENDRECV[self.obj.variant.hook]
        self.probes = {**_PROBES, "send": send, "recv": recv}

    def snapshot(self, clear: bool = False) -> SockStatSnapshot:
        counts = {}
        for i, name in enumerate(COUNTERS):
            key = struct.pack("<I", i)
            counts[name] = percpu_u64(self._counters, key)
        if clear:
            zero = bytes(8 * ncpus_possible())
            for i in range(len(COUNTERS)):
                self._counters.update(struct.pack("<I", i), zero)
        return SockStatSnapshot(time.time(), counts, dict(self.probes))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Count socket system calls and socket sends/receives, printed every interval."
    p.add_argument("-i", "--interval", type=seconds, default=1, metavar="SEC",
                   help="print every SEC seconds (default 1)")
    p.add_argument("-c", "--count", type=intervals, metavar="N", help="stop after N intervals")
    p.add_argument("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    p.add_argument("-z", "--zeros", action="store_true", help="also print counters that are 0")
    add_container_args(p, SockStat)
    add_common(p, [v.hook for v in SockStat.VARIANTS])


# -- snapshots: what the sinks get each interval, and what replay renders -------

def snapshot(snap: SockStatSnapshot, interval: int) -> Snapshot:
    return Snapshot.now(NAME, [Series.of({"counter": name, "probe": snap.probes[name]}, {"count": snap.counts[name]})
                               for name in COUNTERS], interval)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else (f"Tracing sock statistics. Output every {args.interval} second"
                                 f"{'s' if args.interval != 1 else ''}.\n")


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    rows = [(s.label("counter"), s.label("probe"), dict(s.values)["count"]) for s in snap.series]
    if args.json:
        return json.dumps({"ts": local_time(snap, "%Y-%m-%dT%H:%M:%S"), **{c: n for c, _, n in rows}}) + "\n"
    lines = [local_time(snap)]
    lines += [f"@[{probe}]: {n}" for _, probe, n in rows if n or args.zeros]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    with SockStat(pid=args.pid, hook=args.hook, **container_filters(args)) as tracer:
        return print_loop(args, lambda: snapshot(tracer.snapshot(clear=True), args.interval), render_snapshot, intro)
