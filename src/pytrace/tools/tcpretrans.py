"""tcpretrans: TCP retransmissions and tail loss probes, traced or counted per flow.

Library:

    from pytrace.tools.tcpretrans import TcpRetrans
    with TcpRetrans(lossprobe=True) as tracer:
        for ev in tracer.events(duration=10):          # Retransmit
            print(ev.kind, ev.laddr, ev.lport, ev.raddr, ev.rport, ev.state.name, ev.seq)

    with TcpRetrans(count=True) as tracer:
        time.sleep(10)
        for flow, c in tracer.counts().items():         # Flow -> RetransmitCount
            print(flow.laddr, flow.lport, flow.raddr, flow.rport, c.retransmits, c.tlps)

kind is "R" for a retransmitted segment and "L" for a tail loss probe; a
probe that resends a segment is an "L" followed by its "R", as in BCC.  PID
is the task current when the segment went out: the sender for a fast
retransmit triggered from its own send path, often 0 or an unrelated task
when a timer or an incoming ACK sent it.  See src/bpf/tcpretrans.bpf.c for
what each hook variant sees.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE, Clock
from ..core.errors import PytraceError
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..sinks.snapshot import Snapshot
from ..spec import EVENTS, TABLE, EventType, Option, ToolSpec, family, public_classes

RETRANSMIT, TLP = 1, 2
_TP_NOTE = "-l: only probes that resend a segment"
KINDS = {RETRANSMIT: "R", TLP: "L"}
_KIND_VALUES = {v: k for k, v in KINDS.items()}
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def kind_value(raw: int) -> str:
    """R (retransmit) or L (tail loss probe)."""
    return KINDS.get(raw, "?")


convert.register(convert.Conversion("retrans_kind", kind_value, None, convert.text_parse,
                                    text=("s", "(b'R' if {0} == 1 else b'L' if {0} == 2 else b'?')"), kind="str"))

# struct tcpretrans_event of src/bpf/tcpretrans.bpf.c; build.py generates Retransmit from its BTF
RETRANSMIT_EVENT = EventType("Retransmit", struct="tcpretrans_event",
                             doc="One retransmitted segment (R) or tail loss probe (L).", fields="""
    ts_ns                       # CLOCK_MONOTONIC
    skaddr: hex
    pid                         # the task current when it went out (often 0 or unrelated)
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport
    raddr <- daddr: address
    rport
    state: TcpState
    kind <- type: retrans_kind  # "R" retransmit, "L" tail loss probe
    seq                         # first sequence number of the segment (0 for a kprobe TLP)
""")

# A row of the count mode's flows map (key struct tcpretrans_flow, value struct tcpretrans_count)
RETRANSMIT_COUNT = EventType("RetransmitCount", map="flows", doc="The retransmits of one flow (count mode).",
                             fields="""
    family: family
    laddr <- saddr: address
    lport
    raddr <- daddr: address
    rport
    retransmits <- retrans      # retransmitted segments (TLP retransmissions included)
    tlps <- tlp                 # of which sent by a tail loss probe (kprobe: probe calls)
    -pad
