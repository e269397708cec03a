"""socksize: socket send and receive sizes as histograms per process.

Library:

    from pytrace.tools.socksize import SockSize
    with SockSize(pid=1234) as t:
        time.sleep(5)
        for key, h in t.histograms().items():     # SockSizeKey: Log2Histogram in bytes
            print(key.comm, key.pid, key.dir, h.count, h.sum)

The size is what each call through sock_sendmsg()/sock_recvmsg() returned
(0 included, errors left out).
"""

from __future__ import annotations

from ..cli.aggregate import timestamp_line
from ..core.socklayer import keyed_histograms, sock_io_variants
from ..core.tracer import TASK_SCOPE, Tracer
from ..spec import HISTOGRAM, EventType, Option, ToolSpec, interval_flags, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The hists map's key (struct socksize_key): what each histogram is for
SOCKSIZE_KEY = EventType("SockSizeKey", struct="socksize_key", doc="Whose sizes a histogram holds.", fields="""
    pid                         # 0 when keyed by command name only
    comm: text
    dir: io_dir                 # send or recv
""")


class SockSize(Tracer):
    OBJECT = "socksize"
    SCOPE = TASK_SCOPE
    VARIANTS = sock_io_variants("socksize")

    def __init__(self, *, pid: int = 0, per_pid: bool = True, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid, self.per_pid = pid, per_pid

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "per_pid": self.per_pid}

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> dict:
        """{SockSizeKey: histogram of sizes in bytes}."""
        return keyed_histograms(self._hists, "bytes", SOCKSIZE_KEY.cls, clear)


__getattr__ = public_classes(__name__, SockSizeKey=SOCKSIZE_KEY)


def text(snap: Any, args: Any) -> str:
    """The book's @read_bytes[comm, pid] / @write_bytes[...] maps."""
    parts = []
    for key, h in sorted(SPEC.histograms(snap), key=lambda kh: (kh[0].dir, kh[1].count, kh[0].pid, kh[0].comm)):
        name = "read_bytes" if key.dir == "recv" else "write_bytes"
        who = key.comm if args.by_comm else f"{key.comm}, {key.pid}"
        parts.append(f"@{name}[{who}]:\n{h.render()}")
    return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")


SPEC = ToolSpec(
    "socksize", "socket send/recv size histograms per process", SockSize, HISTOGRAM,
    description=("Summarize socket send and receive sizes as histograms per process; printed at "
                 "Ctrl-C or every interval."),
    event=SOCKSIZE_KEY,
    options=(
        pid("only this process"),
        Option("-C", "--by-comm", action="store_true", kw="per_pid", value=lambda args: not args.by_comm,
               help="one histogram per command name, not per PID"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: tracer.histograms(clear=bool(args.interval)),
    text=text,
    intro="Tracing socket I/O size. Ctrl-C to end.\n",
    examples=(
        ("pytrace socksize", "send and receive sizes per process, at Ctrl-C"),
        ("pytrace socksize -C", "per command name"),
        ("pytrace socksize -p 181 -i 5", "process 181, every 5 seconds"),
        ("pytrace socksize --json", "one JSON object per histogram"),
    ),
)
