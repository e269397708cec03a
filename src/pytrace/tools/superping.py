"""superping: ICMP echo (ping) latency measured in the kernel, IPv4 and IPv6.

Library:

    from pytrace.tools.superping import SuperPing
    with SuperPing() as t:
        for p in t.events(duration=10):
            print(p.family, p.daddr, p.id, p.seq, p.latency_us)

Any ping tool (or raw ICMP socket) on the host is measured: the time from
the echo request leaving to the matching echo reply arriving, taken in the
kernel so the ping process's own scheduling delay is not included.  With
kprobes (the book's superping.bt) the points are __ip_local_out/icmp_rcv; on
kernels without them, net_dev_queue/netif_receive_skb: the device level,
which includes the qdisc and excludes the local IP stack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (Clock, LATENCY_NOTE, Output, add_common, add_container_args, add_family_args,
                            container_filters, family_of, json_renderer, process_id, stream_events)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "superping"
SUMMARY = "ICMP echo latency measured in the kernel, IPv4 and IPv6"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PingReply:
    ts_ns: int                 # CLOCK_MONOTONIC of the reply
    family: int
    id: int                    # ICMP echo identifier
    seq: int
    latency_ns: int
    saddr: Addr                # this host (the request's source)
    daddr: Addr                # the pinged host
    netns: int                 # network namespace inode of the ping
    pid: int                   # process that sent the request
    comm: str
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    labels: Labels | None = None

    @property
    def latency_us(self) -> float:
        return self.latency_ns / 1000

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "ip": 4 if self.family == AF_INET else 6, "id": self.id, "seq": self.seq,
                "latency_us": round(self.latency_ns / 1000, 3), "saddr": str(self.saddr),
                "daddr": str(self.daddr), "netns": self.netns, "pid": self.pid, "comm": self.comm,
                **(self.labels.to_dict() if self.labels else {})}


class SuperPing(EventTracer):
    OBJECT = "superping"
    EVENT = "superping_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("superping_kprobe_ip_send", "superping_kprobe_ip6_send", "superping_kprobe_icmp_rcv",
                           "superping_kprobe_icmpv6_rcv")),
        Variant("tp_btf", ("superping_tp_btf_queue", "superping_tp_btf_receive"), note="device level"),
        Variant("raw_tp", ("superping_raw_tp_queue", "superping_raw_tp_receive"), note="device level"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, **kw: Any):
        super().__init__(**kw)
        self.pid, self.family = pid, family

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "target_family": self.family}

    def make_event(self, raw: tuple) -> PingReply:
        i = self.idx
        fam = raw[i["family"]]
        return PingReply(raw[i["ts_ns"]], fam, raw[i["id"]], raw[i["seq"]], raw[i["latency_ns"]],
                         addr_obj(fam, raw[i["saddr"]]), addr_obj(fam, raw[i["daddr"]]), raw[i["netns"]],
                         raw[i["pid"]], comm_text(raw[i["comm"]]), *self.owner(raw, netns=False))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Measure ICMP echo (ping) latency in the kernel, from request out to reply in, for "
                     "any ping on this host (IPv4 and IPv6). With kprobes: __ip_local_out (ip6_send_skb) -> icmp_rcv, as "
                     "the book's superping.bt; without: at device level (net_dev_queue -> "
                     f"netif_receive_skb), which includes the qdisc. {LATENCY_NOTE}")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only pings sent by this process")
    add_family_args(p)
    p.add_argument("-T", "--timestamp", action="store_true", help="include a HH:MM:SS prefix")
    p.add_argument("-w", "--wide", action="store_true", help="also show the hosts, netns and the ping process")
    add_container_args(p, SuperPing)
    add_common(p, [v.hook for v in SuperPing.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = SuperPing(pid=args.pid, family=family_of(args), hook=args.hook, **container_filters(args))
    out = Output(args.json)
    with tracer:
        if not args.json:
            out.write("Tracing ICMP echo request latency. Hit Ctrl-C to end.\n")
        return stream_events(tracer, out, renderer(tracer, args, out))


def renderer(source: SuperPing, args: argparse.Namespace, out: Output):
    if args.json:
        return json_renderer(source)
    i = source.idx
    i_fam, i_id, i_seq, i_lat, i_ts = i["family"], i["id"], i["seq"], i["latency_ns"], i["ts_ns"]
    addr, clock = AddrFormatter(), Clock()

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam = r[i_fam]
            line = f"IPv{4 if fam == AF_INET else 6} ping, ID {r[i_id]} seq {r[i_seq]}: {r[i_lat] // 1000} us"
            if args.wide:
                line += (f"  {addr(fam, r[i['saddr']])} -> {addr(fam, r[i['daddr']])} netns {r[i['netns']]} "
                         f"pid {r[i['pid']]} {comm_text(r[i['comm']])}")
            if args.timestamp:
                line = f"{clock.hms(r[i_ts])} {line}"
            lines.append(line + "\n")
        return "".join(lines)
    return render
