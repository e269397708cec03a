"""soconnect: IP connect() calls with address, port, latency and result.

Library:

    from pytrace.tools.soconnect import SoConnect
    with SoConnect(pid=1234) as t:
        for ev in t.events(duration=10):          # ConnectCall
            print(ev.comm, ev.addr, ev.port, ev.lat_us, ev.result)

LAT(us) is the time spent in the connect() call: the whole handshake for a
blocking connect, the call alone for a non-blocking one (result "In
progress"; soconnlat follows those to poll/select/epoll).
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.socklayer import CONNECT_RESULTS  # noqa: F401  (registers connect_result)
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct soconnect_event of src/bpf/soconnect.bpf.c; build.py generates ConnectCall
SOCONNECT_EVENT = EventType("ConnectCall", struct="soconnect_event", doc="One connect() call on an IP socket.",
                            fields="""
    ts_ns                           # CLOCK_MONOTONIC when connect() returned
    pid
    tid
    comm: text
    fd
    family: family                  # of the address passed: AF_INET or AF_INET6
    addr: address
    port
    lat_us <- lat_ns: ns_to_us      # time in connect()
    ret                             # 0 or -errno
    result <- ret: connect_result   # the book's text of ret ("Connect refused", "In progress"...)
    cgroup_id                       # the caller's cgroup id (0 unless labels=True)
    netns                           # the caller's network namespace inode (0 unless labels=True)
    -pad
""")


class SoConnect(EventTracer):
    OBJECT = "soconnect"
    SCOPE = TASK_SCOPE | LABELS
    EVENT_TYPE = SOCONNECT_EVENT
    VARIANTS = (Variant("tracepoint", ("soconnect_enter", "soconnect_exit")),)

    def __init__(self, *, pid: int = 0, rports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.rports = pid, rports or []

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "rports": self.rports, "n_rports": len(self.rports)}


__getattr__ = public_classes(__name__, ConnectCall=SOCONNECT_EVENT)


SPEC = ToolSpec(
    "soconnect", "IP connect() calls with address, port, latency and result", SoConnect, EVENTS,
    description=f"Trace IP connect() calls with address, port, latency and result. {LATENCY_NOTE}",
    event=SOCONNECT_EVENT,
    options=(
        pid("only this process"),
        Option("-P", "--port", type=ports("-P"), metavar="PORTS", kw="rports",
               help="only these destination ports (comma list)"),
        timestamp("include a HH:MM:SS column"),
    ),
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="timestamp"),
        Column("PID", "pid", width=6),
        Column("PROCESS", "comm", width=16),
        Column("FAM", "family", width=3, form="int"),
        Column("ADDRESS", "addr", width=16),
        Column("PORT", "port", width=5),
        Column("LAT(us)", "lat_us", width=8, align=">", form="whole_us"),
        Column("RESULT", "result"),
    ),
    examples=(
        ("pytrace soconnect", "every IP connect(), with its latency and result"),
        ("pytrace soconnect -T", "with a HH:MM:SS column"),
        ("pytrace soconnect -p 181", "only process 181"),
        ("pytrace soconnect -P 80,443", "only connects to port 80 or 443"),
        ("pytrace soconnect --json", "one JSON object per call"),
    ),
)
