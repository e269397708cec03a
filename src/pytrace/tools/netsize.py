"""netsize: packet size histograms per network device, received and sent,
before and after GRO/GSO.

Library:

    from pytrace.tools.netsize import NetSize
    with NetSize(dev="eth0") as t:
        time.sleep(10)
        for k, h in t.histograms().items():      # NetSizeKey: Log2Histogram
            print(k.dev, k.kind, h.count)
            print(h.render())

kind is where the size was taken (the book's netsize.bt):
  recv      netif_receive_skb: received, after GRO merged segments
  send      net_dev_queue: sent, before GSO/TSO split it
  nic_recv  napi_gro_receive_entry: received as the NIC delivered it (NAPI devices)
  nic_send  net_dev_xmit: handed to the driver (one super-packet with TSO)
Sizes are skb->len in bytes: with the link-layer header on transmit,
without it on receive.
"""

from __future__ import annotations

from ..core import convert
from ..cli.aggregate import timestamp_line
from ..core.loader import Variant
from ..spec.devices import dev_label, device_options, device_rodata
from ..core.socklayer import keyed_histograms
from ..core.tracer import Tracer
from ..spec import HISTOGRAM, EventType, ToolSpec, interval_flags, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KINDS = ("recv", "send", "nic_recv", "nic_send")     # as src/bpf/netsize.bpf.c
WHERE = {"recv": "netif_receive_skb, after GRO", "send": "net_dev_queue, before GSO",
         "nic_recv": "napi_gro_receive_entry, before GRO", "nic_send": "net_dev_xmit, to the driver"}


def kind_value(v: int) -> str:
    return KINDS[v] if v < len(KINDS) else str(v)


convert.register(convert.Conversion("netsize_kind", kind_value, None, convert.text_parse, kind="str"))

# The hists map's key (struct netsize_key)
NETSIZE_KEY = EventType("NetSizeKey", struct="netsize_key", doc="The device and point a histogram is for.",
                        fields="""
    dev <- dev.name: text
    netns <- dev.netns          # the device's network namespace (inode)
    kind: netsize_kind          # recv, send, nic_recv, nic_send
""")


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

    def histograms(self, clear: bool = False) -> dict:
        """{NetSizeKey: size histogram in bytes}, by namespace, device, then kind."""
        hists = keyed_histograms(self._hists, "bytes", NETSIZE_KEY.cls, clear)
        order = {k: i for i, k in enumerate(KINDS)}
        return dict(sorted(hists.items(), key=lambda kh: (kh[0].netns, kh[0].dev, order.get(kh[0].kind, 9))))


__getattr__ = public_classes(__name__, NetSizeKey=NETSIZE_KEY)


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + "".join(
        f"dev {dev_label(k.dev, k.netns)}: {k.kind}_bytes ({WHERE.get(k.kind, '?')})\n{h.render()}\n"
        for k, h in SPEC.histograms(snap))


SPEC = ToolSpec(
    "netsize", "packet size histograms per device, rx/tx, before and after GRO/GSO", NetSize, HISTOGRAM,
    description=("Packet size histograms per network device: recv (after GRO), send (before GSO), "
                 "nic_recv (before GRO, NAPI devices) and nic_send (to the driver), as the book's "
                 "netsize.bt.  Sizes are skb->len: link-layer header included on transmit only."),
    event=NETSIZE_KEY,
    options=(*device_options(), *interval_flags(), timestamp()),
    read=lambda tracer, args: tracer.histograms(clear=bool(args.interval)),
    text=text,
    intro="Tracing net device send/receive. Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace netsize", "histograms of every device, at Ctrl-C"),
        ("pytrace netsize -D eth0 -i 1 -T", "device eth0, every second, with the time"),
        ("pytrace netsize --netns-id 4026531840", "only devices of that network namespace"),
        ("pytrace netsize --json", "one JSON object per device and point"),
    ),
)
