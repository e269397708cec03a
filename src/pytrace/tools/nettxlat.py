"""nettxlat: network device transmit latency histograms, per device.

Library:

    from pytrace.tools.nettxlat import NetTxLat
    with NetTxLat(dev="eth0") as t:
        time.sleep(10)
        for d, h in t.histograms().items():       # DeviceKey: Log2Histogram
            print(d.dev, d.netns, h.count, h.average)
            print(h.render())

The time from a packet being handed to the driver (net:net_dev_start_xmit)
to the driver freeing it once sent (skb:consume_skb), as the book's
nettxlat.bt.  Only real NICs complete transmits this way: veth and lo have
no TX completion (the skb goes on to the receiving side and is consumed
whenever that side is done with it), so on them the number is meaningless
as a transmit latency.
"""

from __future__ import annotations

from ..cli.aggregate import timestamp_line
from ..core.loader import Variant
from ..spec.devices import dev_label, device_options, device_rodata
from ..core.socklayer import keyed_histograms
from ..core.tracer import Tracer
from ..spec import HISTOGRAM, EventType, Option, ToolSpec, interval_flags, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NO_COMPLETION = ("veth and lo have no TX completion: their skbs are consumed by the receiving side, "
                 "so on them this is NOT a transmit latency (the number is meaningless there); "
                 "use a real NIC")

# The hists map's key (struct dev_id of skbinfo.h)
DEVICE_KEY = EventType("DeviceKey", struct="dev_id", doc="The device a histogram is for.", fields="""
    dev <- name: text
    netns                       # the device's network namespace (inode)
""")


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

    def histograms(self, clear: bool = False) -> dict:
        """{DeviceKey: transmit latency histogram}, by namespace then device."""
        hists = keyed_histograms(self._hists, self.unit, DEVICE_KEY.cls, clear)
        return dict(sorted(hists.items(), key=lambda kh: (kh[0].netns, kh[0].dev)))


__getattr__ = public_classes(__name__, DeviceKey=DEVICE_KEY)


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + "".join(f"dev {dev_label(d.dev, d.netns)}:\n{h.render()}\n"
                                                for d, h in SPEC.histograms(snap))


SPEC = ToolSpec(
    "nettxlat", "device transmit latency histograms (driver start to TX completion)", NetTxLat, HISTOGRAM,
    description=("Device transmit latency per device: from net_dev_start_xmit (handed to the driver) "
                 "to consume_skb (freed by the driver after sending), as the book's nettxlat.bt. "
                 f"NOTE: {NO_COMPLETION}."),
    event=DEVICE_KEY,
    options=(
        *device_options(),
        Option("-N", "--nanoseconds", action="store_true", kw="ns", help="histograms in nanoseconds"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: tracer.histograms(clear=bool(args.interval)),
    text=text,
    intro=f"Tracing net device xmit queue latency. Hit Ctrl-C to end.\n(Note: {NO_COMPLETION}.)\n",
    examples=(
        ("pytrace nettxlat", "a histogram per device, at Ctrl-C"),
        ("pytrace nettxlat -D eth0 -i 1", "device eth0, every second"),
        ("pytrace nettxlat -N -T -i 5 -c 3", "in nanoseconds, every 5 seconds, 3 times"),
        ("pytrace nettxlat --json", "one JSON object per device"),
    ),
)
