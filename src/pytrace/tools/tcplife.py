"""tcplife: one line per TCP session when it closes, with its bytes and lifespan.

Library:

    from pytrace.tools.tcplife import TcpLife
    with TcpLife(lports=[8080]) as tracer:
        for s in tracer.events(duration=10):           # TcpSession
            print(s.pid, s.comm, s.raddr, s.rport, s.tx_bytes, s.rx_bytes, s.ms)

tx_bytes/rx_bytes are payload bytes (what the application sent and got;
SYN and FIN are taken out of the kernel's sequence-space counters, see
src/bpf/tcplife.bpf.c).  PID/COMM are the socket's owner, learned at the
connect()/close()/shutdown() that changed its state, else (a session that
ended by a reset before its owner touched it) the task current at close.
ms runs from the last of SYN_SENT/SYN_RECV/ESTABLISHED to CLOSE, as in BCC.
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from typing import Any

# struct tcplife_event of src/bpf/tcplife.bpf.c; build.py generates TcpSession from its BTF
TCPLIFE_EVENT = EventType("TcpSession", struct="tcplife_event", doc="One TCP session, reported when it closed.",
                          fields="""
    ts_ns                       # CLOCK_MONOTONIC of the close
    pid                         # the socket's owner
    comm: text
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport
    raddr <- daddr: address
    rport
    tx_bytes <- tx_b            # payload sent (and acknowledged)
    rx_bytes <- rx_b            # payload received
    ms <- span_us: us_to_ms     # lifespan
    -pad
""")


class TcpLife(EventTracer):
    OBJECT = "tcplife"
    EVENT_TYPE = TCPLIFE_EVENT
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcplife_tp_btf",)),
        Variant("raw_tp", ("tcplife_raw_tp",)),
        Variant("tracepoint", ("tcplife_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, pid: int = 0, lports: list[int] | None = None,
                 rports: list[int] | None = None, max_sessions: int | None = None, **kw):
        """max_sessions: how many open sessions the kernel can follow at once (65536);
        a session beyond that is counted in `lost` when it starts."""
        super().__init__(**kw)
        self.family, self.pid = family, pid
        self.lports, self.rports = lports or [], rports or []
        self.max_sessions = max_sessions

    def map_sizes(self) -> dict[str, int] | None:
        sizes = dict(super().map_sizes() or {})
        if self.max_sessions:
            sizes["conns"] = self.max_sessions
        return sizes or None

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family, "target_pid": self.pid,
                "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}


__getattr__ = public_classes(__name__, TcpSession=TCPLIFE_EVENT)


def _wide(args: Any) -> bool:
    return args.wide


def _addr(args: Any) -> int:
    return 26 if args.wide else 15


def _kb(args: Any) -> int:
    return 6 if args.wide else 5


SPEC = ToolSpec(
    "tcplife", "TCP sessions at close: owner, addresses, bytes each way, lifespan", TcpLife, EVENTS,
    description=f"Trace the lifespan of TCP sessions and summarize. {LATENCY_NOTE}",
    event=TCPLIFE_EVENT,
    options=(
        Option("-T", "--time", action="store_true", help="include a time column on output (HH:MM:SS)"),
        Option("-t", "--timestamp", action="store_true",
               help="include a timestamp column on output (seconds since the first event)"),
        Option("-w", "--wide", action="store_true", help="wide column output (fits IPv6 addresses)"),
        Option("-s", "--csv", action="store_true", help="comma separated values output"),
        pid(),
        Option("-L", "--localport", type=ports("-L"), metavar="PORTS", kw="lports",
               help="comma-separated list of local ports to trace"),
        Option("-D", "--remoteport", type=ports("-D"), metavar="PORTS", kw="rports",
               help="comma-separated list of remote ports to trace"),
        family(),
    ),
    csv="csv",
    # BCC's "%-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %.2f" (the IP column only
    # with -w, "%-2s", or -s); -w: COMM 16, addresses 26, KB 6
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="time"),
        Column("TIME(s)", "ts_ns", width=9, form="since_first", precision=".6", when="timestamp"),
        Column("PID", "pid", width=5),
        Column("COMM", "comm", width=lambda a: 16 if a.wide else 10, precision=lambda a: ".16" if a.wide else ".10"),
        Column("IP", "family", width=2, form="ipver", when=lambda a: a.wide or a.csv),
        Column("LADDR", "laddr", width=_addr),
        Column("LPORT", "lport", width=5),
        Column("RADDR", "raddr", width=_addr),
        Column("RPORT", "rport", width=5),
        Column("TX_KB", "tx_bytes", width=_kb, align=">", form="kbytes"),
        Column("RX_KB", "rx_bytes", width=_kb, align=">", form="kbytes"),
        Column("MS", "ms", form="us_to_ms2"),
    ),
    examples=(
        ("pytrace tcplife", "trace all TCP connect()s"),
        ("pytrace tcplife -T", "include time column (HH:MM:SS)"),
        ("pytrace tcplife -w", "wider columns (fit IPv6)"),
        ("pytrace tcplife -stT", "csv output, with times & timestamps"),
        ("pytrace tcplife -p 181", "only trace PID 181"),
        ("pytrace tcplife -L 80", "only trace local port 80"),
        ("pytrace tcplife -L 80,81", "only trace local ports 80 and 81"),
        ("pytrace tcplife -D 80", "only trace remote port 80"),
        ("pytrace tcplife -4", "trace IPv4 family only"),
        ("pytrace tcplife -6", "trace IPv6 family only"),
    ),
)
