"""sockrmem: socket receive buffer fill, and receive queues found full.

Library:

    from pytrace.tools.sockrmem import SockRmem
    with SockRmem() as t:
        for ev in t.events(duration=10):       # RmemEvent: a queue full or a memory limit hit
            print(ev.probe, ev.rmem_alloc, ev.rcvbuf)
        alloc, limit = t.histograms()          # Log2Histogram of sk_rmem_alloc and sk_rcvbuf, bytes

The histograms sample every socket receive as it starts: bytes queued on the
socket (rmem_alloc, skb truesize included) and its limit (rcvbuf).  Where
kprobes are missing the receive system calls are sampled instead of
sock_recvmsg(), so in-kernel socket users are not.  "queue full" fires for
protocols that queue through __sock_queue_rcv_skb (ping, raw...): UDP and
TCP count their drops in nstat (UdpRcvbufErrors, TcpExtTCPRcvQDrop).
"""

from __future__ import annotations

import struct

from ..core import convert
from ..cli.aggregate import timestamp_line
from ..cli.cliutil import LATENCY_NOTE
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.socklayer import HIST_SLOTS, attach_with_tracefs
from ..core.stream import EventTracer
from ..core.tracer import TASK_SCOPE
from ..spec import EVENTS as STREAM, EventType, ToolSpec, interval_flags, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EVENTS = ("tracepoint:sock:sock_rcvqueue_full", "tracepoint:sock:sock_exceed_buf_limit")   # an event's probe
_EVENT_PROGS = ("sockrmem_rcvqueue_full", "sockrmem_exceed_buf_limit")


def probe_value(v: int) -> str:
    return EVENTS[v] if v < len(EVENTS) else str(v)


def mem_kind_value(v: int) -> str:
    return "recv" if v else "send"


convert.register(convert.Conversion("sockrmem_probe", probe_value, None, convert.text_parse, kind="str"))
convert.register(convert.Conversion("sockrmem_mem_kind", mem_kind_value, None, convert.text_parse, kind="str"))

# struct sockrmem_event of src/bpf/sockrmem.bpf.c; build.py generates RmemEvent
SOCKRMEM_EVENT = EventType("RmemEvent", struct="sockrmem_event", doc="A receive queue found full, or a protocol "
                           "memory limit exceeded.", fields="""
    ts_ns
    probe <- kind: sockrmem_probe   # the tracepoint (EVENTS)
    pid                             # the current task (often not the socket's owner: softirq)
    comm: text
    rmem_alloc
    rcvbuf                          # queue full: the socket's limit
    truesize                        # queue full: the skb that did not fit
    allocated                       # limit exceeded: the protocol's pages in use
    sysctl_rmem                     # limit exceeded
    proto: text                     # limit exceeded: the protocol (TCP, UDP...)
    mem_kind: sockrmem_mem_kind     # limit exceeded: send or recv
    -pad
""")


class SockRmem(EventTracer):
    OBJECT = "sockrmem"
    SCOPE = TASK_SCOPE
    EVENT_TYPE = SOCKRMEM_EVENT
    VARIANTS = (
        Variant("kprobe", ("sockrmem_kprobe", *_EVENT_PROGS)),
        Variant("tracepoint", tuple(f"sockrmem_{c}" for c in ("read", "readv", "recvfrom", "recvmsg",
                                                              "recvmmsg")) + _EVENT_PROGS),
    )

    def __init__(self, *, pid: int = 0, **kw: Any):
        super().__init__(**kw)
        self.pid = pid

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid}

    attach = staticmethod(attach_with_tracefs)

    def setup(self) -> None:
        super().setup()
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> tuple[Log2Histogram, Log2Histogram]:
        """(rmem_alloc, rcvbuf) histograms in bytes, over every receive sampled."""
        out = []
        for k in (0, 1):
            key = struct.pack("<I", k)
            raw = self._hists.lookup(key)
            if raw is None:
                out.append(Log2Histogram((0,) * HIST_SLOTS, "bytes", 0, 0))
                continue
            vals = struct.unpack_from(f"<{HIST_SLOTS + 2}Q", raw)
            out.append(Log2Histogram(tuple(vals[:HIST_SLOTS]), "bytes", vals[HIST_SLOTS], vals[HIST_SLOTS + 1]))
            if clear:
                self._hists.delete(key)
        return out[0], out[1]


__getattr__ = public_classes(__name__, RmemEvent=SOCKRMEM_EVENT)


# -- output: events as they come, histograms per interval ------------------------------

def event_text(source: Any, args: Any, out: Any):
    """A line per event, saying why (rare events: decoded, not compiled)."""
    def line(e: Any) -> str:
        if e.probe == EVENTS[0]:
            return f"{e.probe} rmem_alloc {e.rmem_alloc} > rcvbuf {e.rcvbuf}, skb size {e.truesize}\n"
        return f"{e.probe} rmem_alloc {e.rmem_alloc}, allocated {e.allocated} ({e.proto})\n"

    def render(batch: list[tuple]) -> str:
        decode = source.decoder()
        return "".join(line(decode(r)) for r in batch)
    return render


def interval_text(snap: Any, args: Any) -> str:
    hists = {s.label("name"): s.hist for s in snap.series}
    return (f"{timestamp_line(snap, args)}@rmem_alloc:\n{hists['rmem_alloc'].render()}\n"
            f"@rmem_limit:\n{hists['rmem_limit'].render()}\n")


def read(tracer: SockRmem, args: Any) -> dict:
    alloc, limit = tracer.histograms(clear=bool(args.interval))
    return {"rmem_alloc": alloc, "rmem_limit": limit}


SPEC = ToolSpec(
    "sockrmem", "socket receive buffer fill histograms, and full receive queues", SockRmem, STREAM,
    description=("Summarize socket receive buffer fill (rmem_alloc) and limit (rcvbuf) at each receive "
                 "as histograms, printed at Ctrl-C or every interval, and print full receive queues "
                 f"and exceeded protocol memory limits as they happen. {LATENCY_NOTE}"),
    event=SOCKRMEM_EVENT,
    options=(
        pid("histograms of this process only"),
        *interval_flags(),
        timestamp(),
    ),
    text=event_text,
    read=read, labels=("name",), interval_text=interval_text,
    intro="Tracing socket receive buffer size. Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace sockrmem", "full queues as they happen, histograms at Ctrl-C"),
        ("pytrace sockrmem -i 1 -T", "histograms every second, with the time"),
        ("pytrace sockrmem -p 181 -d 30", "process 181's receives, for 30 seconds"),
        ("pytrace sockrmem --json", "one JSON object per event and per histogram"),
    ),
)
