"""superping: ICMP echo (ping) latency measured in the kernel, IPv4 and IPv6.

Library:

    from pytrace.tools.superping import SuperPing
    with SuperPing() as t:
        for p in t.events(duration=10):            # PingReply
            print(p.family, p.daddr, p.id, p.seq, p.latency_ns)

Any ping tool (or raw ICMP socket) on the host is measured: the time from
the echo request leaving to the matching echo reply arriving, taken in the
kernel so the ping process's own scheduling delay is not included.  With
kprobes (the book's superping.bt) the points are __ip_local_out/icmp_rcv; on
kernels without them, net_dev_queue/netif_receive_skb: the device level,
which includes the qdisc and excludes the local IP stack.

One ping is one reply: the round trip seen from the namespace that sent it.
At device level a request that crosses namespaces (veth, a router, a bridge,
VXLAN) passes devices in each; with crossings=True (-w) the reply's arrival
in each of those is reported too, as a crossing (crossing=True), with the
time since the request left that namespace: inner hops come first, the
round trip last.
"""

from __future__ import annotations

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, EventType, Option, ToolSpec, family, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct superping_event of src/bpf/superping.bpf.c; build.py generates PingReply
SUPERPING_EVENT = EventType("PingReply", struct="superping_event", doc="An echo reply matched to its request.",
                            fields="""
    ts_ns                       # CLOCK_MONOTONIC of the reply
    family: family
    id                          # ICMP echo identifier
    seq
    latency_ns                  # request out to reply in
    saddr: address              # this host (the request's source)
    daddr: address              # the pinged host
    netns                       # network namespace (inode) where it was measured
    pid                         # the process that sent the request
    comm: text
    crossing                    # a namespace the request crossed, not the one that sent it (-w)
    -pad
    cgroup_id                   # the sender's cgroup id (0 unless labels=True)
""")


class SuperPing(EventTracer):
    OBJECT = "superping"
    SCOPE = TASK_SCOPE | LABELS
    EVENT_TYPE = SUPERPING_EVENT
    VARIANTS = (
        Variant("kprobe", ("superping_kprobe_ip_send", "superping_kprobe_ip6_send", "superping_kprobe_icmp_rcv",
                           "superping_kprobe_icmpv6_rcv")),
        Variant("tp_btf", ("superping_tp_btf_queue", "superping_tp_btf_receive"), note="device level"),
        Variant("raw_tp", ("superping_raw_tp_queue", "superping_raw_tp_receive"), note="device level"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, crossings: bool = False, **kw: Any):
        super().__init__(**kw)
        self.pid, self.family, self.crossings = pid, family, crossings

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "target_family": self.family, "all_crossings": self.crossings}


__getattr__ = public_classes(__name__, PingReply=SUPERPING_EVENT)


# -- the text: the book's line, -w adds where and who -------------------------------------

_TEXT = ("ts_ns", "family", "id", "seq", "latency_ns", "saddr", "daddr", "netns", "pid", "comm", "crossing")


def text(source: Any, args: Any, out: Any):
    from ..core.rows import compile_rows, field_variable
    from ..spec.text import _time_env
    source.project(set(_TEXT))
    v = {n: field_variable(n) for n in _TEXT}
    addr = convert.get("address").text[1]
    context: dict = {}
    env = {**convert.text_env(context), **_time_env(context)}
    parts = ["b'IPv%d ping, ID %d seq %d: %d us' % ("
             f"(4 if {v['family']} == 2 else 6), {v['id']}, {v['seq']}, {v['latency_ns']} // 1000)"]
    if args.timestamp:
        parts.insert(0, f"_hms({v['ts_ns']}) + b' '")
    if args.wide:
        parts.append(f"b'  %s -> %s netns %d pid %d %s%s' % ({addr.format(v['saddr'], v['family'])}, "
                     f"{addr.format(v['daddr'], v['family'])}, {v['netns']}, {v['pid']}, "
                     f"(_cget({v['comm']}) or _comm_of({v['comm']})), (b' crossing' if {v['crossing']} else b''))")
    rows = compile_rows(source.raw_fields, " + ".join(parts) + " + b'\\n'", env)

    def render(batch: list[tuple]) -> bytes:
        return b"".join(rows(batch))
    return render


SPEC = ToolSpec(
    "superping", "ICMP echo latency measured in the kernel, IPv4 and IPv6", SuperPing, EVENTS,
    description=("Measure ICMP echo (ping) latency in the kernel, from request out to reply in, for any ping "
                 "on this host (IPv4 and IPv6), one line per ping. With kprobes: __ip_local_out "
                 "(ip6_send_skb) -> icmp_rcv, as the book's superping.bt; without: at device level "
                 "(net_dev_queue -> netif_receive_skb), which includes the qdisc; there -w also shows the "
                 "reply's arrival in each network namespace the request crossed (veth, router, bridge, "
                 f"VXLAN), marked 'crossing'. {LATENCY_NOTE}"),
    event=SUPERPING_EVENT,
    options=(
        pid("only pings sent by this process"),
        family(),
        timestamp("include a HH:MM:SS prefix"),
        Option("-w", "--wide", action="store_true", kw="crossings",
               help="also show the hosts, netns and the ping process, and each namespace crossing"),
    ),
    text=text,
    intro="Tracing ICMP echo request latency. Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace superping", "the round trip of every ping on this host"),
        ("pytrace superping -w", "with hosts, namespace and process, and each namespace crossing"),
        ("pytrace superping -6 -T", "IPv6 pings only, with a HH:MM:SS prefix"),
        ("pytrace superping -p 181", "only pings sent by process 181"),
        ("pytrace superping --json", "one JSON object per reply"),
    ),
)
