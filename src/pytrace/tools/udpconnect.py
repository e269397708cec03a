"""udpconnect: connect() calls on UDP sockets, with the destination.

Library:

    from pytrace.tools.udpconnect import UdpConnect
    with UdpConnect() as t:
        for ev in t.events(duration=10):          # UdpConnectCall
            print(ev.pid, ev.comm, ev.raddr, ev.rport)

Reported when the call starts, whatever its result (as the book's kprobe
on ip4/ip6_datagram_connect does); disconnects (AF_UNSPEC) are left out.
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct udpconnect_event of src/bpf/udpconnect.bpf.c; build.py generates UdpConnectCall
UDPCONNECT_EVENT = EventType("UdpConnectCall", struct="udpconnect_event", doc="One connect() on a UDP socket.",
                             fields="""
    ts_ns                       # CLOCK_MONOTONIC of the call
    pid
    tid
    comm: text
    family: family              # of the destination: AF_INET or AF_INET6
    raddr <- addr: address
    rport <- port
    lport                       # the local port once connect() bound the socket (autobind)
    protocol                    # 17 UDP, 136 UDP-Lite
    cgroup_id                   # the caller's cgroup id (0 unless labels=True)
    netns                       # the socket's network namespace inode (0 unless labels=True)
""")


class UdpConnect(EventTracer):
    OBJECT = "udpconnect"
    SCOPE = TASK_SCOPE | LABELS
    EVENT_TYPE = UDPCONNECT_EVENT
    VARIANTS = (
        Variant("kprobe", ("udpconnect_kprobe_v4", "udpconnect_kprobe_v6")),
        Variant("tracepoint", ("udpconnect_tracepoint", "udpconnect_tracepoint_exit")),
    )

    def __init__(self, *, pid: int = 0, rports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.rports = pid, rports or []

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "rports": self.rports, "n_rports": len(self.rports)}


__getattr__ = public_classes(__name__, UdpConnectCall=UDPCONNECT_EVENT)


SPEC = ToolSpec(
    "udpconnect", "connect() on UDP sockets, with the destination", UdpConnect, EVENTS,
    description=f"Trace connect() calls on UDP sockets. {LATENCY_NOTE}",
    event=UDPCONNECT_EVENT,
    options=(
        pid("only this process"),
        Option("-P", "--port", type=ports("-P"), metavar="PORTS", kw="rports",
               help="only these destination ports (comma list)"),
    ),
    columns=(   # the book's udpconnect.bt: TIME always
        Column("TIME", "ts_ns", width=8, form="hms"),
        Column("PID", "pid", width=6),
        Column("COMM", "comm", width=16),
        Column("IP", "family", width=2, form="ipver"),
        Column("RADDR", "raddr", width=16),
        Column("RPORT", "rport", width=5),
    ),
    examples=(
        ("pytrace udpconnect", "every UDP connect()"),
        ("pytrace udpconnect -p 181", "only process 181"),
        ("pytrace udpconnect -P 53", "only connects to port 53 (DNS)"),
        ("pytrace udpconnect --json", "one JSON object per call"),
    ),
)
