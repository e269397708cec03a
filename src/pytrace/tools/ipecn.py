"""ipecn: received IPv4/IPv6 packets marked ECN Congestion Experienced.

Library:

    from pytrace.tools.ipecn import IpEcn
    with IpEcn() as t:
        for p in t.events(duration=10):            # EcnPacket
            print(p.ecn, p.saddr, p.sport, p.daddr, p.dport, p.dev)

A router or the sender marks a packet CE (ECN field 3 in the IPv4 TOS or
the IPv6 traffic class) when congestion builds up: seeing them means a
queue on the path is filling.  With all_ect=True (-a) packets marked
ECT(0)/ECT(1) (ECN-capable, no congestion) are reported too.
"""

from __future__ import annotations

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE, netns_inode
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..spec import EVENTS, EventType, Option, ToolSpec, family, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ECN_NAMES = ("Not-ECT", "ECT(1)", "ECT(0)", "CE")


def ecn_value(v: int) -> str:
    """The ECN codepoint's name (RFC 3168)."""
    return ECN_NAMES[v & 3]


convert.register(convert.Conversion("ecn", ecn_value, None, convert.text_parse, kind="str",
                                    text=("s", "_ecn_names[{0} & 3]"),
                                    env={"_ecn_names": tuple(n.encode() for n in ECN_NAMES)}))

# struct ipecn_event of src/bpf/ipecn.bpf.c; build.py generates EcnPacket
IPECN_EVENT = EventType("EcnPacket", struct="ipecn_event", doc="A received IP packet with an ECN mark.", fields="""
    ts_ns                       # CLOCK_MONOTONIC of the packet
    family: family
    ecn: ecn                    # CE, or with all_ect ECT(0)/ECT(1)
    dscp
    protocol <- proto: ip_protocol
    saddr: address
    sport                       # TCP/UDP only, else 0
    daddr: address
    dport
    length <- len               # the IP length
    dev: text                   # the receiving device
    ifindex
    netns                       # the device's network namespace (inode)
    -pad
""")


class IpEcn(EventTracer):
    OBJECT = "ipecn"
    EVENT_TYPE = IPECN_EVENT
    VARIANTS = (
        Variant("kprobe", ("ipecn_kprobe_ip_rcv", "ipecn_kprobe_ipv6_rcv")),
        Variant("tp_btf", ("ipecn_tp_btf",)),
        Variant("raw_tp", ("ipecn_raw_tp",)),
        Variant("tracepoint", ("ipecn_tracepoint",)),
    )

    def __init__(self, *, all_ect: bool = False, family: int = 0, netns: int = 0, **kw: Any):
        super().__init__(**kw)
        self.all_ect, self.family, self.netns = all_ect, family, netns

    def rodata(self) -> dict[str, Any]:
        return {"any_ect": self.all_ect, "target_family": self.family, "target_netns": self.netns}


__getattr__ = public_classes(__name__, EcnPacket=IPECN_EVENT)


# -- the text: 'HH:MM:SS ECN CE from: SADDR' as the book's tool, then where it went ---------

_TEXT = ("ts_ns", "family", "ecn", "proto", "saddr", "sport", "daddr", "dport", "dev")


def text(source: Any, args: Any, out: Any):
    from ..core.rows import compile_rows, field_variable
    from ..spec.text import _time_env
    source.project(set(_TEXT))
    v = {n: field_variable(n) for n in _TEXT}
    addr = convert.get("address").text[1]
    context: dict = {}
    env = {**convert.text_env(context), **_time_env(context), "_ecn_names": tuple(n.encode() for n in ECN_NAMES),
           "_proto": _ShortProtocols(), "_fmt": b"%s ECN %s from: %s to: %s %s%s dev %s\n"}
    expr = (f"_fmt % (_hms({v['ts_ns']}), _ecn_names[{v['ecn']} & 3], {addr.format(v['saddr'], v['family'])}, "
            f"{addr.format(v['daddr'], v['family'])}, _proto[{v['proto']}], "
            f"(b' %d > %d' % ({v['sport']}, {v['dport']}) if {v['proto']} in (6, 17) else b''), "
            f"(_cget({v['dev']}) or _comm_of({v['dev']})))")
    rows = compile_rows(source.raw_fields, expr, env)

    def render(batch: list[tuple]) -> bytes:
        return b"".join(rows(batch))
    return render


class _ShortProtocols(dict):
    """IP protocol number -> b"UDP" (its IPPROTO_ name without the prefix)."""

    def __missing__(self, key: int) -> bytes:
        name = getattr(convert.ip_protocol_value(key), "name", f"IPPROTO_{key}")
        out = self[key] = name.removeprefix("IPPROTO_").encode()
        return out


def intro(args: Any) -> str:
    what = "ECN-marked" if args.all_ect else "ECN Congestion Encountered"
    return f"Tracing inbound IPv4/IPv6 {what} packets. Hit Ctrl-C to end.\n"


SPEC = ToolSpec(
    "ipecn", "received IP packets marked ECN Congestion Experienced", IpEcn, EVENTS,
    description=("Trace received IPv4/IPv6 packets marked ECN Congestion Experienced (as the book's "
                 f"ipecn.bt, plus IPv6, ports and device). {LATENCY_NOTE}"),
    event=IPECN_EVENT,
    options=(
        Option("-a", "--all-ect", action="store_true", kw="all_ect",
               help="also packets marked ECT(0)/ECT(1) (ECN-capable, not congested)"),
        family(),
        Option("--netns-id", type=netns_inode, default=0, metavar="INODE", kw="netns",
               help="only packets received in this network namespace (inode, as ls -Li /proc/PID/ns/net)"),
    ),
    text=text,
    intro=intro,
    examples=(
        ("pytrace ipecn", "every received packet marked CE"),
        ("pytrace ipecn -a", "also packets marked ECT(0) or ECT(1)"),
        ("pytrace ipecn -6", "IPv6 only"),
        ("pytrace ipecn --netns-id 4026531840", "only packets received in that network namespace"),
        ("pytrace ipecn --json", "one JSON object per packet"),
    ),
)
