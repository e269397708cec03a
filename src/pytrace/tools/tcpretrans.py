"""tcpretrans: TCP retransmissions and tail loss probes, traced or counted per flow.

Library:

    from pytrace.tools.tcpretrans import TcpRetrans
    with TcpRetrans(lossprobe=True) as tracer:
        for ev in tracer.events(duration=10):
            print(ev.kind, ev.laddr, ev.lport, ev.raddr, ev.rport, ev.state.name, ev.seq)

    with TcpRetrans(count=True) as tracer:
        time.sleep(10)
        for flow, c in tracer.counts().items():
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

from ..core.aggregate import print_loop
from ..core.cliutil import (Clock, LATENCY_NOTE, Output, add_common, add_container_args, add_family_args,
                            container_filters, family_of, json_renderer, run_stream)
from ..core.containers import Labels
from ..core.errors import PytraceError
from ..core.loader import Variant
from ..core.net import AF_INET, AF_INET6, STATE_NAMES, AddrFormatter, TcpState, addr_obj
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpretrans"
SUMMARY = "TCP retransmits and tail loss probes, traced or counted per flow"

RETRANSMIT, TLP = 1, 2
_TP_NOTE = "-l: only probes that resend a segment"
KINDS = {RETRANSMIT: "R", TLP: "L"}
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Retransmit:
    ts_ns: int                 # CLOCK_MONOTONIC
    skaddr: int
    pid: int
    family: int
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int
    state: TcpState
    kind: str                  # "R" retransmit, "L" tail loss probe
    seq: int                   # first sequence number of the segment (0 for a kprobe TLP)
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "skaddr": f"{self.skaddr:x}", "pid": self.pid,
                "ip": 4 if self.family == AF_INET else 6, "laddr": str(self.laddr), "lport": self.lport,
                "raddr": str(self.raddr), "rport": self.rport, "type": self.kind,
                "state": getattr(self.state, "name", str(self.state)), "seq": self.seq,
                **(self.labels.to_dict() if self.labels else {})}


@dataclass(frozen=True, slots=True)
class Flow:
    family: int
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int


@dataclass(frozen=True, slots=True)
class FlowCount:
    retransmits: int           # retransmitted segments (TLP retransmissions included)
    tlps: int                  # of which sent by a tail loss probe (kprobe: probe calls)


class TcpRetrans(EventTracer):
    OBJECT = "tcpretrans"
    EVENT = "tcpretrans_event"
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

    def make_event(self, raw: tuple) -> Retransmit:
        i = self.idx
        fam = raw[i["family"]]
        return Retransmit(raw[i["ts_ns"]], raw[i["skaddr"]], raw[i["pid"]], fam,
                          addr_obj(fam, raw[i["saddr"]]), raw[i["lport"]],
                          addr_obj(fam, raw[i["daddr"]]), raw[i["rport"]],
                          TcpState.of(raw[i["state"]]), KINDS.get(raw[i["type"]], "?"), raw[i["seq"]], *self.owner(raw))

    def counts(self, clear: bool = False) -> dict[Flow, FlowCount]:
        """Per-flow totals of count mode (count=True); clear=True resets them."""
        out: dict[Flow, FlowCount] = {}
        for key, val in self._flows.decoded_items():
            fam = key["family"]
            out[Flow(fam, addr_obj(fam, key["saddr"]), key["lport"], addr_obj(fam, key["daddr"]),
                     key["rport"])] = FlowCount(val["retrans"], val["tlp"])
        if clear:
            self._flows.clear()
        return out


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace TCP retransmits. {LATENCY_NOTE}"
    p.add_argument("-s", "--sequence", action="store_true", help="display TCP sequence numbers")
    p.add_argument("-l", "--lossprobe", action="store_true", help="include tail loss probe attempts")
    p.add_argument("-c", "--count", action="store_true",
                   help="count retransmits per flow, printed at Ctrl-C")
    add_family_args(p)
    add_container_args(p, TcpRetrans)
    add_common(p, [v.hook for v in TcpRetrans.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpRetrans(family=family_of(args),
                        lossprobe=args.lossprobe, count=args.count, hook=args.hook, **container_filters(args))
    if not args.count:
        return run_stream(tracer, args, renderer, intro)
    with tracer:            # -c: one table at Ctrl-C / SIGTERM, like BCC
        return print_loop(args, lambda: _count_snapshot(tracer, args), render_snapshot, intro, once=True)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing retransmits ... Hit Ctrl-C to end\n"


def renderer(source: TcpRetrans, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the live tracer,
    or a recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


# -- count mode: one snapshot at exit (what the sinks get and replay renders) ----

def snapshot(counts: dict[Flow, FlowCount], lost: int = 0) -> Snapshot:
    """The flows fewest retransmits first; lost: retransmits of flows the full map could not take."""
    rows = sorted(counts.items(), key=lambda kv: (kv[1].retransmits, kv[1].tlps))
    return Snapshot.now(NAME, [Series.of({"ip": 4 if f.family == AF_INET else 6, "laddr": f.laddr, "lport": f.lport,
                                          "raddr": f.raddr, "rport": f.rport},
                                         {"retransmits": c.retransmits, "tlps": c.tlps}) for f, c in rows],
                        values={"lost": lost})


def _count_snapshot(tracer: TcpRetrans, args: argparse.Namespace) -> Snapshot:
    snap = snapshot(tracer.counts(), tracer.lost)
    if not args.json:
        Output(False).lost(tracer.lost)      # on stderr, before the table (JSON: in render_snapshot)
    return snap


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    """BCC's table (LADDR:LPORT <-> RADDR:RPORT RETRANSMITS [TLPS]), or JSON lines
    after the lost-records line, as Output.lost() prints it."""
    rows = [(dict(s.labels), dict(s.values)) for s in snap.series]
    if args.json:
        import json
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        lost = snap.value("lost", 0)
        out = [dumps({"type": "lost", "count": lost, "total": lost}) + "\n"] if lost else []
        for lab, val in rows:
            out.append(dumps({"ip": int(lab["ip"]), "laddr": lab["laddr"], "lport": int(lab["lport"]),
                              "raddr": lab["raddr"], "rport": int(lab["rport"]), **val}) + "\n")
        return "".join(out)
    head = "\n%-25s %-25s %-10s" % ("LADDR:LPORT", "RADDR:RPORT", "RETRANSMITS")
    lines = [head + (" TLPS" if args.lossprobe else "")]
    for lab, val in rows:
        line = "%-20s <-> %-20s %10d" % (f"[{lab['laddr']}]#{lab['lport']}", f"[{lab['raddr']}]#{lab['rport']}",
                                         val["retransmits"])
        lines.append(line + (" %4d" % val["tlps"] if args.lossprobe else ""))
    return "\n".join(lines) + "\n"


def _text_renderer(tracer: TcpRetrans, args: argparse.Namespace, out: Output):
    """BCC tcpretrans's columns, formatted from the raw tuples."""
    head = "%-8s %-7s %-2s %-20s %1s> %-20s" % ("TIME", "PID", "IP", "LADDR:LPORT", "T", "RADDR:RPORT")
    out.write(head + (" %-12s %-10s" % ("STATE", "SEQ") if args.sequence else " %-4s" % "STATE") + "\n")
    fmt = "%-8s %-7d %-2d %-20s %1s> %-20s" + (" %-12s %d\n" if args.sequence else " %s\n")
    seq = args.sequence
    i = tracer.idx
    i_ts, i_pid, i_fam, i_sa, i_lp = i["ts_ns"], i["pid"], i["family"], i["saddr"], i["lport"]
    i_da, i_rp, i_state, i_type, i_seq = i["daddr"], i["rport"], i["state"], i["type"], i["seq"]
    addr, clock, states = AddrFormatter(), Clock(), STATE_NAMES
    ipver = {AF_INET: 4, AF_INET6: 6}

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam = r[i_fam]
            cols = (clock.hms(r[i_ts]), r[i_pid], ipver.get(fam, 0), f"{addr(fam, r[i_sa])}:{r[i_lp]}",
                    KINDS.get(r[i_type], "?"), f"{addr(fam, r[i_da])}:{r[i_rp]}", states[r[i_state]])
            lines.append(fmt % (cols + (r[i_seq],) if seq else cols))
        return "".join(lines)
    return render

