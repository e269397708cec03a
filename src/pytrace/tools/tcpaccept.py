"""tcpaccept: TCP connections accepted, with the process that called accept().

Library:

    from pytrace.tools.tcpaccept import TcpAccept
    with TcpAccept(lports=[80, 443]) as tracer:
        for a in tracer.events(duration=10):
            print(a.pid, a.comm, a.raddr, a.rport, a.lport)

PID and COMM are the process that accept()ed the connection, not whatever
ran the softirq that completed the handshake.  Where kprobes are missing the
events come from the accept/accept4 syscall tracepoints, which io_uring
accepts bypass.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (Clock, LATENCY_NOTE, Output, SinceFirst, add_common, add_container_args, add_family_args,
                            container_filters, family_of, json_renderer, ports, process_id, run_stream)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpaccept"
SUMMARY = "TCP connections accepted, with the accepting PID"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Accept:
    ts_ns: int                 # CLOCK_MONOTONIC of the accept
    pid: int
    comm: str
    family: int
    raddr: Addr
    rport: int
    laddr: Addr
    lport: int
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm,
                "ip": 4 if self.family == AF_INET else 6, "raddr": str(self.raddr), "rport": self.rport,
                "laddr": str(self.laddr), "lport": self.lport,
                **(self.labels.to_dict() if self.labels else {})}


class TcpAccept(EventTracer):
    OBJECT = "tcpaccept"
    EVENT = "tcpaccept_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcpaccept_kretprobe",)),
        Variant("tracepoint", ("tcpaccept_tp_accept4", "tcpaccept_tp_accept"), "no io_uring"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, lports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.family, self.lports = pid, family, lports or []

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid, "target_family": self.family,
                "lports": self.lports, "n_lports": len(self.lports)}

    def make_event(self, raw: tuple) -> Accept:
        i = self.idx
        fam = raw[i["family"]]
        return Accept(raw[i["ts_ns"]], raw[i["pid"]], comm_text(raw[i["comm"]]), fam,
                      addr_obj(fam, raw[i["raddr"]]), raw[i["rport"]],
                      addr_obj(fam, raw[i["laddr"]]), raw[i["lport"]], *self.owner(raw))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace TCP accepts. {LATENCY_NOTE}"
    p.add_argument("-T", "--time", action="store_true", help="include a TIME column (HH:MM:SS)")
    p.add_argument("-t", "--timestamp", action="store_true", help="include a TIME(s) column (since the first event)")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    p.add_argument("-P", "--port", type=ports("-P"), metavar="PORTS", help="only these local ports (comma list)")
    add_family_args(p)
    add_container_args(p, TcpAccept)
    add_common(p, [v.hook for v in TcpAccept.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpAccept(pid=args.pid, family=family_of(args),
                       lports=args.port, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)


def renderer(source: TcpAccept, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the tracer, or a
    recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


def _text_renderer(tracer: TcpAccept, args: argparse.Namespace, out: Output):
    """BCC's columns: [TIME] [TIME(s)] PID COMM IP RADDR RPORT LADDR LPORT."""
    head = f"{'TIME':<9}" if args.time else ""
    if args.timestamp:
        head += f"{'TIME(s)':<9}"
    out.write(head + f"{'PID':<7} {'COMM':<12} {'IP':<2} {'RADDR':<16} {'RPORT':<5} {'LADDR':<16} LPORT\n")

    i = tracer.idx
    i_ts, i_pid, i_comm, i_fam = i["ts_ns"], i["pid"], i["comm"], i["family"]
    i_ra, i_rp, i_la, i_lp = i["raddr"], i["rport"], i["laddr"], i["lport"]
    addr, clock = AddrFormatter(), Clock()
    fmt = "%-7d %-12.12s %-2d %-16s %-5d %-16s %d\n"
    since_first = SinceFirst()

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam = r[i_fam]
            line = fmt % (r[i_pid], comm_text(r[i_comm]), 4 if fam == AF_INET else 6,
                          addr(fam, r[i_ra]), r[i_rp], addr(fam, r[i_la]), r[i_lp])
            if args.timestamp:
                line = f"{since_first(r[i_ts]):<9.3f}" + line
            if args.time:
                line = f"{clock.hms(r[i_ts]):<9}" + line
            lines.append(line)
        return "".join(lines)
    return render
