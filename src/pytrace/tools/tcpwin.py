"""tcpwin: TCP congestion window, ssthresh, send window and send buffer per
segment received, as CSV rows ready to plot.

Library:

    from pytrace.tools.tcpwin import TcpWin
    with TcpWin(lports=[8080]) as t:
        for w in t.events(duration=10):
            print(w.skaddr, w.snd_cwnd, w.ssthresh, w.snd_wnd, w.sndbuf, w.wmem_queued)

One row per segment an established connection receives (the top of
tcp_rcv_established, where the book's tcpwin.bt looks), with the socket's
state at that moment: snd_cwnd and ssthresh in segments (ssthresh
2147483647: still in slow start), snd_wnd (what the peer advertised) and the
send buffer's size and queued bytes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (Clock, LATENCY_NOTE, Output, add_common, add_container_args, add_family_args,
                            container_filters, family_of, json_renderer, ports, stream_events)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpwin"
SUMMARY = "TCP cwnd, ssthresh, send window and buffer per segment, as CSV to plot"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
HEADER = "event,sock,time_us,snd_cwnd,snd_ssthresh,sk_sndbuf,sk_wmem_queued,snd_wnd,srtt_us,laddr,lport,raddr,rport"


@dataclass(frozen=True, slots=True)
class TcpWindow:
    ts_ns: int
    skaddr: int
    snd_cwnd: int
    ssthresh: int
    snd_wnd: int
    srtt_us: int
    sndbuf: int
    wmem_queued: int
    family: int
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "sock": f"0x{self.skaddr:x}", "snd_cwnd": self.snd_cwnd,
                "snd_ssthresh": self.ssthresh, "snd_wnd": self.snd_wnd, "srtt_us": self.srtt_us,
                "sk_sndbuf": self.sndbuf, "sk_wmem_queued": self.wmem_queued,
                "ip": 4 if self.family == AF_INET else 6, "laddr": str(self.laddr), "lport": self.lport,
                "raddr": str(self.raddr), "rport": self.rport,
                **(self.labels.to_dict() if self.labels else {})}


class TcpWin(EventTracer):
    OBJECT = "tcpwin"
    EVENT = "tcpwin_event"
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("fentry", ("tcpwin_fentry",)),
        Variant("kprobe", ("tcpwin_kprobe",)),
        Variant("tp_btf", ("tcpwin_tp_btf",)),
        Variant("tracepoint", ("tcpwin_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, lports: list[int] | None = None, rports: list[int] | None = None,
                 **kw: Any):
        super().__init__(**kw)
        self.family, self.lports, self.rports = family, lports or [], rports or []

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family, "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}

    def make_event(self, raw: tuple) -> TcpWindow:
        i = self.idx
        fam = raw[i["family"]]
        return TcpWindow(raw[i["ts_ns"]], raw[i["skaddr"]], raw[i["snd_cwnd"]], raw[i["ssthresh"]],
                         raw[i["snd_wnd"]], raw[i["srtt_us"]], raw[i["sndbuf"]], raw[i["wmem_queued"]], fam,
                         addr_obj(fam, raw[i["laddr"]]), raw[i["lport"]], addr_obj(fam, raw[i["raddr"]]),
                         raw[i["rport"]], *self.owner(raw))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("TCP send congestion window, ssthresh, send window and send buffer for every segment "
                     "received on established connections, as CSV (the book's tcpwin.bt columns, then "
                     f"snd_wnd, srtt and the connection). {LATENCY_NOTE}")
    p.add_argument("-L", "--lport", type=ports("-L"), metavar="PORTS", help="only these local ports (comma list)")
    p.add_argument("-D", "--rport", type=ports("-D"), metavar="PORTS", help="only these remote ports (comma list)")
    add_family_args(p)
    add_container_args(p, TcpWin)
    add_common(p, [v.hook for v in TcpWin.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpWin(family=family_of(args), lports=args.lport,
                    rports=args.rport, hook=args.hook, **container_filters(args))
    out = Output(args.json)
    with tracer:
        return stream_events(tracer, out, renderer(tracer, args, out))


def renderer(source: TcpWin, args: argparse.Namespace, out: Output):
    if args.json:
        return json_renderer(source)
    out.write(HEADER + "\n")
    i = source.idx
    cols = [i[n] for n in ("skaddr", "ts_ns", "snd_cwnd", "ssthresh", "sndbuf", "wmem_queued", "snd_wnd",
                           "srtt_us", "family", "laddr", "lport", "raddr", "rport")]
    clock, addr = Clock(), AddrFormatter()
    start = clock.start_ns

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            sk, ts, cwnd, ssth, sndbuf, wmem, wnd, srtt, fam, la, lp, ra, rp = (r[c] for c in cols)
            lines.append(f"rcv,0x{sk:x},{max(0, ts - start) // 1000},{cwnd},{ssth},{sndbuf},{wmem},{wnd},{srtt},"
                         f"{addr(fam, la)},{lp},{addr(fam, ra)},{rp}\n")
        return "".join(lines)
    return render
