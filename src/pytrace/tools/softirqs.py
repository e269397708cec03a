"""softirqs: time spent in soft IRQs, per vector, aggregated in the kernel.

Library:

    from pytrace.tools.softirqs import SoftIrqs
    with SoftIrqs(dist=True) as s:
        time.sleep(1)
        for st in s.read():                  # what happened since the last read()
            print(st.name, st.count, st.total_ns, st.hist.average)

Vector names come from the running kernel's own enum (HI_SOFTIRQ,
NET_RX_SOFTIRQ, ...) in its BTF, printed lower case like BCC and
libbpf-tools; the fixed list of softirq_to_name() is only the fallback for a
kernel BTF without that enum.

This tool is benchmarked for start-up time (`softirqs 1 1`): keep module-level
imports to what every run needs.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.cliutil import add_common, intervals, seconds
from ..core.loader import Variant
from ..core.tracer import Tracer

if TYPE_CHECKING:
    import argparse
    from ..core.hist import Log2Histogram
    from ..sinks.snapshot import Snapshot

NAME = "softirqs"
SUMMARY = "soft IRQ time per vector, as totals or histograms"

MAX_VECS = 16        # as in softirqs.bpf.c
# kernel/softirq.c softirq_to_name[], for kernels whose BTF lacks the enum
FALLBACK_NAMES = ("hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched",
                  "hrtimer", "rcu")
_KEYS = tuple(struct.pack("<I", v) for v in range(MAX_VECS))


def vec_names() -> tuple[str, ...]:
    """softirq vector number -> name ("net_rx"), from the kernel's enum in BTF."""
    from ..core.errors import PytraceError
    from ..core.kernel_btf import enum_with_member
    try:
        enum = enum_with_member("NET_RX_SOFTIRQ")
    except PytraceError:
        enum = {}
    names = {v: n[:-len("_SOFTIRQ")].lower() for v, n in enum.items()
             if n.endswith("_SOFTIRQ") and 0 <= v < MAX_VECS}
    if not names:
        return FALLBACK_NAMES
    return tuple(names.get(v, str(v)) for v in range(max(names) + 1))


@dataclass(frozen=True, slots=True)
class SoftIrqStat:
    vec: int
    name: str                       # "net_rx"
    count: int                      # softirq runs that ended in the period
    total_ns: int                   # their total time
    hist: "Log2Histogram | None"    # dist=True: time per run (usecs, or nsecs with ns=True)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"vec": self.vec, "softirq": self.name, "count": self.count,
                             "total_ns": self.total_ns}
        if self.hist is not None:
            d["hist"] = self.hist.to_dict()
        return d


class SoftIrqs(Tracer):
    OBJECT = "softirqs"
    VARIANTS = (
        Variant("tp_btf", ("softirqs_tp_btf_entry", "softirqs_tp_btf_exit")),
        Variant("raw_tp", ("softirqs_raw_tp_entry", "softirqs_raw_tp_exit")),
        Variant("tracepoint", ("softirqs_tracepoint_entry", "softirqs_tracepoint_exit")),
    )

    def __init__(self, *, dist: bool = False, ns: bool = False, hook: str | None = None):
        super().__init__(hook=hook)
        self.dist, self.ns = dist, ns
        self.unit = "nsecs" if ns else "usecs"
        self.names: tuple[str, ...] = ()
        self._base: dict[int, dict] = {}

    def rodata(self) -> dict[str, Any]:
        return {"targ_dist": self.dist, "targ_ns": self.ns}

    def setup(self) -> None:
        self._stats = self.obj.map("stats")
        self.names = vec_names()

    def name(self, vec: int) -> str:
        return self.names[vec] if vec < len(self.names) else str(vec)

    def read(self, reset: bool = True) -> list[SoftIrqStat]:
        """Per vector with runs, in vector order: what happened since the last
        read(reset=True), or since the start.  The kernel's per-CPU sums are
        never cleared; periods are differences, so no run is lost between reads."""
        out = []
        for vec, key in enumerate(_KEYS):
            cur = self._stats.percpu_sum(key)
            if cur is None:
                continue
            base = self._base.get(vec)
            if reset:
                self._base[vec] = cur
            count = cur["count"] - (base["count"] if base else 0)
            if not count:
                continue
            hist = None
            if self.dist:
                from ..core.hist import Log2Histogram
                slots = cur["slots"] if base is None else \
                    tuple(a - b for a, b in zip(cur["slots"], base["slots"]))
                hist = Log2Histogram(slots, self.unit, sum(slots))
            out.append(SoftIrqStat(vec, self.name(vec), count,
                                   cur["total_ns"] - (base["total_ns"] if base else 0), hist))
        return out


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Summarize soft IRQ event time as totals or histograms."
    p.add_argument("-T", "--timestamp", action="store_true", help="include timestamp on output")
    p.add_argument("-N", "--nanoseconds", action="store_true", help="output in nanoseconds")
    p.add_argument("-d", "--dist", action="store_true", help="show distributions as histograms")
    p.add_argument("interval", nargs="?", type=seconds, help="output interval, in seconds")
    p.add_argument("count", nargs="?", type=intervals, help="number of outputs")
    add_common(p, [v.hook for v in SoftIrqs.VARIANTS])


