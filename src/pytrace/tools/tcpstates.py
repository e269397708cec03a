"""tcpstates: TCP state changes, with the time each socket spent in its old state.

Library:

    from pytrace.tools.tcpstates import TcpStates
    with TcpStates(lports=[8080]) as tracer:
        for ev in tracer.events(duration=10):          # TcpStateChange
            print(ev.laddr, ev.lport, ev.oldstate.name, "->", ev.newstate.name, ev.ms)

C-PID/C-COMM are the task current when the state changed: the process for
changes made by a system call (connect, close, listen), often an unrelated
task or none (0) for changes made in softirq on packet arrival.
"""

from __future__ import annotations

from ..core.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from typing import Any

# The C struct is src/bpf/tcpstates.bpf.c's; build.py generates TcpStateChange
# from its BTF (pytrace/gen/tcpstates.py).  Only renames and conversions here.
TCPSTATES_EVENT = EventType("TcpStateChange", struct="tcpstates_event", doc="One TCP state change of a socket.",
                            fields="""
    ts_ns                       # CLOCK_MONOTONIC of the change
    skaddr: hex                 # the socket's kernel address
    pid                         # the task current at the change (0: none, in softirq)
    comm: text
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport <- sport
    raddr <- daddr: address
    rport <- dport
    oldstate: TcpState
    newstate: TcpState
    ms <- delta_us: us_to_ms    # time spent in oldstate (0 for the first change seen)
    cgroup_id                   # the socket's cgroup id (0 unless labels=True)
    netns                       # the socket's network namespace inode (0 unless labels=True)
""")


class TcpStates(EventTracer):
    OBJECT = "tcpstates"
    EVENT_TYPE = TCPSTATES_EVENT
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcpstates_tp_btf",)),
        Variant("raw_tp", ("tcpstates_raw_tp",)),
        Variant("tracepoint", ("tcpstates_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, lports: list[int] | None = None,
                 rports: list[int] | None = None, **kw):  # kw: EventTracer's
        super().__init__(**kw)
        self.family, self.lports, self.rports = family, lports or [], rports or []

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family,
                "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}


def __getattr__(name: str) -> type:
    """TcpStateChange, the generated class, imported on first use (PEP 562): the
    CLI's text output formats raw records and never needs it."""
    if name == "TcpStateChange":
        return TCPSTATES_EVENT.cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _address_width(args: Any) -> int:
    return 39 if (args.wide or args.ipv6) else 15


SPEC = ToolSpec(
    "tcpstates", "TCP state changes with the time spent in each state", TcpStates, EVENTS,
    description=f"Trace TCP state changes and the time spent in each state. {LATENCY_NOTE}",
    event=TCPSTATES_EVENT,
    options=(
        Option("-T", "--timestamp", action="store_true", help="include a HH:MM:SS column"),
        Option("-t", "--time", action="store_true", help="include a TIME(s) column (since start)"),
        Option("-w", "--wide", action="store_true", help="wide columns (IPv6 addresses)"),
        Option("-L", "--localport", type=ports("-L"), metavar="PORTS", kw="lports",
               help="only these local ports (comma list)"),
        Option("-D", "--remoteport", type=ports("-D"), metavar="PORTS", kw="rports",
               help="only these remote ports (comma list)"),
        family(),
    ),
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="timestamp"),
        Column("TIME(s)", "ts_ns", width=9, form="since_start", precision=".6", when="time"),
        Column("SKADDR", "skaddr", width=16),
        Column("C-PID", "pid", width=7),
        Column("C-COMM", "comm", width=16),
        Column("LADDR", "laddr", width=_address_width),
        Column("LPORT", "lport", width=5),
        Column("RADDR", "raddr", width=_address_width),
        Column("RPORT", "rport", width=5),
        Column("OLDSTATE", "oldstate", width=11),
        Column("->"),
        Column("NEWSTATE", "newstate", width=11),
        Column("MS", "ms"),
    ),
    examples=(
        ("pytrace tcpstates", "every TCP state change"),
        ("pytrace tcpstates -T", "with a HH:MM:SS column"),
        ("pytrace tcpstates -L 80,443", "only sockets with local port 80 or 443"),
        ("pytrace tcpstates -D 80", "only sockets with remote port 80"),
        ("pytrace tcpstates -6 -w", "IPv6 only, wide address columns"),
        ("pytrace tcpstates --json", "one JSON object per change"),
    ),
)
