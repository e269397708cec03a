"""soaccept: IP accept() calls with the peer's address and port, and the result.

Library:

    from pytrace.tools.soaccept import SoAccept
    with SoAccept(pid=1234) as t:
        for ev in t.events(duration=10):          # AcceptCall
            print(ev.comm, ev.addr, ev.port, ev.lport, ev.result)

The peer is read from the accepted socket, so it is known even when the
caller passes no address buffer.  Failed calls (e.g. "None to accept" for a
non-blocking accept) are reported with the listening socket's family and an
unspecified peer (0.0.0.0, port 0).  io_uring accepts do not pass through
the system calls and are not seen.
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.socklayer import ACCEPT_RESULTS  # noqa: F401  (registers accept_result)
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct soaccept_event of src/bpf/soaccept.bpf.c; build.py generates AcceptCall
SOACCEPT_EVENT = EventType("AcceptCall", struct="soaccept_event", doc="One accept() or accept4() call.",
                           fields="""
    ts_ns                           # CLOCK_MONOTONIC when the call returned
    pid
    comm: text
    listen_fd                       # the listening socket's descriptor
    family: family
    addr: address                   # the peer (unspecified when the call failed)
    port                            # the peer's port (0 when the call failed)
    lport                           # the listening port
    ret                             # the new descriptor, or -errno
    result <- ret: accept_result    # the book's text of ret ("Success", "None to accept"...)
    -pad
    cgroup_id                   # the caller's cgroup id (0 unless labels=True)
    netns                       # the caller's network namespace inode (0 unless labels=True)
""")


class SoAccept(EventTracer):
    OBJECT = "soaccept"
    SCOPE = TASK_SCOPE | LABELS
    EVENT_TYPE = SOACCEPT_EVENT
    VARIANTS = (Variant("tracepoint", ("soaccept_enter4", "soaccept_enter", "soaccept_exit4",
                                       "soaccept_exit")),)

    def __init__(self, *, pid: int = 0, lports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.lports = pid, lports or []

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "lports": self.lports, "n_lports": len(self.lports)}


__getattr__ = public_classes(__name__, AcceptCall=SOACCEPT_EVENT)


SPEC = ToolSpec(
    "soaccept", "IP accept() calls with peer address, port and result", SoAccept, EVENTS,
    description=f"Trace IP accept() calls with the peer's address and port and the result. {LATENCY_NOTE}",
    event=SOACCEPT_EVENT,
    options=(
        pid("only this process"),
        Option("-P", "--port", type=ports("-P"), metavar="PORTS", kw="lports",
               help="only these listening ports (comma list)"),
        timestamp("include a HH:MM:SS column"),
    ),
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="timestamp"),
        Column("PID", "pid", width=6),
        Column("PROCESS", "comm", width=16),
        Column("FAM", "family", width=3, form="int"),
        Column("ADDRESS", "addr", width=16),
        Column("PORT", "port", width=5),
        Column("LPORT", "lport", width=5),
        Column("RESULT", "result"),
    ),
    examples=(
        ("pytrace soaccept", "every IP accept(), with the peer and the result"),
        ("pytrace soaccept -T", "with a HH:MM:SS column"),
        ("pytrace soaccept -p 181", "only process 181"),
        ("pytrace soaccept -P 80", "only accepts on listening port 80"),
        ("pytrace soaccept --json", "one JSON object per call"),
    ),
)
