"""qdisclat: queueing latency histograms per qdisc and device.

Library:

    from pytrace.tools.qdisclat import QdiscLat
    with QdiscLat(dev="eth0") as t:
        time.sleep(10)
        for q in t.histograms():               # QdiscLatency, frozen
            print(q.kind, q.handle_text, q.dev, q.hist.count, q.hist.average)
            print(q.hist.render())

The time each packet spent in a queueing discipline, from qdisc_enqueue to
qdisc_dequeue (the book's qdisc-fq.bt, qdisc-codel.bt... for every qdisc
kind at once).  Not seen: packets sent on the bypass path (a qdisc that
allows it, such as pfifo_fast, hands a packet that finds the queue empty
straight to the driver, without enqueue/dequeue) and devices without a
qdisc (noqueue: veth, lo).  A bulk dequeue reports only its first packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.aggregate import add_interval_args, check_interval_args, json_lines, print_loop, timestamp_line
from ..core.cliutil import add_common
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.net import comm_text
from ..core.netdev import add_device_args, check_device_args, dev_label, device_rodata
from ..core.socklayer import histograms
from ..core.tracer import Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "qdisclat"
SUMMARY = "queueing latency histograms per qdisc and device (enqueue to dequeue)"
# every variant pairs the qdisc:qdisc_enqueue tracepoint (features.NEEDS) with qdisc_dequeue
ENQUEUE = "tracepoint qdisc_enqueue"

TC_H_ROOT = 0xFFFFFFFF


def handle_text(handle: int) -> str:
    """tc's notation: 8001: for 0x80010000, 1:10 for 0x00010010."""
    if handle == TC_H_ROOT:
        return "root"
    major, minor = handle >> 16, handle & 0xFFFF
    return f"{major:x}:{minor:x}" if minor else f"{major:x}:"


@dataclass(frozen=True, slots=True)
class QdiscLatency:
    kind: str                  # "tbf", "fq_codel", ...
    handle: int
    parent: int
    dev: str
    netns: int
    hist: Log2Histogram

    @property
    def handle_text(self) -> str:
        return handle_text(self.handle)

    @property
    def parent_text(self) -> str:
        return handle_text(self.parent)

    def to_dict(self) -> dict[str, Any]:
        return {"qdisc": self.kind, "handle": self.handle_text, "parent": self.parent_text, "dev": self.dev,
                "netns": self.netns, **self.hist.to_dict()}


class QdiscLat(Tracer):
    OBJECT = "qdisclat"
    VARIANTS = (
        Variant("tp_btf", ("qdisclat_tp_btf_enqueue", "qdisclat_tp_btf_dequeue"), needs=ENQUEUE),
        Variant("raw_tp", ("qdisclat_raw_tp_enqueue", "qdisclat_raw_tp_dequeue"), needs=ENQUEUE),
        Variant("tracepoint", ("qdisclat_tracepoint_enqueue", "qdisclat_tracepoint_dequeue"), needs=ENQUEUE),
    )

    def __init__(self, *, dev: str | None = None, netns: int = 0, ns: bool = False, hook: str | None = None):
        super().__init__(hook=hook)
        self.dev, self.netns, self.ns = dev, netns, ns
        self.unit = "nsecs" if ns else "usecs"

    def rodata(self) -> dict[str, Any]:
        return {**device_rodata(self.dev, self.netns), "targ_ns": self.ns}

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> list[QdiscLatency]:
        raw = histograms(self._hists, self.unit, lambda k: (comm_text(k["kind"]), k["handle"], k["parent"],
                                                            comm_text(k["dev.name"]), k["dev.netns"]), clear)
        return sorted((QdiscLatency(*key, h) for key, h in raw.items()),
                      key=lambda q: (q.netns, q.dev, q.handle))

    def snapshot(self, clear: bool = False, interval: float | None = None) -> Snapshot:
        return Snapshot.now(NAME, [Series.of({"qdisc": q.kind, "handle": q.handle_text, "parent": q.parent_text,
                                              "dev": q.dev, "netns": q.netns}, hist=q.hist)
                                   for q in self.histograms(clear)], interval)


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Queueing latency per qdisc and device, from qdisc_enqueue to qdisc_dequeue of the same "
                     "packet (every qdisc kind, unlike the book's per-kind qdisc-*.bt). Packets on the bypass "
                     "path (an empty work-conserving qdisc such as pfifo_fast sends at once) and devices "
                     "without a qdisc (noqueue: veth, lo) are not seen; a bulk dequeue counts its first "
                     "packet only.")
    add_device_args(p)
    p.add_argument("-N", "--nanoseconds", action="store_true", help="histograms in nanoseconds")
    add_interval_args(p)
    add_common(p, [v.hook for v in QdiscLat.VARIANTS])


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing qdisc enqueue-to-dequeue latency. Hit Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    if args.json:
        return json_lines(snap)
    parts = [timestamp_line(snap, args)]
    for s in snap.series:
        parts.append(f"qdisc {s.label('qdisc')} {s.label('handle')} parent {s.label('parent')} dev "
                     f"{dev_label(s.label('dev'), int(s.label('netns')))}:\n{s.hist.render()}\n")
    return "".join(parts)


def run(args: argparse.Namespace) -> int:
    check_interval_args(args)
    check_device_args(args)
    tracer = QdiscLat(dev=args.dev, netns=args.netns_id, ns=args.nanoseconds, hook=args.hook)
    with tracer:
        return print_loop(args, lambda: tracer.snapshot(clear=bool(args.interval), interval=args.interval),
                          render_snapshot, intro)
