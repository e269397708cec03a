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

from ..core.aggregate import timestamp_line
from ..core.cliutil import address, port
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.net import addr_obj
from ..core.tracer import SOCKET_SCOPE, Tracer
from ..sinks.snapshot import Snapshot
from ..spec import HISTOGRAM, Exclusive, Option, ToolSpec, interval_flags, timestamp

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


# -- the command line ---------------------------------------------------------------

def text(snap: Snapshot, args: Any) -> str:
    """libbpf-tools' titles over each histogram (-b/-B: one per address)."""
    parts = []
    for s in sorted(snap.series, key=lambda s: (not s.labels, s.labels)):
        label = dict(s.labels)
        if args.lhist:
            title = f"Local Address = {label.get('laddr')}"
        elif args.rhist:
            title = f"Remote Address = {label.get('raddr')}"
        else:
            title = "All Addresses = ******"
        if args.extension and s.hist.average is not None:
            title += f" [AVG {s.hist.average:.0f}]"
        parts.append(title + "\n" + s.hist.render())
    return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")


SPEC = ToolSpec(
    "tcprtt", "histogram of TCP round-trip time (srtt)", TcpRtt, HISTOGRAM,
    description="Summarize TCP RTT as a histogram.",
    options=(
        *interval_flags(every="print every SEC seconds"),
        timestamp(),
        Option("-m", "--millisecond", action="store_true", help="histogram in milliseconds", kw="ms"),
        Option("-p", "--lport", type=port, default=0, help="only this local port", kw="lport"),
        Option("-P", "--rport", type=port, default=0, help="only this remote port", kw="rport"),
        Option("-a", "--laddr", type=address("-a"), help="only this local address", kw="laddr"),
        Option("-A", "--raddr", type=address("-A"), help="only this remote address", kw="raddr"),
        Exclusive(Option("-b", "--lhist", action="store_true", help="a histogram per local address", kw="by_laddr"),
                  Option("-B", "--rhist", action="store_true", help="a histogram per remote address", kw="by_raddr")),
        Option("-e", "--extension", action="store_true", help="show the average RTT too"),
    ),
    read=lambda tracer, args: tracer.histograms(clear=True),
    label=lambda args: "laddr" if args.lhist else "raddr" if args.rhist else None,
    text=text,
    intro="Tracing TCP RTT... Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace tcprtt", "one histogram of every connection's RTT, at Ctrl-C"),
        ("pytrace tcprtt -i 1 -d 10", "every second for 10 seconds"),
        ("pytrace tcprtt -m -e", "in milliseconds, with the average"),
        ("pytrace tcprtt -p 80", "only connections with local port 80"),
        ("pytrace tcprtt -A 192.0.2.1", "only connections to 192.0.2.1"),
        ("pytrace tcprtt -B", "a histogram per remote address"),
    ),
)
