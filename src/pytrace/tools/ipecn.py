"""ipecn: received IPv4/IPv6 packets marked ECN Congestion Experienced.

Library:

    from pytrace.tools.ipecn import IpEcn
    with IpEcn() as t:
        for p in t.events(duration=10):
            print(p.ecn_name, p.saddr, p.sport, p.daddr, p.dport, p.dev)

A router or the sender marks a packet CE (ECN field 3 in the IPv4 TOS or
the IPv6 traffic class) when congestion builds up: seeing them means a
queue on the path is filling.  With all_ect=True (-a) packets marked
ECT(0)/ECT(1) (ECN-capable, no congestion) are reported too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (LATENCY_NOTE, Clock, Output, add_common, add_family_args, family_of, json_renderer,
                            netns_inode, stream_events)
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.socklayer import protocol_name
from ..core.stream import EventTracer

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "ipecn"
SUMMARY = "received IP packets marked ECN Congestion Experienced"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
ECN_NAMES = ("Not-ECT", "ECT(1)", "ECT(0)", "CE")


@dataclass(frozen=True, slots=True)
class EcnPacket:
    ts_ns: int
    family: int
    ecn: int                   # 3 CE, 2 ECT(0), 1 ECT(1)
    dscp: int
    protocol: int              # IPPROTO_*
    saddr: Addr
    sport: int                 # TCP/UDP only, else 0
    daddr: Addr
    dport: int
    length: int                # IP length
    dev: str                   # receiving device
    ifindex: int
    netns: int                 # its network namespace (inode)

    @property
    def ecn_name(self) -> str:
        return ECN_NAMES[self.ecn & 3]

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "ip": 4 if self.family == AF_INET else 6, "ecn": self.ecn_name,
                "dscp": self.dscp, "protocol": protocol_name(self.protocol), "saddr": str(self.saddr),
                "sport": self.sport, "daddr": str(self.daddr), "dport": self.dport, "len": self.length,
                "dev": self.dev, "ifindex": self.ifindex, "netns": self.netns}


class IpEcn(EventTracer):
    OBJECT = "ipecn"
    EVENT = "ipecn_event"
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

    def make_event(self, raw: tuple) -> EcnPacket:
        i = self.idx
        fam = raw[i["family"]]
        return EcnPacket(raw[i["ts_ns"]], fam, raw[i["ecn"]], raw[i["dscp"]], raw[i["proto"]],
                         addr_obj(fam, raw[i["saddr"]]), raw[i["sport"]], addr_obj(fam, raw[i["daddr"]]),
                         raw[i["dport"]], raw[i["len"]], comm_text(raw[i["dev"]]), raw[i["ifindex"]],
                         raw[i["netns"]])


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Trace received IPv4/IPv6 packets marked ECN Congestion Experienced (as the book's "
                      "ipecn.bt, plus IPv6, ports and device). " + LATENCY_NOTE)
    p.add_argument("-a", "--all-ect", action="store_true",
                   help="also packets marked ECT(0)/ECT(1) (ECN-capable, not congested)")
    add_family_args(p)
    p.add_argument("--netns-id", type=netns_inode, default=0, metavar="INODE",
                   help="only packets received in this network namespace (inode, as ls -Li /proc/PID/ns/net)")
    add_common(p, [v.hook for v in IpEcn.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = IpEcn(all_ect=args.all_ect, family=family_of(args),
                   netns=args.netns_id, hook=args.hook)
    out = Output(args.json)
    with tracer:
        if not args.json:
            what = "ECN-marked" if args.all_ect else "ECN Congestion Encountered"
            out.write(f"Tracing inbound IPv4/IPv6 {what} packets. Hit Ctrl-C to end.\n")
        return stream_events(tracer, out, renderer(tracer, args, out))


def renderer(source: IpEcn, args: argparse.Namespace, out: Output):
    """'HH:MM:SS ECN CE from: SADDR' as the book's tool, then where it went."""
    if args.json:
        return json_renderer(source)
    addr, clock = AddrFormatter(), Clock()
    i = source.idx

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam, proto = r[i["family"]], r[i["proto"]]
            pname = protocol_name(proto).replace("IPPROTO_", "")
            ports = f" {r[i['sport']]} > {r[i['dport']]}" if proto in (6, 17) else ""
            lines.append(f"{clock.hms(r[i['ts_ns']])} ECN {ECN_NAMES[r[i['ecn']] & 3]} from: "
                         f"{addr(fam, r[i['saddr']])} to: {addr(fam, r[i['daddr']])} {pname}{ports} "
                         f"dev {comm_text(r[i['dev']])}\n")
        return "".join(lines)
    return render
