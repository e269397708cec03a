"""tcpstates: TCP state changes, with the time each socket spent in its old state.

Library:

    from pytrace.tools.tcpstates import TcpStates
    with TcpStates(lports=[8080]) as tracer:
        for ev in tracer.events(duration=10):
            print(ev.laddr, ev.lport, ev.oldstate.name, "->", ev.newstate.name, ev.ms)

C-PID/C-COMM are the task current when the state changed: the process for
changes made by a system call (connect, close, listen), often an unrelated
task or none (0) for changes made in softirq on packet arrival.
"""

from __future__ import annotations

from ..core.cliutil import (LATENCY_NOTE, Clock, Output, add_common, add_container_args, add_family_args,
                            container_filters, family_of, json_renderer, ports, run_stream)
from ..core.loader import Variant
from ..core.rows import compile_rows
from ..core.net import AF_INET, STATE_NAMES, ByteLabels, addr_obj, comm_text, tcp_state
from ..core.stream import EventTracer, lazy_event
from ..core.tracer import LABELS, SOCKET_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    import argparse
    import ipaddress

    from ..core.containers import Labels
    from ..core.net import TcpState
    from typing import Any

NAME = "tcpstates"
SUMMARY = "TCP state changes with the time spent in each state"


# TcpStateChange's fields and methods: the frozen slotted dataclass itself is
# made on first use (see __getattr__ below).
class _TcpStateChange:
    ts_ns: int                 # CLOCK_MONOTONIC of the change
    skaddr: int
    pid: int
    comm: str
    family: int                # AF_INET or AF_INET6
    laddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    lport: int
    raddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    rport: int
    oldstate: TcpState
    newstate: TcpState
    ms: float                  # time spent in oldstate (0 for the first change seen)
    cgroup_id: int = 0         # the socket's cgroup and netns (with labels=True)
    netns: int = 0
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "skaddr": f"{self.skaddr:x}", "pid": self.pid, "comm": self.comm,
                "ip": 4 if self.family == AF_INET else 6, "laddr": str(self.laddr), "lport": self.lport,
                "raddr": str(self.raddr), "rport": self.rport, "oldstate": self.oldstate.name,
                "newstate": self.newstate.name, "ms": round(self.ms, 3),
                **(self.labels.to_dict() if self.labels else {})}


# PEP 562: importing TcpStateChange makes the dataclass, which the CLI's text
# output never needs (importing dataclasses would cost its start-up ~7 ms).
_event_class, __getattr__ = lazy_event(globals(), "TcpStateChange", _TcpStateChange,
                                         imports=("ipaddress", "pytrace.core.net:TcpState",
                                                  "pytrace.core.containers:Labels"))


if TYPE_CHECKING:
    TcpStateChange = _TcpStateChange


class TcpStates(EventTracer):
    OBJECT = "tcpstates"
    EVENT = "tcpstates_event"
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcpstates_tp_btf",)),
        Variant("raw_tp", ("tcpstates_raw_tp",)),
        Variant("tracepoint", ("tcpstates_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, lports: list[int] | None = None,
                 rports: list[int] | None = None, **kw):  # kw: EventTracer's
        super().__init__(**kw)
        self.family, self.lports, self.rports = family, lports or [], rports or []

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family,
                "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}

    def make_event(self, raw: tuple) -> TcpStateChange:
        i = self.idx
        fam = raw[i["family"]]
        return _event_class()(
            raw[i["ts_ns"]], raw[i["skaddr"]], raw[i["pid"]], comm_text(raw[i["comm"]]), fam,
            addr_obj(fam, raw[i["saddr"]]), raw[i["sport"]], addr_obj(fam, raw[i["daddr"]]),
            raw[i["dport"]], tcp_state(raw[i["oldstate"]]), tcp_state(raw[i["newstate"]]),
            raw[i["delta_us"]] / 1000.0, *self.owner(raw))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace TCP state changes and the time spent in each state. {LATENCY_NOTE}"
    p.add_argument("-T", "--timestamp", action="store_true", help="include a HH:MM:SS column")
    p.add_argument("-t", "--time", action="store_true", help="include a TIME(s) column (since start)")
    p.add_argument("-w", "--wide", action="store_true", help="wide columns (IPv6 addresses)")
    p.add_argument("-L", "--localport", type=ports("-L"), metavar="PORTS", help="only these local ports (comma list)")
    p.add_argument("-D", "--remoteport", type=ports("-D"), metavar="PORTS", help="only these remote ports (comma list)")
    add_family_args(p)
    add_container_args(p, TcpStates)
    add_common(p, [v.hook for v in TcpStates.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpStates(family=family_of(args),
                       lports=args.localport, rports=args.remoteport, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)


def renderer(source: TcpStates, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records.  source is the live
    tracer, or a recording standing in for it (`pytrace replay`): only its
    raw_fields/idx/make_event are used."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


def _text_renderer(tracer: TcpStates, args: argparse.Namespace, out: Output):
    """Format straight from raw tuples, in bytes: this is the CLI's hot path.

    Per event it does one tuple build (only the shown fields are decoded),
    unpacks it in a compiled comprehension (core/rows.py), does a few dict
    lookups (addresses, command names and state pairs are formatted once and
    memoised) and one bytes %-format.
    """
    aw = 39 if (args.wide or args.ipv6) else 15
    head = ""
    if args.timestamp:
        head += f"{'TIME':<8} "
    if args.time:
        head += f"{'TIME(s)':<9} "
    out.write(head + f"{'SKADDR':<16} {'C-PID':<7} {'C-COMM':<16} {'LADDR':<{aw}} {'LPORT':<5} "
              f"{'RADDR':<{aw}} {'RPORT':<5} {'OLDSTATE':<11} -> {'NEWSTATE':<11} MS\n")
    fmt = f"%-16x %-7d %-16s %-{aw}s %-5d %-{aw}s %-5d %s %d.%03d\n".encode()
    shown = {"skaddr", "pid", "comm", "family", "saddr", "sport", "daddr", "dport",
             "oldstate", "newstate", "delta_us"}
    if args.timestamp or args.time:
        shown.add("ts_ns")
    tracer.project(shown)
    # "OLD -> NEW" for every pair of states (TCP states are < 16)
    trans = tuple(f"{STATE_NAMES[k >> 4]:<11} -> {STATE_NAMES[k & 15]:<11}".encode() for k in range(256))
    clock, labels = Clock(), ByteLabels()
    rows = compile_rows(tracer.raw_fields, (
        f"fmt % (skaddr, pid, {labels.COMM}, {labels.addr_expr('saddr')}, sport,"
        f" {labels.addr_expr('daddr')}, dport,"
        " trans[(oldstate & 15) << 4 | (newstate & 15)], delta_us // 1000, delta_us % 1000)"),
        {"fmt": fmt, "trans": trans, **labels.row_env()})
    i_ts = tracer.idx.get("ts_ns")
    if i_ts is None:
        def render(batch: list[tuple]) -> bytes:
            return b"".join(rows(batch))
        return render

    def render(batch: list[tuple]) -> bytes:
        lines = rows(batch)
        return b"".join([_time_prefix(clock, r[i_ts], args) + line for r, line in zip(batch, lines)])
    return render


def _time_prefix(clock: Clock, ts: int, args: argparse.Namespace) -> bytes:
    text = ""
    if args.timestamp:
        text += f"{clock.hms(ts):<8} "
    if args.time:
        text += f"{clock.since_start(ts):<9.6f} "
    return text.encode()
