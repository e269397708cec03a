"""so1stbyte: time from an IP connect() to the first byte read, histograms per process.

Library:

    from pytrace.tools.so1stbyte import So1stByte
    with So1stByte() as t:
        time.sleep(10)
        for (pid, comm), h in t.histograms().items():     # Log2Histogram
            print(pid, comm, h.count, h.average)

The clock starts when connect() is called and stops when a read system call
(read, readv, pread64, recvfrom, recvmsg, recvmmsg) on that socket first
returns data; close() or a failed connect drops it.  Reads through io_uring,
splice or sendfile are not seen.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.aggregate import add_interval_args, local_time, print_loop, timestamp_line
from ..core.cliutil import add_common, add_container_args, container_filters, process_id
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.socklayer import cstr, histograms
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "so1stbyte"
SUMMARY = "time from IP connect() to the first byte read, per process"

READS = ("read", "readv", "pread64", "recvfrom", "recvmsg", "recvmmsg")


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

    def histograms(self, clear: bool = False) -> dict[tuple[int, str], Log2Histogram]:
        """{(pid, comm): histogram of connect-to-first-byte times}."""
        return histograms(self._hists, "msecs" if self.ms else "usecs",
                          lambda k: (k["pid"], cstr(k["comm"])), clear)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Summarize the time from IP connect() to the first byte read on the socket, "
                     "as histograms per process; printed at Ctrl-C or every interval.")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    p.add_argument("-m", "--milliseconds", action="store_true", help="histograms in milliseconds")
    add_interval_args(p)
    add_container_args(p, So1stByte)
    add_common(p, [v.hook for v in So1stByte.VARIANTS])


# -- snapshots: what the sinks get each interval, and what replay renders -------

def snapshot(hists: dict[tuple[int, str], Log2Histogram], interval: int | None) -> Snapshot:
    order = sorted(hists.items(), key=lambda kv: (kv[1].count, kv[0]))
    return Snapshot.now(NAME, [Series.of({"pid": pid, "comm": comm}, hist=h) for (pid, comm), h in order],
                        interval)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing IP socket first-read-byte latency. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    rows = [(int(s.label("pid")), s.label("comm"), s.hist) for s in snap.series]
    if args.json:
        ts = local_time(snap, "%Y-%m-%dT%H:%M:%S")
        return "".join(json.dumps({"ts": ts, "pid": pid, "comm": comm, **h.to_dict()}) + "\n"
                       for pid, comm, h in rows)
    return timestamp_line(snap, args) + "".join(f"{comm} [{pid}]\n{h.render()}\n" for pid, comm, h in rows)


def run(args: argparse.Namespace) -> int:
    with So1stByte(pid=args.pid, ms=args.milliseconds, hook=args.hook, **container_filters(args)) as t:
        return print_loop(args, lambda: snapshot(t.histograms(clear=bool(args.interval)), args.interval),
                          render_snapshot, intro)
