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

import argparse
import json
import sys
import time
from typing import Any

from ..core.cliutil import add_common, positive_int
from ..core.hist import Log2Histogram
from ..core.periodic import each_tick
from ..core.socklayer import DIRS, cstr, histograms, sock_io_variants
from ..core.tracer import Tracer

NAME = "socksize"
SUMMARY = "socket send/recv size histograms per process"


class SockSize(Tracer):
    OBJECT = "socksize"
    VARIANTS = sock_io_variants("socksize")

    def __init__(self, *, pid: int = 0, per_pid: bool = True, hook: str | None = None):
        super().__init__(hook=hook)
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
    p.add_argument("-p", "--pid", type=positive_int, default=0, help="only this process")
    p.add_argument("-C", "--by-comm", action="store_true", help="one histogram per command name, not per PID")
    p.add_argument("-i", "--interval", type=positive_int, metavar="SEC", help="print (and reset) every SEC seconds")
    p.add_argument("-d", "--duration", type=positive_int, metavar="SEC", help="total run time in seconds")
    p.add_argument("-c", "--count", type=positive_int, metavar="N", help="stop after N intervals")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    add_common(p, [v.hook for v in SockSize.VARIANTS])


def render(hists: dict[tuple[int, str, str], Log2Histogram], by_comm: bool) -> str:
    parts = []
    for (pid, comm, d), h in sorted(hists.items(), key=lambda kv: (kv[0][2], kv[1].count, kv[0][:2])):
        name = "read_bytes" if d == "recv" else "write_bytes"
        who = comm if by_comm else f"{comm}, {pid}"
        parts.append(f"@{name}[{who}]:\n{h.render()}")
    return "\n".join(parts) + ("\n" if parts else "")


def run(args: argparse.Namespace) -> int:
    with SockSize(pid=args.pid, per_pid=not args.by_comm, hook=args.hook) as t:
        def start() -> None:
            if not args.json:
                print("Tracing socket I/O size. Ctrl-C to end.", flush=True)

        def emit(_last: bool) -> None:
            hists = t.histograms(clear=bool(args.interval))
            if args.json:
                ts = time.strftime("%Y-%m-%dT%H:%M:%S")
                sys.stdout.write("".join(json.dumps({"ts": ts, "pid": pid, "comm": comm, "dir": d, **h.to_dict()})
                                         + "\n" for (pid, comm, d), h in hists.items()))
            else:
                if args.timestamp:
                    sys.stdout.write(time.strftime("%H:%M:%S") + "\n")
                sys.stdout.write(render(hists, args.by_comm))
            sys.stdout.flush()

        each_tick(emit, args.interval, args.count, args.duration, start=start)
    return 0
