"""tcppktlat: how long received TCP data waits in the socket before a thread reads it.

Library:

    from pytrace.tools.tcppktlat import TcpPktLat
    with TcpPktLat(lport=8080, min_us=1000) as tracer:
        for ev in tracer.events(duration=10):            # PacketLatency
            print(ev.pid, ev.tid, ev.comm, ev.raddr, ev.rport, ev.ms)

A socket's clock starts when a segment with payload arrives while none of
its data is pending, and stops when a thread copies data out of it
(recvmsg(), read(), splice): one event per read that found waiting data,
with the time the oldest of that data waited, and the reader's PID, TID and
name.  A reader that keeps up shows microseconds; one that is busy,
descheduled or stuck behind a lock shows how long its peer's data sat in
the kernel.  (libbpf-tools' tcppktlat restarts the clock at every segment,
which measures the newest data instead.)
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, bad_value, port, process_id
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from typing import Any

# The C struct is src/bpf/tcppktlat.bpf.c's; build.py generates PacketLatency
# from its BTF (pytrace/gen/tcppktlat.py).  Only renames and conversions here.
PKTLAT_EVENT = EventType("PacketLatency", struct="tcppktlat_event",
                         doc="One read of a TCP socket that found data waiting, and how long the oldest waited.",
                         fields="""
    ts_ns                       # CLOCK_MONOTONIC of the read
    pid                         # the reading process
    tid                         # the reading thread
    comm: text
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport <- sport
    raddr <- daddr: address
    rport <- dport
    latency_ns                  # arrival of the oldest unread segment -> the read
    ms <- latency_ns: ns_to_ms  # the same, in milliseconds
    cgroup_id                   # the reader's cgroup id (0 unless labels=True)
    netns                       # the socket's network namespace inode (0 unless labels=True)
    -pad
""")

MAX_MIN_US = 3_600_000_000     # an hour: a threshold past it can only hide everything


class TcpPktLat(EventTracer):
    OBJECT = "tcppktlat"
    SCOPE = TASK_SCOPE | LABELS
    EVENT_TYPE = PKTLAT_EVENT
    VARIANTS = (
        Variant("tp_btf", ("tcppktlat_tp_btf_segment", "tcppktlat_tp_btf_read", "tcppktlat_tp_btf_destroy")),
        Variant("raw_tp", ("tcppktlat_raw_tp_segment", "tcppktlat_raw_tp_read", "tcppktlat_raw_tp_destroy")),
        Variant("tracepoint", ("tcppktlat_tracepoint_segment", "tcppktlat_tracepoint_read",
                               "tcppktlat_tracepoint_destroy")),
        Variant("kprobe", ("tcppktlat_kprobe_segment", "tcppktlat_kprobe_read", "tcppktlat_kprobe_destroy")),
    )

    def __init__(self, *, pid: int = 0, tid: int = 0, lport: int = 0, rport: int = 0, family: int = 0,
                 min_us: int = 0, **kw: Any):  # kw: EventTracer's
        super().__init__(**kw)
        if not 0 <= min_us <= MAX_MIN_US:
            raise ValueError(f"min_us must be 0 to {MAX_MIN_US}")
        for name, value in (("lport", lport), ("rport", rport)):
            if not 0 <= value < 65536:
                raise ValueError(f"{name} must be a port number (0: any)")
        self.pid, self.tid, self.lport, self.rport = pid, tid, lport, rport
        self.family, self.min_us = family, min_us

    def rodata(self) -> dict[str, Any]:
        return {"target_pid": self.pid, "target_tid": self.tid,
                "target_lport": self.lport, "target_rport": self.rport,
                "target_family": self.family, "min_ns": self.min_us * 1000}


__getattr__ = public_classes(__name__, PacketLatency=PKTLAT_EVENT)


def min_latency_us(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise bad_value(f"'{text[:40]}' is not a whole number of microseconds") from None
    if not 0 <= value <= MAX_MIN_US:
        raise bad_value(f"'{text}' must be 0 to {MAX_MIN_US} microseconds")
    return value


min_latency_us.range_text = f"0-{MAX_MIN_US}"   # type: ignore[attr-defined]


def _address_width(args: Any) -> int:
    return 39 if (args.wide or args.ipv6) else 15


SPEC = ToolSpec(
    "tcppktlat", "how long received TCP data waits before a thread reads it", TcpPktLat, EVENTS,
    description=("Trace the latency between a TCP segment's arrival and a thread reading its data: "
                 "per read that found data waiting, the time the oldest of it waited, with the "
                 f"reading process and thread. {LATENCY_NOTE}"),
    event=PKTLAT_EVENT,
    options=(
        Option("-T", "--timestamp", action="store_true", help="include a HH:MM:SS column"),
        pid("only reads by this process"),
        Option("-t", "--tid", type=process_id, default=0, kw="tid", help="only reads by this thread"),
        Option("-l", "--lport", type=port, default=0, kw="lport", help="only this local port"),
        Option("-r", "--rport", type=port, default=0, kw="rport", help="only this remote port"),
        Option("-w", "--wide", action="store_true", help="wide columns (IPv6 addresses)"),
        family(),
        Option("min_us", nargs="?", type=min_latency_us, default=0, metavar="min_us", kw="min_us",
               help="only latencies of at least this many microseconds (default 0)"),
    ),
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="timestamp"),
        Column("PID", "pid", width=7),
        Column("TID", "tid", width=7),
        Column("COMM", "comm", width=16),
        Column("LADDR", "laddr", width=_address_width),
        Column("LPORT", "lport", width=5),
        Column("RADDR", "raddr", width=_address_width),
        Column("RPORT", "rport", width=5),
        Column("MS", "ms"),
    ),
    examples=(
        ("pytrace tcppktlat", "every read of a TCP socket that found data waiting"),
        ("pytrace tcppktlat 1000", "only data that waited 1 ms or more"),
        ("pytrace tcppktlat -p 181", "only reads by PID 181"),
        ("pytrace tcppktlat -t 182", "only reads by thread 182"),
        ("pytrace tcppktlat -l 80", "only sockets with local port 80"),
        ("pytrace tcppktlat -r 5432 -T", "only sockets to remote port 5432, with a time column"),
        ("pytrace tcppktlat -6 -w", "IPv6 only, wide address columns"),
        ("pytrace tcppktlat --json", "one JSON object per read"),
    ),
)
