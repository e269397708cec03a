"""soconnlat: IP connect() latency histograms, per calling user stack and process.

Library:

    from pytrace.tools.soconnlat import SoConnLat
    with SoConnLat() as t:
        time.sleep(10)
        for h in t.histograms():           # ConnLatHistogram, frozen
            print(h.comm, h.pid, h.frames(), h.hist.count, h.hist.average)
            print(h.hist.render())

A blocking connect is timed to its return; a non-blocking one (EINPROGRESS)
to the thread's next poll/select/epoll wait that returns ready descriptors.
User stacks go past the first frame only in code built with frame pointers.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any

from ..core.aggregate import add_interval_args, local_time, print_loop, timestamp_line
from ..core.bpfobject import BpfObject
from ..core.cliutil import add_common, add_container_args, container_filters, process_id
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.socklayer import cstr, histograms
from ..core.tracer import TASK_SCOPE, Tracer
from ..core.usyms import process_symbols, read_stack, remember
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "soconnlat"
SUMMARY = "IP connect() latency histograms with the caller's user stack"

WAITS = ("poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2")
OPTIONAL = {"soconnlat_epoll_pwait2"}   # Linux 5.11+


@dataclass(frozen=True, slots=True)
class ConnLatHistogram:
    pid: int
    comm: str
    ustack: tuple[int, ...] | None     # return addresses, innermost first (None: stacks off)
    ustack_error: int                  # errno when the stack could not be kept
    hist: Log2Histogram

    def frames(self) -> list[str]:
        if self.ustack is None:
            return []
        if not self.ustack:
            return [f"[missed user stack: {errno.errorcode.get(self.ustack_error, self.ustack_error)}]"]
        return process_symbols(self.pid).stack(self.ustack)

    def to_dict(self) -> dict[str, Any]:
        d = {"pid": self.pid, "comm": self.comm, **self.hist.to_dict()}
        if self.ustack is not None:
            d["ustack"] = self.frames()
        return d


class SoConnLat(Tracer):
    OBJECT = "soconnlat"
    SCOPE = TASK_SCOPE
    VARIANTS = (Variant("tracepoint", ("soconnlat_enter", "soconnlat_exit",
                                       *(f"soconnlat_{w}" for w in WAITS))),)

    def __init__(self, *, pid: int = 0, stacks: bool = True, ms: bool = False, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid, self.stacks, self.ms = pid, stacks, ms

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "user_stacks": self.stacks, "targ_ms": self.ms}

    def map_sizes(self) -> dict[str, int] | None:
        return None if self.stacks else {"stacks": 1}

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        for name in variant.programs:
            try:
                obj.attach(name)
            except OSError as exc:
                if name not in OPTIONAL or exc.errno != errno.ENOENT:
                    raise

    def setup(self) -> None:
        self._hists = self.obj.map("hists")
        self._stacks = self.obj.map("stacks")

    def histograms(self, clear: bool = False) -> list[ConnLatHistogram]:
        """One histogram per (user stack, process), most connects last."""
        unit = "msecs" if self.ms else "usecs"
        raw = histograms(self._hists, unit, lambda k: (k["ustack"], k["pid"], cstr(k["comm"])), clear)
        out = []
        for (sid, pid, comm), h in raw.items():
            addrs, err = read_stack(self._stacks, sid)
            out.append(ConnLatHistogram(pid, comm, addrs, err, h))
        return sorted(out, key=lambda c: (c.hist.count, c.pid))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Summarize IP connect() latency as histograms per calling user stack and "
                     "process; printed at Ctrl-C or every interval.")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    p.add_argument("-m", "--milliseconds", action="store_true", help="histograms in milliseconds")
    p.add_argument("-S", "--no-stacks", action="store_true", help="do not key by user stack")
    add_interval_args(p)
    add_container_args(p, SoConnLat)
    add_common(p, [v.hook for v in SoConnLat.VARIANTS])


# -- snapshots: what the sinks get each interval, and what replay renders -------
# The stack is kept symbolized (label "ustack", one frame a line): the
# processes it names may be gone by the time a recording is replayed.

def snapshot(hists: list[ConnLatHistogram], interval: int | None) -> Snapshot:
    return Snapshot.now(NAME, [Series.of({"pid": h.pid, "comm": h.comm,
                                          **({"ustack": "\n".join(h.frames())} if h.ustack is not None else {})},
                                         hist=h.hist) for h in hists], interval)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing IP connect() latency with ustacks. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    rows = []
    for s in snap.series:
        stack = s.label("ustack")
        rows.append((int(s.label("pid")), s.label("comm"), None if stack is None else stack.split("\n"), s.hist))
    if args.json:
        ts = local_time(snap, "%Y-%m-%dT%H:%M:%S")
        return "".join(json.dumps({"ts": ts, "pid": pid, "comm": comm, **h.to_dict(),
                                   **({"ustack": frames} if frames is not None else {})}) + "\n"
                       for pid, comm, frames, h in rows)
    parts = ["".join(f"  {f}\n" for f in frames or ()) + f"  {comm} [{pid}]\n{h.render()}"
             for pid, comm, frames, h in rows]
    return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")


def run(args: argparse.Namespace) -> int:
    with SoConnLat(pid=args.pid, stacks=not args.no_stacks, ms=args.milliseconds, hook=args.hook,
                   **container_filters(args)) as t:
        # Printing only at the end: wake every second anyway to read the mappings
        # of the processes seen so far, while they still exist (see core/usyms).
        return print_loop(args, lambda: snapshot(t.histograms(clear=bool(args.interval)), args.interval),
                          render_snapshot, intro,
                          between=(lambda: remember({h.pid for h in t.histograms()})) if t.stacks else None)
