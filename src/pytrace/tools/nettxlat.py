"""nettxlat: network device transmit latency histograms, per device.

Library:

    from pytrace.tools.nettxlat import NetTxLat
    with NetTxLat(dev="eth0") as t:
        time.sleep(10)
        for d in t.histograms():              # DeviceTxLatency, frozen
            print(d.dev, d.hist.count, d.hist.average)
            print(d.hist.render())

The time from a packet being handed to the driver (net:net_dev_start_xmit)
to the driver freeing it once sent (skb:consume_skb), as the book's
nettxlat.bt.  Only real NICs complete transmits this way: veth and lo have
no TX completion (the skb goes on to the receiving side and is consumed
whenever that side is done with it), so on them the number is meaningless
as a transmit latency.
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

NAME = "nettxlat"
SUMMARY = "device transmit latency histograms (driver start to TX completion)"

NO_COMPLETION = ("veth and lo have no TX completion: their skbs are consumed by the receiving side, "
                 "so on them this is NOT a transmit latency (the number is meaningless there); "
                 "use a real NIC")


@dataclass(frozen=True, slots=True)
class DeviceTxLatency:
    dev: str
    netns: int
    hist: Log2Histogram

    def to_dict(self) -> dict[str, Any]:
        return {"dev": self.dev, "netns": self.netns, **self.hist.to_dict()}


class NetTxLat(Tracer):
    OBJECT = "nettxlat"
    VARIANTS = (
        Variant("tp_btf", ("nettxlat_tp_btf_start", "nettxlat_tp_btf_consume", "nettxlat_tp_btf_queue")),
        Variant("raw_tp", ("nettxlat_raw_tp_start", "nettxlat_raw_tp_consume", "nettxlat_raw_tp_queue")),
        Variant("tracepoint", ("nettxlat_tracepoint_start", "nettxlat_tracepoint_consume",
                               "nettxlat_tracepoint_queue")),
    )

    def __init__(self, *, dev: str | None = None, netns: int = 0, ns: bool = False, hook: str | None = None):
        super().__init__(hook=hook)
        self.dev, self.netns, self.ns = dev, netns, ns
        self.unit = "nsecs" if ns else "usecs"

    def rodata(self) -> dict[str, Any]:
        return {**device_rodata(self.dev, self.netns), "targ_ns": self.ns}

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> list[DeviceTxLatency]:
        raw = histograms(self._hists, self.unit, lambda k: (comm_text(k["name"]), k["netns"]), clear)
        return sorted((DeviceTxLatency(dev, ns, h) for (dev, ns), h in raw.items()),
                      key=lambda d: (d.netns, d.dev))

    def snapshot(self, clear: bool = False, interval: float | None = None) -> Snapshot:
        return Snapshot.now(NAME, [Series.of({"dev": d.dev, "netns": d.netns}, hist=d.hist)
                                   for d in self.histograms(clear)], interval)


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Device transmit latency per device: from net_dev_start_xmit (handed to the driver) "
                     "to consume_skb (freed by the driver after sending), as the book's nettxlat.bt. "
                     f"NOTE: {NO_COMPLETION}.")
    add_device_args(p)
    p.add_argument("-N", "--nanoseconds", action="store_true", help="histograms in nanoseconds")
    add_interval_args(p)
    add_common(p, [v.hook for v in NetTxLat.VARIANTS])


def intro(args: argparse.Namespace) -> str:
    if args.json:
        return ""
    return f"Tracing net device xmit queue latency. Hit Ctrl-C to end.\n(Note: {NO_COMPLETION}.)\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    if args.json:
        return json_lines(snap)
    parts = [timestamp_line(snap, args)]
    for s in snap.series:
        parts.append(f"dev {dev_label(s.label('dev'), int(s.label('netns')))}:\n{s.hist.render()}\n")
    return "".join(parts)


def run(args: argparse.Namespace) -> int:
    check_interval_args(args)
    check_device_args(args)
    tracer = NetTxLat(dev=args.dev, netns=args.netns_id, ns=args.nanoseconds, hook=args.hook)
    with tracer:
        return print_loop(args, lambda: tracer.snapshot(clear=bool(args.interval), interval=args.interval),
                          render_snapshot, intro)
