"""so1stbyte: time from an IP connect() to the first byte read, histograms per process.

Library:

    from pytrace.tools.so1stbyte import So1stByte
    with So1stByte() as t:
        time.sleep(10)
        for key, h in t.histograms().items():     # So1stByteKey: Log2Histogram
            print(key.pid, key.comm, h.count, h.average)

The clock starts when connect() is called and stops when a read system call
(read, readv, pread64, recvfrom, recvmsg, recvmmsg) on that socket first
returns data; close() or a failed connect drops it.  Reads through io_uring,
splice or sendfile are not seen.
"""

from __future__ import annotations

from ..cli.aggregate import timestamp_line
from ..core.loader import Variant
from ..core.socklayer import keyed_histograms
from ..core.tracer import TASK_SCOPE, Tracer
from ..spec import HISTOGRAM, EventType, Option, ToolSpec, interval_flags, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

READS = ("read", "readv", "pread64", "recvfrom", "recvmsg", "recvmmsg")

# The hists map's key (struct so1stbyte_key)
SO1STBYTE_KEY = EventType("So1stByteKey", struct="so1stbyte_key", doc="Whose first-byte times a histogram holds.",
                          fields="""
    pid
    comm: text
""")


class So1stByte(Tracer):
    OBJECT = "so1stbyte"
    SCOPE = TASK_SCOPE
    VARIANTS = (Variant("tracepoint", ("so1stbyte_connect", "so1stbyte_connect_exit", "so1stbyte_close",
                                       *(f"so1stbyte_{d}_{r}" for r in READS for d in ("enter", "exit")))),)

    def __init__(self, *, pid: int = 0, ms: bool = False, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid, self.ms = pid, ms

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "targ_ms": self.ms}

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> dict:
        """{So1stByteKey: histogram of connect-to-first-byte times}."""
        return keyed_histograms(self._hists, "msecs" if self.ms else "usecs", SO1STBYTE_KEY.cls, clear)


__getattr__ = public_classes(__name__, So1stByteKey=SO1STBYTE_KEY)


def read(tracer: So1stByte, args: Any) -> dict:
    hists = tracer.histograms(clear=bool(args.interval))
    return dict(sorted(hists.items(), key=lambda kh: (kh[1].count, kh[0].pid, kh[0].comm)))


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + "".join(f"{key.comm} [{key.pid}]\n{h.render()}\n"
                                                for key, h in SPEC.histograms(snap))


SPEC = ToolSpec(
    "so1stbyte", "time from IP connect() to the first byte read, per process", So1stByte, HISTOGRAM,
    description=("Summarize the time from IP connect() to the first byte read on the socket, "
                 "as histograms per process; printed at Ctrl-C or every interval."),
    event=SO1STBYTE_KEY,
    options=(
        pid("only this process"),
        Option("-m", "--milliseconds", action="store_true", kw="ms", help="histograms in milliseconds"),
        *interval_flags(),
        timestamp(),
    ),
    read=read, text=text,
    intro="Tracing IP socket first-read-byte latency. Ctrl-C to end.\n",
    examples=(
        ("pytrace so1stbyte", "a histogram per process, at Ctrl-C"),
        ("pytrace so1stbyte -m -i 10", "in milliseconds, every 10 seconds"),
        ("pytrace so1stbyte -p 181", "only process 181"),
        ("pytrace so1stbyte --json", "one JSON object per histogram"),
    ),
)
