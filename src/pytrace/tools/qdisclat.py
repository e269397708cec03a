"""qdisclat: queueing latency histograms per qdisc and device.

Library:

    from pytrace.tools.qdisclat import QdiscLat
    with QdiscLat(dev="eth0") as t:
        time.sleep(10)
        for q, h in t.histograms().items():      # QdiscKey: Log2Histogram
            print(q.qdisc, q.handle, q.parent, q.dev, h.count, h.average)
            print(h.render())

The time each packet spent in a queueing discipline, from qdisc_enqueue to
qdisc_dequeue (the book's qdisc-fq.bt, qdisc-codel.bt... for every qdisc
kind at once).  Not seen: packets sent on the bypass path (a qdisc that
allows it, such as pfifo_fast, hands a packet that finds the queue empty
straight to the driver, without enqueue/dequeue) and devices without a
qdisc (noqueue: veth, lo).  A bulk dequeue reports only its first packet.
"""

from __future__ import annotations

from ..core import convert
from ..cli.aggregate import timestamp_line
from ..core.loader import Variant
from ..spec.devices import dev_label, device_options, device_rodata
from ..core.socklayer import keyed_histograms
from ..core.tracer import Tracer
from ..spec import HISTOGRAM, EventType, Option, ToolSpec, interval_flags, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# every variant pairs the qdisc:qdisc_enqueue tracepoint (features.NEEDS) with qdisc_dequeue
ENQUEUE = "tracepoint qdisc_enqueue"

TC_H_ROOT = 0xFFFFFFFF


def handle_text(handle: int) -> str:
    """tc's notation: 8001: for 0x80010000, 1:10 for 0x00010010."""
    if handle == TC_H_ROOT:
        return "root"
    major, minor = handle >> 16, handle & 0xFFFF
    return f"{major:x}:{minor:x}" if minor else f"{major:x}:"


def handle_parse(v: Any) -> str:
    return str(v)


convert.register(convert.Conversion("tc_handle", handle_text, None, handle_parse, kind="str"))

# The hists map's key (struct qdisc_id)
QDISC_KEY = EventType("QdiscKey", struct="qdisc_id", doc="The qdisc a histogram is for.", fields="""
    qdisc <- kind: text         # "tbf", "fq_codel", ...
    handle: tc_handle           # as tc shows it: 10:, 1:10
    parent: tc_handle           # root, or the parent's handle
    dev <- dev.name: text
    netns <- dev.netns          # the device's network namespace (inode)
""")


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

    def histograms(self, clear: bool = False) -> dict:
        """{QdiscKey: queueing latency histogram}, by namespace, device, then handle."""
        hists = keyed_histograms(self._hists, self.unit, QDISC_KEY.cls, clear)
        return dict(sorted(hists.items(), key=lambda kh: (kh[0].netns, kh[0].dev, kh[0].handle)))


__getattr__ = public_classes(__name__, QdiscKey=QDISC_KEY)


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + "".join(
        f"qdisc {q.qdisc} {q.handle} parent {q.parent} dev {dev_label(q.dev, q.netns)}:\n{h.render()}\n"
        for q, h in SPEC.histograms(snap))


SPEC = ToolSpec(
    "qdisclat", "queueing latency histograms per qdisc and device (enqueue to dequeue)", QdiscLat, HISTOGRAM,
    description=("Queueing latency per qdisc and device, from qdisc_enqueue to qdisc_dequeue of the same "
                 "packet (every qdisc kind, unlike the book's per-kind qdisc-*.bt). Packets on the bypass "
                 "path (an empty work-conserving qdisc such as pfifo_fast sends at once) and devices "
                 "without a qdisc (noqueue: veth, lo) are not seen; a bulk dequeue counts its first "
                 "packet only."),
    event=QDISC_KEY,
    options=(
        *device_options(),
        Option("-N", "--nanoseconds", action="store_true", kw="ns", help="histograms in nanoseconds"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: tracer.histograms(clear=bool(args.interval)),
    text=text,
    intro="Tracing qdisc enqueue-to-dequeue latency. Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace qdisclat", "a histogram per qdisc, at Ctrl-C"),
        ("pytrace qdisclat -D eth0 -i 1", "the qdiscs of eth0, every second"),
        ("pytrace qdisclat -N -T", "in nanoseconds, with the time"),
        ("pytrace qdisclat --json", "one JSON object per qdisc"),
    ),
)