""")


@dataclass(frozen=True, slots=True)
class Flow:
    """The key of counts(): one connection, as the local side sees it."""
    family: int
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int


class TcpRetrans(EventTracer):
    OBJECT = "tcpretrans"
    EVENT_TYPE = RETRANSMIT_EVENT
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcpretrans_tp_btf",), note=_TP_NOTE),
        Variant("raw_tp", ("tcpretrans_raw_tp",), note=_TP_NOTE),
        Variant("tracepoint", ("tcpretrans_tracepoint",), note=_TP_NOTE),
        Variant("kprobe", ("tcpretrans_kprobe", "tcpretrans_kretprobe", "tcpretrans_kprobe_tlp")),
    )

    def __init__(self, *, family: int = 0, lossprobe: bool = False, count: bool = False,
                 max_flows: int | None = None, **kw: Any):
        """count=True counts per flow in the kernel (counts()) and streams nothing; up to
        max_flows flows (10240), retransmits of further flows are counted in `lost`."""
        super().__init__(**kw)
        self.family, self.lossprobe, self.count = family, lossprobe, count
        self.max_flows = max_flows

    def map_sizes(self) -> dict[str, int] | None:
        sizes = dict(super().map_sizes() or {})
        if self.max_flows:
            sizes["flows"] = self.max_flows
        return sizes or None

    def rodata(self) -> dict[str, Any]:
        ro: dict[str, Any] = {"target_family": self.family, "lossprobe": self.lossprobe,
                              "count_mode": self.count}
        if self.lossprobe or self.count:
            # The tracepoint variants recognise a TLP by this function on the stack.
            from ..core.ksyms import kernel_symbols
            span = kernel_symbols().span("tcp_send_loss_probe")
            if span is None:
                if self.lossprobe:
                    raise PytraceError("-l: tcp_send_loss_probe is not in /proc/kallsyms, "
                                       "so tail loss probes cannot be recognised on this kernel")
            else:
                ro["tlp_start"], ro["tlp_end"] = span
        return ro

    def setup(self) -> None:
        super().setup()
        self._flows = self.obj.map("flows")
        self._decode_count = RETRANSMIT_COUNT.cls.decoder(self._flows.row_names())

    def count_rows(self, clear: bool = False) -> list:
        """Count mode: a RetransmitCount per flow, fewest retransmits first (as BCC
        prints them); clear=True resets the counts."""
        decode = self._decode_count
        rows = [decode(r) for r in self._flows.rows()]
        if clear:
            self._flows.clear()
        rows.sort(key=lambda r: (r.retransmits, r.tlps))
        return rows

    def counts(self, clear: bool = False) -> dict[Flow, Any]:
        """Count mode: {Flow: RetransmitCount}; clear=True resets them."""
        return {Flow(r.family, r.laddr, r.lport, r.raddr, r.rport): r for r in self.count_rows(clear)}


__getattr__ = public_classes(__name__, Retransmit=RETRANSMIT_EVENT, RetransmitCount=RETRANSMIT_COUNT)


# -- the text: BCC's lines (address:port pairs), and its count table -------------------------

def text(source: Any, args: Any, out: Any):
    """BCC tcpretrans's columns: TIME PID IP LADDR:LPORT T> RADDR:RPORT STATE [SEQ]."""
    head = "%-8s %-7s %-2s %-20s %1s> %-20s" % ("TIME", "PID", "IP", "LADDR:LPORT", "T", "RADDR:RPORT")
    out.write(head + (" %-12s %-10s" % ("STATE", "SEQ") if args.sequence else " %-4s" % "STATE") + "\n")
    fmt = "%-8s %-7d %-2d %-20s %1s> %-20s" + (" %-12s %d\n" if args.sequence else " %s\n")
    clock, addr, ipver = Clock(), convert.address_json, convert.ipver_value

    def render(batch: list[tuple]) -> str:
        decode = source.decoder()
        lines = []
        for raw in batch:
            e = decode(raw)
            cols = (clock.hms(e.ts_ns), e.pid, ipver(e.family), f"{addr(e.laddr)}:{e.lport}", e.kind,
                    f"{addr(e.raddr)}:{e.rport}", getattr(e.state, "name", str(e.state)))
            lines.append(fmt % (cols + (e.seq,) if args.sequence else cols))
        return "".join(lines)
    return render


def count_text(snap: Snapshot, args: Any) -> str:
    """BCC's table at Ctrl-C: LADDR:LPORT <-> RADDR:RPORT RETRANSMITS (and TLPS with -l)."""
    head = "\n%-25s %-25s %-10s" % ("LADDR:LPORT", "RADDR:RPORT", "RETRANSMITS")
    lines = [head + (" TLPS" if args.lossprobe else "")]
    addr = convert.address_json
    for r in COUNTS.rows(snap):
        line = "%-20s <-> %-20s %10d" % (f"[{addr(r.laddr)}]#{r.lport}", f"[{addr(r.raddr)}]#{r.rport}",
                                         r.retransmits)
        lines.append(line + (" %4d" % r.tlps if args.lossprobe else ""))
    return "\n".join(lines) + "\n"


OPTIONS = (
    Option("-s", "--sequence", action="store_true", help="display TCP sequence numbers"),
    Option("-l", "--lossprobe", action="store_true", kw="lossprobe",
           help="include tail loss probe attempts"),
    Option("-c", "--count", action="store_true", kw="count",
           help="count occurring retransmits per flow, printed at Ctrl-C"),
    family(),
)
INTRO = "Tracing retransmits ... Hit Ctrl-C to end\n"

COUNTS = ToolSpec(
    "tcpretrans", "retransmits counted per flow (tcpretrans -c)", TcpRetrans, TABLE,
    event=RETRANSMIT_COUNT,
    labels=("family", "laddr", "lport", "raddr", "rport"), values=("retransmits", "tlps"),
    read=lambda tracer, args: tracer.count_rows(),
    extra=lambda tracer, args: {"missed": tracer.lost},
    missed="retransmits not counted (flow table full)",
    text=count_text, intro=INTRO, once=True,
)

SPEC = ToolSpec(
    "tcpretrans", "TCP retransmits and tail loss probes, traced or counted per flow", TcpRetrans, EVENTS,
    description=f"Trace TCP retransmits. {LATENCY_NOTE}",
    event=RETRANSMIT_EVENT,
    options=OPTIONS,
    alternate=("count", COUNTS),
    text=text, intro=INTRO,
    examples=(
        ("pytrace tcpretrans", "trace TCP retransmits"),
        ("pytrace tcpretrans -l", "include TLP attempts"),
        ("pytrace tcpretrans -s", "display TCP sequence numbers"),
        ("pytrace tcpretrans -c", "count retransmits per flow, printed at Ctrl-C"),
        ("pytrace tcpretrans -4", "trace IPv4 family only"),
        ("pytrace tcpretrans -6", "trace IPv6 family only"),
    ),
)
