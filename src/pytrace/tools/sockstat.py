"""sockstat: counts of socket system calls and socket sends/receives per interval.

Library:

    from pytrace.tools.sockstat import SockStat
    with SockStat(pid=1234) as s:
        time.sleep(1)
        counts = s.counts(clear=True)     # {"socket": 3, "connect": 1, ..., "send": 10}
        print(counts["connect"], s.probes["send"])

The syscalls (socket, socketpair, bind, connect, accept, accept4) are counted
at their sys_enter tracepoints, so a call is counted whether it succeeds or
not.  send/recv count calls through sock_sendmsg()/sock_recvmsg() (every
socket send and receive system call, plus kernel users of sockets; with
kprobes, those of IP and Unix sockets).
"""

from __future__ import annotations

import struct

from ..core import convert
from ..cli.aggregate import local_time
from ..core.bpfobject import ncpus_possible
from ..core.loader import Variant
from ..core.socklayer import SOCK_OPS_IO, attach_with_tracefs, percpu_u64
from ..core.tracer import TASK_SCOPE, Tracer
from ..spec import TABLE, EventType, Option, ToolSpec, interval_flags, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def counter_value(v: int) -> str:
    return COUNTERS[v] if v < len(COUNTERS) else str(v)


convert.register(convert.Conversion("sockstat_counter", counter_value, None, convert.text_parse, kind="str"))

# A row of the counters map (a per-CPU array: index -> u64), summed over the CPUs
SOCKSTAT_COUNT = EventType("SockStatCount", map="counters", doc="How often one kind of call was made.", fields="""
    counter <- key: sockstat_counter    # socket, socketpair, bind, connect, accept, accept4, send, recv
    count <- value
""")


def probes_of(hook: str) -> dict[str, str]:
    """counter -> the probe that counts it, for a variant."""
    send, recv = _SENDRECV[hook]
    return {**_PROBES, "send": send, "recv": recv}


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
        self.probes = probes_of(self.obj.variant.hook)

    def rows(self, clear: bool = False) -> list:
        """A SockStatCount per counter, in COUNTERS order (0s included)."""
        decode = SOCKSTAT_COUNT.cls.decoder(("key", "value"))
        out = []
        for i in range(len(COUNTERS)):
            key = struct.pack("<I", i)
            out.append(decode((i, percpu_u64(self._counters, key))))
        if clear:
            zero = bytes(8 * ncpus_possible())
            for i in range(len(COUNTERS)):
                self._counters.update(struct.pack("<I", i), zero)
        return out

    def counts(self, clear: bool = False) -> dict[str, int]:
        """{counter: calls} since the start (or the last clear)."""
        return {r.counter: r.count for r in self.rows(clear)}


__getattr__ = public_classes(__name__, SockStatCount=SOCKSTAT_COUNT)


def hook_index(tracer: SockStat) -> dict[str, int]:
    """The variant, as a number a snapshot keeps (the text names its probes)."""
    return {"variant": [v.hook for v in SockStat.VARIANTS].index(tracer.obj.variant.hook)}


def text(snap: Any, args: Any) -> str:
    """bpftrace's map print: @[probe]: count (0s only with -z), after the time."""
    probes = probes_of(SockStat.VARIANTS[int(snap.value("variant", 0))].hook)
    lines = [local_time(snap)]
    lines += [f"@[{probes[r.counter]}]: {r.count}" for r in SPEC.rows(snap) if r.count or args.zeros]
    return "\n".join(lines) + "\n"


def intro(args: Any) -> str:
    return f"Tracing sock statistics. Output every {args.interval} second{'s' if args.interval != 1 else ''}.\n"


_EVERY, _COUNT, _DURATION = interval_flags()

SPEC = ToolSpec(
    "sockstat", "socket syscall and send/recv counts per interval", SockStat, TABLE,
    description="Count socket system calls and socket sends/receives, printed every interval.",
    event=SOCKSTAT_COUNT,
    labels=("counter",), values=("count",),
    options=(
        _EVERY.but(default=1, help="print (and reset) every SEC seconds (default 1)"), _COUNT, _DURATION,
        pid("only this process"),
        Option("-z", "--zeros", action="store_true", help="also print counters that are 0"),
    ),
    read=lambda tracer, args: tracer.rows(clear=bool(args.interval)),
    extra=lambda tracer, args: hook_index(tracer),
    text=text, intro=intro,
    examples=(
        ("pytrace sockstat", "every second, the calls made since the last"),
        ("pytrace sockstat -i 5 -c 12 -z", "every 5 seconds for a minute, 0s included"),
        ("pytrace sockstat -p 181", "only process 181"),
        ("pytrace sockstat --json", "one JSON object per counter and interval"),
    ),
)
