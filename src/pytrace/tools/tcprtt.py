"""tcprtt: histogram of TCP smoothed RTT, aggregated in the kernel.

Library:

    from pytrace.tools.tcprtt import TcpRtt
    with TcpRtt(rport=443) as rtt:
        time.sleep(5)
        for addr, hist in rtt.histograms().items():
            print(addr or "all", hist.count, hist.average)
            print(hist.render())

The RTT is the kernel's smoothed estimate (srtt) sampled for every segment
received on an established connection, as libbpf-tools tcprtt does.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..core.aggregate import print_loop, timestamp_line
from ..core.cliutil import add_common, add_container_args, address, container_filters, port, seconds, wall_iso
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.net import addr_obj
from ..core.tracer import SOCKET_SCOPE, Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcprtt"
SUMMARY = "histogram of TCP round-trip time (srtt)"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


class TcpRtt(Tracer):
    OBJECT = "tcprtt"
    SCOPE = SOCKET_SCOPE
    VARIANTS = (
        Variant("fentry", ("tcprtt_fentry",)),
        Variant("kprobe", ("tcprtt_kprobe",)),
        Variant("tp_btf", ("tcprtt_tp_btf",)),
        Variant("tracepoint", ("tcprtt_tracepoint",)),
    )

    def __init__(self, *, lport: int = 0, rport: int = 0, laddr: str | None = None,
                 raddr: str | None = None, by_laddr: bool = False, by_raddr: bool = False,
                 ms: bool = False, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        if by_laddr and by_raddr:
            raise ValueError("by_laddr and by_raddr are exclusive")
        from ..core.net import parse_addr
        self.lport, self.rport, self.ms = lport, rport, ms
        self.laddr = parse_addr(laddr, "laddr") if isinstance(laddr, str) else laddr
        self.raddr = parse_addr(raddr, "raddr") if isinstance(raddr, str) else raddr
        self.by_laddr, self.by_raddr = by_laddr, by_raddr

    def rodata(self) -> dict[str, Any]:
        ro: dict[str, Any] = {"targ_laddr_hist": self.by_laddr, "targ_raddr_hist": self.by_raddr,
                              "targ_ms": self.ms, "targ_sport": self.lport, "targ_dport": self.rport}
        if self.laddr:
            ro["targ_lfamily"], ro["targ_laddr"] = self.laddr
        if self.raddr:
            ro["targ_rfamily"], ro["targ_raddr"] = self.raddr
        return ro

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> dict[Addr | None, Log2Histogram]:
        """Histogram per local/remote address (-b/-B), or {None: all}. clear=True resets them."""
        unit = "msecs" if self.ms else "usecs"
        out: dict[Addr | None, Log2Histogram] = {}
        for key, val in self._hists.decoded_items():
            addr = addr_obj(key["family"], key["addr"]) if key["family"] else None
            out[addr] = Log2Histogram(tuple(val["slots"]), unit, val["cnt"], val["latency"])
        if clear:
            self._hists.clear()
        return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Summarize TCP RTT as a histogram."
    p.add_argument("-i", "--interval", type=seconds, metavar="SEC", help="print every SEC seconds")
    p.add_argument("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    p.add_argument("-m", "--millisecond", action="store_true", help="histogram in milliseconds")
    p.add_argument("-p", "--lport", type=port, default=0, help="only this local port")
    p.add_argument("-P", "--rport", type=port, default=0, help="only this remote port")
    p.add_argument("-a", "--laddr", type=address("-a"), help="only this local address")
    p.add_argument("-A", "--raddr", type=address("-A"), help="only this remote address")
    by = p.add_mutually_exclusive_group()
    by.add_argument("-b", "--lhist", action="store_true", help="a histogram per local address")
    by.add_argument("-B", "--rhist", action="store_true", help="a histogram per remote address")
    p.add_argument("-e", "--extension", action="store_true", help="show the average RTT too")
    add_container_args(p, TcpRtt)
    add_common(p, [v.hook for v in TcpRtt.VARIANTS])


def render(hists: dict, args: argparse.Namespace) -> str:
    parts = []
    for addr, h in sorted(hists.items(), key=lambda kv: (kv[0] is None, str(kv[0]))):
        if args.lhist:
            title = f"Local Address = {addr}"
        elif args.rhist:
            title = f"Remote Address = {addr}"
        else:
            title = "All Addresses = ******"
        if args.extension and h.average is not None:
            title += f" [AVG {h.average:.0f}]"
        parts.append(title + "\n" + h.render())
    return "\n".join(parts)


def to_json(hists: dict, args: argparse.Namespace, wall_ns: int) -> str:
    import json
    recs = []
    for addr, h in hists.items():
        rec = {"ts": wall_iso(wall_ns), **h.to_dict()}
        if args.lhist:
            rec["laddr"] = str(addr)
        elif args.rhist:
            rec["raddr"] = str(addr)
        recs.append(json.dumps(rec))
    return "".join(r + "\n" for r in recs)


# -- snapshots: what the sinks get each interval, and what replay renders -------

def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing TCP RTT... Hit Ctrl-C to end.\n"


def snapshot(hists: dict, args: argparse.Namespace) -> Snapshot:
    key = "laddr" if args.lhist else "raddr" if args.rhist else None
    return Snapshot.now(NAME, [Series.of({key: str(a)} if key and a is not None else {}, hist=h)
                               for a, h in hists.items()], args.interval)


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    key = "laddr" if args.lhist else "raddr" if args.rhist else None
    hists = {}
    for s in snap.series:
        label = s.label(key) if key else None
        hists[ipaddress.ip_address(label) if label else None] = s.hist
    if args.json:
        return to_json(hists, args, snap.time_ns)
    return timestamp_line(snap, args) + render(hists, args) + ("\n" if hists else "")


def run(args: argparse.Namespace) -> int:
    tracer = TcpRtt(lport=args.lport, rport=args.rport, laddr=args.laddr, raddr=args.raddr,
                    by_laddr=args.lhist, by_raddr=args.rhist, ms=args.millisecond, hook=args.hook,
                    **container_filters(args))
    with tracer:
        return print_loop(args, lambda: snapshot(tracer.histograms(clear=True), args), render_snapshot, intro)