def render(stats: list[SoftIrqStat], args: argparse.Namespace, clock: str | None = None) -> str:
    lines = [""]
    if args.timestamp:
        lines.append(f"{clock or time.strftime('%H:%M:%S'):<8}")
    if args.dist:
        for st in stats:
            if st.hist is not None and st.hist.count:
                lines.append(f"softirq = {st.name}")
                lines.append(st.hist.render())
    else:
        div = 1 if args.nanoseconds else 1000
        lines.append(f"{'SOFTIRQ':<16} {'TOTAL_' + ('nsecs' if args.nanoseconds else 'usecs'):>11}")
        # like BCC: smallest total first, so the busiest vector ends up last
        for st in sorted(stats, key=lambda s: (s.total_ns, s.vec)):
            lines.append(f"{st.name:<16} {st.total_ns // div:>11}")
    return "\n".join(lines) + "\n"


def to_json(stats: list[SoftIrqStat], args: argparse.Namespace, wall_ns: int | None = None) -> str:
    import json
    from ..core.cliutil import wall_iso
    ts = wall_iso(time.time_ns() if wall_ns is None else wall_ns)
    div = 1 if args.nanoseconds else 1000
    unit = "nsecs" if args.nanoseconds else "usecs"
    return "".join(json.dumps({"ts": ts, **st.to_dict(), f"total_{unit}": st.total_ns // div},
                              separators=(",", ":")) + "\n" for st in stats)


# -- snapshots: what the sinks get each interval, and what replay renders -------

def snapshot(stats: list[SoftIrqStat], interval: int | None) -> "Snapshot":
    from ..sinks.snapshot import Series, Snapshot
    return Snapshot.now(NAME, [Series.of({"softirq": st.name, "vec": st.vec},
                                         {"count": st.count, "total_ns": st.total_ns}, st.hist)
                               for st in stats], interval)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing soft irq event time... Hit Ctrl-C to end.\n"


def render_snapshot(snap: "Snapshot", args: argparse.Namespace) -> str:
    from ..core.aggregate import local_time
    stats = []
    for s in snap.series:
        v = dict(s.values)
        stats.append(SoftIrqStat(int(s.label("vec")), s.label("softirq"), v["count"], v["total_ns"], s.hist))
    return to_json(stats, args, snap.time_ns) if args.json else render(stats, args, local_time(snap))


def run(args: argparse.Namespace) -> int:
    from ..core.aggregate import print_loop
    with SoftIrqs(dist=args.dist, ns=args.nanoseconds, hook=args.hook) as tracer:
        return print_loop(args, lambda: snapshot(tracer.read(), args.interval), render_snapshot, intro)
