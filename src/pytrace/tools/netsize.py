"""netsize: packet size histograms per network device, received and sent,
before and after GRO/GSO.

Library:

    from pytrace.tools.netsize import NetSize
    with NetSize(dev="eth0") as t:
        time.sleep(10)
        for h in t.histograms():              # DeviceSizes, frozen
            print(h.dev, h.kind, h.hist.count)
            print(h.hist.render())

kind is where the size was taken (the book's netsize.bt):
  recv      netif_receive_skb: received, after GRO merged segments
  send      net_dev_queue: sent, before GSO/TSO split it
  nic_recv  napi_gro_receive_entry: received as the NIC delivered it (NAPI devices)
  nic_send  net_dev_xmit: handed to the driver (one super-packet with TSO)
Sizes are skb->len in bytes: with the link-layer header on transmit,
without it on receive.
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

NAME = "netsize"
SUMMARY = "packet size histograms per device, rx/tx, before and after GRO/GSO"

KINDS = ("recv", "send", "nic_recv", "nic_send")     # as src/bpf/netsize.bpf.c
WHERE = {"recv": "netif_receive_skb, after GRO", "send": "net_dev_queue, before GSO",
         "nic_recv": "napi_gro_receive_entry, before GRO", "nic_send": "net_dev_xmit, to the driver"}


@dataclass(frozen=True, slots=True)
class DeviceSizes:
    dev: str
    netns: int                 # network namespace inode of the device
    kind: str                  # recv, send, nic_recv, nic_send
    hist: Log2Histogram        # unit "bytes"

    def to_dict(self) -> dict[str, Any]:
        return {"dev": self.dev, "netns": self.netns, "kind": self.kind, **self.hist.to_dict()}


class NetSize(Tracer):
    OBJECT = "netsize"
    VARIANTS = (
        Variant("tp_btf", tuple(f"netsize_tp_btf_{k}" for k in KINDS)),
        Variant("raw_tp", tuple(f"netsize_raw_tp_{k}" for k in KINDS)),
    )

    def __init__(self, *, dev: str | None = None, netns: int = 0, hook: str | None = None):
        super().__init__(hook=hook)
        self.dev, self.netns = dev, netns

    def rodata(self) -> dict[str, Any]:
        return device_rodata(self.dev, self.netns)

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> list[DeviceSizes]:
        """One histogram per device and kind, by device then kind."""
        raw = histograms(self._hists, "bytes",
                         lambda k: (comm_text(k["dev.name"]), k["dev.netns"], k["kind"]), clear)
        out = [DeviceSizes(dev, ns, KINDS[kind] if kind < len(KINDS) else str(kind), h)
               for (dev, ns, kind), h in raw.items()]
        return sorted(out, key=lambda d: (d.netns, d.dev, KINDS.index(d.kind) if d.kind in KINDS else 9))

    def snapshot(self, clear: bool = False, interval: float | None = None) -> Snapshot:
        return Snapshot.now(NAME, [Series.of({"dev": d.dev, "netns": d.netns, "kind": d.kind}, hist=d.hist)
                                   for d in self.histograms(clear)], interval)


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Packet size histograms per network device: recv (after GRO), send (before GSO), "
                     "nic_recv (before GRO, NAPI devices) and nic_send (to the driver), as the book's "
                     "netsize.bt.  Sizes are skb->len: link-layer header included on transmit only.")
    add_device_args(p)
    add_interval_args(p)
    add_common(p, [v.hook for v in NetSize.VARIANTS])


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing net device send/receive. Hit Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    if args.json:
        return json_lines(snap)
    parts = [timestamp_line(snap, args)]
    for s in snap.series:
        kind = s.label("kind")
        parts.append(f"dev {dev_label(s.label('dev'), int(s.label('netns')))}: {kind}_bytes "
                     f"({WHERE.get(kind, '?')})\n{s.hist.render()}\n")
    return "".join(parts)


def run(args: argparse.Namespace) -> int:
    check_interval_args(args)
    check_device_args(args)
    tracer = NetSize(dev=args.dev, netns=args.netns_id, hook=args.hook)
    with tracer:
        return print_loop(args, lambda: tracer.snapshot(clear=bool(args.interval), interval=args.interval),
                          render_snapshot, intro)
