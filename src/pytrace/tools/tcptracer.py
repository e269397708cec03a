"""tcptracer: TCP connections as they are made and ended (C connect, A accept, X close).

Library:

    from pytrace.tools.tcptracer import TcpTracer
    with TcpTracer() as tracer:
        for ev in tracer.events(duration=10):
            print(ev.type, ev.pid, ev.comm, ev.saddr, ev.sport, ev.daddr, ev.dport)

C is reported when a connect completes, with the process that called
connect(); A when accept() returns, with the accepting process; X when an
established connection starts to close: close() or shutdown() (the calling
process), or a reset or timeout (the process seen at C or A, 0 if none was).
BCC reports X from tcp_close() only, so it shows no X for shutdown() and
shows it later, at close(), for a reset connection.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (LATENCY_NOTE, Output, SinceFirst, add_common, add_container_args, add_family_args,
                            container_filters, family_of, int_range, json_renderer, process_id, run_stream)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcptracer"
SUMMARY = "TCP connect, accept and close events (C/A/X)"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
TYPE_WORDS = {"C": "connect", "A": "accept", "X": "close"}


@dataclass(frozen=True, slots=True)
class TcpEvent:
    ts_ns: int                 # CLOCK_MONOTONIC
    type: str                  # "C", "A" or "X"
    pid: int
    comm: str
    family: int
    saddr: Addr                # local address
    sport: int
    daddr: Addr                # remote address
    dport: int
    netns: int                 # inode of the socket's network namespace
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "type": TYPE_WORDS.get(self.type, self.type), "pid": self.pid,
                "comm": self.comm, "ip": 4 if self.family == AF_INET else 6, "saddr": str(self.saddr),
                "daddr": str(self.daddr), "sport": self.sport, "dport": self.dport, "netns": self.netns,
                **(self.labels.to_dict() if self.labels else {})}


class TcpTracer(EventTracer):
    OBJECT = "tcptracer"
    EVENT = "tcptracer_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcptracer_kprobe_v4", "tcptracer_kprobe_v6", "tcptracer_kretprobe_accept",
                           "tcptracer_raw_tp")),
        Variant("tracepoint", ("tcptracer_tracepoint", "tcptracer_tp_accept4", "tcptracer_tp_accept"),
                "no io_uring"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, **kw: Any):
        """kw: netns= (an inode, `ip netns` name or path), cgroup=, container=... (core/tracer.py)"""
        super().__init__(**kw)
        self.pid, self.family = pid, family

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid, "target_family": self.family}

    def make_event(self, raw: tuple) -> TcpEvent:
        i = self.idx
        fam = raw[i["family"]]
        return TcpEvent(raw[i["ts_ns"]], chr(raw[i["type"]]), raw[i["pid"]], comm_text(raw[i["comm"]]), fam,
                        addr_obj(fam, raw[i["saddr"]]), raw[i["sport"]],
                        addr_obj(fam, raw[i["daddr"]]), raw[i["dport"]], raw[i["netns"]], *self.owner(raw, netns=False))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Trace TCP connects (C), accepts (A) and closes (X). Here -v is BCC's verbose output "
                     "(TYPE words, NETNS column, TIME(ns)); --libbpf-log shows libbpf's log. " + LATENCY_NOTE)
    p.add_argument("-t", "--timestamp", action="store_true",
                   help="include a TIME(s) column (TIME(ns) with -v), since the first event")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    add_family_args(p)
    p.add_argument("--libbpf-log", action="store_true", help="show libbpf's log (what -v does in other tools)")
    add_container_args(p, TcpTracer, netns_flags=("-N", "--netns"))   # BCC's -N
    add_common(p, [v.hook for v in TcpTracer.VARIANTS])   # its -v/--verbose serves as BCC's -v


def run(args: argparse.Namespace) -> int:
    # -v means BCC's verbose columns here, not hundreds of lines of libbpf's log
    logging.getLogger("pytrace.libbpf").setLevel(logging.DEBUG if args.libbpf_log else logging.WARNING)
    tracer = TcpTracer(pid=args.pid, family=family_of(args), hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer, intro)


def intro(args: argparse.Namespace) -> str:
    """What the CLI prints once, before the renderer's header."""
    return "" if args.json else "Tracing TCP established connections. Ctrl-C to end.\n"


def renderer(source: TcpTracer, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the tracer, or a
    recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


def _text_renderer(tracer: TcpTracer, args: argparse.Namespace, out: Output):
    """BCC's columns: [TIME(s)] T PID COMM IP SADDR DADDR SPORT DPORT; with -v
    [TIME(ns)] TYPE ... [NETNS].  IPv6 addresses are bracketed, as in BCC."""
    verbose, show_netns = args.verbose, args.verbose and not args.netns
    if verbose:
        head = f"{'TIME(ns)':<14}" if args.timestamp else ""
        head += "%-12s %-6s %-16s %-2s %-16s %-16s %-6s %-7s" % ("TYPE", "PID", "COMM", "IP", "SADDR", "DADDR",
                                                               "SPORT", "DPORT")
        if show_netns:
            head += "NETNS"
    else:
        head = f"{'TIME(s)':<9}" if args.timestamp else ""
        head += "%-2s %-6s %-16s %-2s %-16s %-16s %-6s %s" % ("T", "PID", "COMM", "IP", "SADDR", "DADDR",
                                                            "SPORT", "DPORT")
    out.write(head + "\n")

    i = tracer.idx
    i_ts, i_type, i_pid, i_comm, i_fam, i_ns = i["ts_ns"], i["type"], i["pid"], i["comm"], i["family"], i["netns"]
    i_sa, i_sp, i_da, i_dp = i["saddr"], i["sport"], i["daddr"], i["dport"]
    addr = AddrFormatter()
    since_first = SinceFirst()

    def text(fam: int, raw: bytes) -> str:
        a = addr(fam, raw)
        return a if fam == AF_INET else f"[{a}]"

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam, t = r[i_fam], chr(r[i_type])
            line = ""
            if args.timestamp:
                delta = since_first.ns(r[i_ts])
                line = f"{delta:<14d}" if verbose else f"{delta / 1e9:<9.3f}"
            line += f"{TYPE_WORDS.get(t, 'unknown'):<12} " if verbose else f"{t:<2} "
            line += "%-6d %-16s %-2d %-16s %-16s %-6d %-6d" % (
                r[i_pid], comm_text(r[i_comm]), 4 if fam == AF_INET else 6, text(fam, r[i_sa]),
                text(fam, r[i_da]), r[i_sp], r[i_dp])
            if show_netns:
                line += f" {r[i_ns]:<8d}"
            lines.append(line.rstrip() + "\n")
        return "".join(lines)
    return render
