"""socksize: socket send and receive sizes as histograms per process.

Library:

    from pytrace.tools.socksize import SockSize
    with SockSize(pid=1234) as t:
        time.sleep(5)
        for (pid, comm, direction), h in t.histograms().items():   # Log2Histogram in bytes
            print(comm, direction, h.count, h.sum)

The size is what each call through sock_sendmsg()/sock_recvmsg() returned
(0 included, errors left out).
"""

from __future__ import annotations

import json
from typing import Any

from ..core.aggregate import add_interval_args, local_time, print_loop, timestamp_line
from ..core.cliutil import add_common, add_container_args, container_filters, process_id
from ..core.hist import Log2Histogram
from ..core.socklayer import DIRS, cstr, histograms, sock_io_variants
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "socksize"
SUMMARY = "socket send/recv size histograms per process"


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

    def histograms(self, clear: bool = False) -> dict[tuple[int, str, str], Log2Histogram]:
        """{(pid, comm, "send" or "recv"): histogram of sizes in bytes} (pid 0 when not per pid)."""
        return histograms(self._hists, "bytes", lambda k: (k["pid"], cstr(k["comm"]), DIRS[k["dir"] & 1]),
                          clear)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Summarize socket send and receive sizes as histograms per process; printed at "
                     "Ctrl-C or every interval.")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    p.add_argument("-C", "--by-comm", action="store_true", help="one histogram per command name, not per PID")
    add_interval_args(p)
    add_container_args(p, SockSize)
    add_common(p, [v.hook for v in SockSize.VARIANTS])


def render(hists: dict[tuple[int, str, str], Log2Histogram], by_comm: bool) -> str:
    parts = []
    for (pid, comm, d), h in sorted(hists.items(), key=lambda kv: (kv[0][2], kv[1].count, kv[0][:2])):
        name = "read_bytes" if d == "recv" else "write_bytes"
        who = comm if by_comm else f"{comm}, {pid}"
        parts.append(f"@{name}[{who}]:\n{h.render()}")
    return "\n".join(parts) + ("\n" if parts else "")


# -- snapshots: what the sinks get each interval, and what replay renders -------

def snapshot(hists: dict[tuple[int, str, str], Log2Histogram], interval: int | None) -> Snapshot:
    return Snapshot.now(NAME, [Series.of({"pid": pid, "comm": comm, "dir": d}, hist=h)
                               for (pid, comm, d), h in hists.items()], interval)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing socket I/O size. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    hists = {(int(s.label("pid")), s.label("comm"), s.label("dir")): s.hist for s in snap.series}
    if args.json:
        ts = local_time(snap, "%Y-%m-%dT%H:%M:%S")
        return "".join(json.dumps({"ts": ts, "pid": pid, "comm": comm, "dir": d, **h.to_dict()}) + "\n"
                       for (pid, comm, d), h in hists.items())
    return timestamp_line(snap, args) + render(hists, args.by_comm)


def run(args: argparse.Namespace) -> int:
    with SockSize(pid=args.pid, per_pid=not args.by_comm, hook=args.hook, **container_filters(args)) as t:
        return print_loop(args, lambda: snapshot(t.histograms(clear=bool(args.interval)), args.interval),
                          render_snapshot, intro)
