"""tcpaccept: TCP connections accepted, with the process that called accept().

Library:

    from pytrace.tools.tcpaccept import TcpAccept
    with TcpAccept(lports=[80, 443]) as tracer:
        for a in tracer.events(duration=10):          # Accept
            print(a.pid, a.comm, a.raddr, a.rport, a.lport)

PID and COMM are the process that accept()ed the connection, not whatever
ran the softirq that completed the handshake.  Where kprobes are missing the
events come from the accept/accept4 syscall tracepoints, which io_uring
accepts bypass.
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct tcpaccept_event of src/bpf/tcpaccept.bpf.c; build.py generates Accept from its BTF
ACCEPT_EVENT = EventType("Accept", struct="tcpaccept_event", doc="One TCP connection returned by accept().",
                         fields="""
    ts_ns                       # CLOCK_MONOTONIC of the accept
    pid                         # the accepting process
    comm: text
    family: family              # AF_INET or AF_INET6
    raddr: address
    rport
    laddr: address
    lport
    -pad
""")


class TcpAccept(EventTracer):
    OBJECT = "tcpaccept"
    EVENT_TYPE = ACCEPT_EVENT
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcpaccept_kretprobe",)),
        Variant("tracepoint", ("tcpaccept_tp_accept4", "tcpaccept_tp_accept"), "no io_uring"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, lports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.family, self.lports = pid, family, lports or []

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid, "target_family": self.family,
                "lports": self.lports, "n_lports": len(self.lports)}


__getattr__ = public_classes(__name__, Accept=ACCEPT_EVENT)


SPEC = ToolSpec(
    "tcpaccept", "TCP connections accepted, with the accepting PID", TcpAccept, EVENTS,
    description=f"Trace TCP accepts. {LATENCY_NOTE}",
    event=ACCEPT_EVENT,
    options=(
        Option("-T", "--time", action="store_true", help="include a time column on output (HH:MM:SS)"),
        Option("-t", "--timestamp", action="store_true",
               help="include a timestamp column (seconds since the first event)"),
        pid(),
        Option("-P", "--port", type=ports("-P"), metavar="PORTS", kw="lports",
               help="comma-separated list of local ports to trace"),
        family(),
    ),
    # BCC's layout: "%-9s" TIME, "%-9.3f" TIME(s), then "%-7d %-12.12s %-2d %-16s %-5d %-16s %-5d"
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="time"),
        Column("TIME(s)", "ts_ns", width=8, form="since_first", precision=".3", when="timestamp"),
        Column("PID", "pid", width=7),
        Column("COMM", "comm", width=12, precision=".12"),
        Column("IP", "family", width=2, form="ipver"),
        Column("RADDR", "raddr", width=16),
        Column("RPORT", "rport", width=5),
        Column("LADDR", "laddr", width=16),
        Column("LPORT", "lport"),
    ),
    examples=(
        ("pytrace tcpaccept", "trace all TCP accepts"),
        ("pytrace tcpaccept -t", "include timestamps"),
        ("pytrace tcpaccept -P 80,81", "only trace local ports 80 and 81"),
        ("pytrace tcpaccept -p 181", "only trace PID 181"),
        ("pytrace tcpaccept -4", "trace IPv4 family only"),
        ("pytrace tcpaccept -6", "trace IPv6 family only"),
    ),
)
