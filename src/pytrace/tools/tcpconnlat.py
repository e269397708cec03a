"""tcpconnlat: latency of active TCP connects, from connect() to the answer to its SYN.

Library:

    from pytrace.tools.tcpconnlat import TcpConnLat
    with TcpConnLat(min_ms=1.0) as tracer:
        for c in tracer.events(duration=10):            # ConnectLatency
            print(c.pid, c.comm, c.raddr, c.rport, c.ms, "refused" if c.error else "")

The clock starts in connect() (tcp_v4/v6_connect, or its CLOSE->SYN_SENT
state change where kprobes are missing) and stops at the answer to the SYN,
as in BCC: the handshake completing (the socket becomes ESTABLISHED), or a
RST refusing it (error is then ECONNREFUSED).  Connects that get no answer
(timed out, an ICMP error, abandoned) have no latency to show.
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, bad_value
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family, pid, print_program, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct tcpconnlat_event of src/bpf/tcpconnlat.bpf.c; build.py generates ConnectLatency from its BTF
CONNLAT_EVENT = EventType("ConnectLatency", struct="tcpconnlat_event",
                          doc="One active TCP connect and the time its SYN took to be answered.", fields="""
    ts_ns                       # CLOCK_MONOTONIC of the answer (SYN-ACK or RST)
    pid                         # the process that called connect()
    comm: text
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport <- sport
    raddr <- daddr: address
    rport <- dport
    delta_ns                    # connect() to the answer
    ms <- delta_ns: ns_to_ms    # the same, in milliseconds
    error                       # 0, or ECONNREFUSED (111): the answer was a RST
    -pad
""")


class TcpConnLat(EventTracer):
    OBJECT = "tcpconnlat"
    EVENT_TYPE = CONNLAT_EVENT
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("fentry", ("tcpconnlat_fentry_v4", "tcpconnlat_fentry_v6", "tcpconnlat_tp_btf_end")),
        Variant("kprobe", ("tcpconnlat_kprobe_v4", "tcpconnlat_kprobe_v6", "tcpconnlat_raw_tp_end")),
        Variant("tp_btf", ("tcpconnlat_tp_btf",)),
        Variant("tracepoint", ("tcpconnlat_tracepoint",)),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, min_ms: float = 0.0, **kw: Any):
        super().__init__(**kw)
        if min_ms < 0:
            raise ValueError("min_ms must not be negative")
        self.pid, self.family, self.min_ms = pid, family, min_ms

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid, "target_family": self.family,
                "min_ns": int(round(self.min_ms * 1_000_000))}


__getattr__ = public_classes(__name__, ConnectLatency=CONNLAT_EVENT)


def min_latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad_value(f"'{text}' is not a number of milliseconds") from None
    if not value >= 0 or value == float("inf"):
        raise bad_value(f"'{text}' must be a positive number of milliseconds")
    return value


SPEC = ToolSpec(
    "tcpconnlat", "latency of TCP connects (connect() to the SYN's answer: SYN-ACK or RST)", TcpConnLat, EVENTS,
    description=("Trace TCP connects and show connection latency: from connect() to the answer to the SYN, "
                 "the handshake completing or a RST refusing it (refused connects are shown, as in BCC; "
                 f"--json says which: error 111). {LATENCY_NOTE}"),
    event=CONNLAT_EVENT,
    options=(
        Option("-t", "--timestamp", action="store_true", help="include a timestamp column (since the first event)"),
        pid(),
        Option("-L", "--lport", action="store_true", help="include a LPORT column"),
        family(),
        print_program("-v", "--verbose", help="print the resulting BPF program, for debugging purposes"),
        Option("min_ms", nargs="?", type=min_latency, default=0.0, metavar="min_ms", kw="min_ms",
               help="minimum duration to trace, in ms (default 0; fractions allowed)"),
    ),
    # BCC's "%-9.3f", then "%-7d %-12.12s %-2d %-16s [%-6d] %-16s %-5d %.2f"
    columns=(
        Column("TIME(s)", "ts_ns", width=8, form="since_first", precision=".3", when="timestamp"),
        Column("PID", "pid", width=7),
        Column("COMM", "comm", width=12, precision=".12"),
        Column("IP", "family", width=2, form="ipver"),
        Column("SADDR", "laddr", width=16),
        Column("LPORT", "lport", width=6, when="lport"),
        Column("DADDR", "raddr", width=16),
        Column("DPORT", "rport", width=5),
        Column("LAT(ms)", "ms", form="ns_to_ms2"),
    ),
    examples=(
        ("pytrace tcpconnlat", "trace all TCP connects, and show connection latency"),
        ("pytrace tcpconnlat -t", "include timestamps"),
        ("pytrace tcpconnlat -p 181", "only trace PID 181"),
        ("pytrace tcpconnlat -L", "include LPORT while printing outputs"),
        ("pytrace tcpconnlat 1", "trace connection latency slower than 1 ms"),
        ("pytrace tcpconnlat 0.1", "trace connection latency slower than 100 us"),
        ("pytrace tcpconnlat -4", "trace IPv4 family only"),
        ("pytrace tcpconnlat -6", "trace IPv6 family only"),
        ("pytrace tcpconnlat -v", "print the BPF program, then trace"),
    ),
)
