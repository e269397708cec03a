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

from ..cli.aggregate import timestamp_line
from ..cli.cliutil import address, port
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.net import addr_obj
from ..core.tracer import SOCKET_SCOPE, Tracer
from ..sinks.snapshot import Snapshot
from ..spec import HISTOGRAM, Option, ToolSpec, family, interval_flags, print_program, timestamp

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
                 ms: bool = False, family: int = 0, hook: str | None = None, **scope: Any):
        """by_laddr and by_raddr: a histogram per local / remote address, or with
        both, per (local, remote) pair.  family: AF_INET or AF_INET6 only."""
        super().__init__(hook=hook, **scope)
        from ..core.net import parse_addr
        self.lport, self.rport, self.ms, self.family = lport, rport, ms, family
        self.laddr = parse_addr(laddr, "laddr") if isinstance(laddr, str) else laddr
        self.raddr = parse_addr(raddr, "raddr") if isinstance(raddr, str) else raddr
        self.by_laddr, self.by_raddr = by_laddr, by_raddr

    def rodata(self) -> dict[str, Any]:
        ro: dict[str, Any] = {"targ_laddr_hist": self.by_laddr, "targ_raddr_hist": self.by_raddr,
                              "targ_ms": self.ms, "targ_sport": self.lport, "targ_dport": self.rport,
                              "targ_family": self.family}
        if self.laddr:
            ro["targ_lfamily"], ro["targ_laddr"] = self.laddr
        if self.raddr:
            ro["targ_rfamily"], ro["targ_raddr"] = self.raddr
        return ro

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histograms(self, clear: bool = False) -> dict[Any, Log2Histogram]:
        """Histogram per local or remote address (-b/-B), per (local, remote)
        pair (both), or {None: all}.  clear=True resets them."""
        unit = "msecs" if self.ms else "usecs"
        out: dict[Any, Log2Histogram] = {}
        for key, val in self._hists.decoded_items():
            fam = key["family"]
            laddr = addr_obj(fam, key["laddr"]) if fam and self.by_laddr else None
            raddr = addr_obj(fam, key["raddr"]) if fam and self.by_raddr else None
            label = (laddr, raddr) if self.by_laddr and self.by_raddr else laddr or raddr
            out[label] = Log2Histogram(tuple(val["slots"]), unit, val["cnt"], val["latency"])
        if clear:
            self._hists.clear()
        return out


# -- the command line ---------------------------------------------------------------

def text(snap: Snapshot, args: Any) -> str:
    """libbpf-tools' titles over each histogram (-b/-B: one per address, both: per pair)."""
    parts = []
    for s in sorted(snap.series, key=lambda s: (not s.labels, s.labels)):
        label = dict(s.labels)
        if args.byladdr and args.byraddr:
            title = f"Local Address = {label.get('laddr')}, Remote Address = {label.get('raddr')}"
        elif args.byladdr:
            title = f"Local Address = {label.get('laddr')}"
        elif args.byraddr:
            title = f"Remote Address = {label.get('raddr')}"
        else:
            title = "All Addresses = ******"
        if args.extension and s.hist.average is not None:
            title += f" [AVG {s.hist.average:.0f}]"
        parts.append(title + "\n" + s.hist.render())
    return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")


def _label(args: Any) -> Any:
    if args.byladdr and args.byraddr:
        return ("laddr", "raddr")
    return "laddr" if args.byladdr else "raddr" if args.byraddr else None


SPEC = ToolSpec(
    "tcprtt", "histogram of TCP round-trip time (srtt)", TcpRtt, HISTOGRAM,
    description=("Summarize TCP RTT as a histogram. -b and -B together give a histogram per local and "
                 "remote address pair (BCC keeps -b's alone)."),
    options=(
        *interval_flags(every="print every SEC seconds"),
        timestamp(help="include a time column on output (HH:MM:SS)"),
        print_program("-D", "--debug", help="print the BPF program before starting (BCC's debug)"),
        Option("-m", "--milliseconds", action="store_true", help="output histogram in milliseconds", kw="ms"),
        Option("-p", "--lport", type=port, default=0, help="filter for local port", kw="lport"),
        Option("-P", "--rport", type=port, default=0, help="filter for remote port", kw="rport"),
        Option("-a", "--laddr", type=address("-a"), help="filter for local address", kw="laddr"),
        Option("-A", "--raddr", type=address("-A"), help="filter for remote address", kw="raddr"),
        Option("-b", "--byladdr", action="store_true", help="show sockets histogram by local address",
               kw="by_laddr"),
        Option("-B", "--byraddr", action="store_true", help="show sockets histogram by remote address",
               kw="by_raddr"),
        Option("-e", "--extension", action="store_true", help="show extension summary (average)"),
        family(),
    ),
    read=lambda tracer, args: tracer.histograms(clear=True),
    label=_label,
    text=text,
    intro="Tracing TCP RTT... Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace tcprtt", "summarize TCP RTT, printed at Ctrl-C"),
        ("pytrace tcprtt -i 1 -d 10", "print 1 second summaries, for 10 seconds"),
        ("pytrace tcprtt -m -T", "summarize in millisecond, and timestamps"),
        ("pytrace tcprtt -p 80", "filter for local port"),
        ("pytrace tcprtt -P 80", "filter for remote port"),
        ("pytrace tcprtt -a 192.0.2.1", "filter for local address"),
        ("pytrace tcprtt -A 192.0.2.1", "filter for remote address"),
        ("pytrace tcprtt -b", "show sockets histogram by local address"),
        ("pytrace tcprtt -B", "show sockets histogram by remote address"),
        ("pytrace tcprtt -b -B", "show a histogram per local and remote address pair"),
        ("pytrace tcprtt -i 3 --lport 80 --byraddr", "local port 80, a breakdown by remote host"),
        ("pytrace tcprtt -D", "show debug bpf text"),
        ("pytrace tcprtt -e", "show extension summary (average)"),
        ("pytrace tcprtt -4", "trace only IPv4 family"),
        ("pytrace tcprtt -6", "trace only IPv6 family"),
    ),
)
