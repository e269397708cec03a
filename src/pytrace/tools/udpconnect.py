"""udpconnect: connect() calls on UDP sockets, with the destination.

Library:

    from pytrace.tools.udpconnect import UdpConnect
    with UdpConnect() as t:
        for ev in t.events(duration=10):          # UdpConnectCall, frozen
            print(ev.pid, ev.comm, ev.raddr, ev.rport)

Reported when the call starts, whatever its result (as the book's kprobe
on ip4/ip6_datagram_connect does); disconnects (AF_UNSPEC) are left out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import Output, container_filters, run_stream
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, addr_obj, comm_text
from ..core.socklayer import add_call_arguments, call_renderer
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "udpconnect"
SUMMARY = "connect() on UDP sockets, with the destination"


@dataclass(frozen=True, slots=True)
class UdpConnectCall:
    ts_ns: int
    pid: int
    tid: int
    comm: str
    family: int                # of the destination: AF_INET or AF_INET6
    raddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    rport: int
    lport: int                 # the local port once connect() bound the socket (autobind)
    protocol: int              # 17 UDP, 136 UDP-Lite
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "tid": self.tid, "comm": self.comm,
                "ip": 4 if self.family == AF_INET else 6, "raddr": str(self.raddr), "rport": self.rport,
                "lport": self.lport, "protocol": self.protocol,
                **(self.labels.to_dict() if self.labels else {})}


class UdpConnect(EventTracer):
    OBJECT = "udpconnect"
    EVENT = "udpconnect_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("udpconnect_kprobe_v4", "udpconnect_kprobe_v6")),
        Variant("tracepoint", ("udpconnect_tracepoint", "udpconnect_tracepoint_exit")),
    )

    def __init__(self, *, pid: int = 0, rports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.rports = pid, rports or []

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "rports": self.rports, "n_rports": len(self.rports)}

    def make_event(self, raw: tuple) -> UdpConnectCall:
        i = self.idx
        fam = raw[i["family"]]
        return UdpConnectCall(raw[i["ts_ns"]], raw[i["pid"]], raw[i["tid"]], comm_text(raw[i["comm"]]), fam,
                              addr_obj(fam, raw[i["addr"]]), raw[i["port"]], raw[i["lport"]],
                              raw[i["protocol"]], *self.owner(raw))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_call_arguments(p, UdpConnect, "Trace connect() calls on UDP sockets.", "only these destination ports",
                       timestamp=False)


def _line(ev: UdpConnectCall) -> str:
    return f"{ev.pid:<6} {ev.comm:<16} {4 if ev.family == AF_INET else 6:<2} {str(ev.raddr):<16} {ev.rport:<5}\n"


def renderer(source: UdpConnect, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the live tracer,
    or a recording standing in for it in `pytrace replay`); TIME always, as the book's tool."""
    return call_renderer(source, args, out, f"{'PID':<6} {'COMM':<16} {'IP':<2} {'RADDR':<16} {'RPORT':<5}\n",
                         _line, True)


def run(args: argparse.Namespace) -> int:
    tracer = UdpConnect(pid=args.pid, rports=args.port, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)
