"""solisten: listen() on TCP sockets, with port, address and effective backlog.

Library:

    from pytrace.tools.solisten import SoListen
    with SoListen() as tracer:
        for ev in tracer.events(duration=10):
            print(ev.pid, ev.comm, ev.proto, ev.backlog, ev.lport, ev.laddr)

BACKLOG is the effective one: the caller's value clamped to the socket's
net.core.somaxconn (sk_max_ack_backlog), as BCC's solisten shows it.
Failed listen() calls are shown too (RET with --ret).  Where kprobes are
missing the events come from the listen syscall tracepoints, which io_uring
listens bypass.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (Clock, LATENCY_NOTE, Output, add_common, add_container_args, container_filters, int_range,
                            json_renderer, process_id, run_stream)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "solisten"
SUMMARY = "TCP listen() calls with port, address and effective backlog"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Listen:
    ts_ns: int                 # CLOCK_MONOTONIC of the listen
    pid: int
    comm: str
    netns: int                 # inode of the socket's network namespace
    family: int
    laddr: Addr
    lport: int
    backlog: int               # effective (after the somaxconn clamp)
    ret: int                   # listen()'s result: 0 or -errno
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    labels: Labels | None = None

    @property
    def proto(self) -> str:
        return "TCPv4" if self.family == AF_INET else "TCPv6"

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm, "netns": self.netns,
                "proto": self.proto, "backlog": self.backlog, "port": self.lport,
                "addr": str(self.laddr), "ret": self.ret,
                **(self.labels.to_dict() if self.labels else {})}


class SoListen(EventTracer):
    OBJECT = "solisten"
    EVENT = "solisten_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("fentry", ("solisten_fexit",)),
        Variant("kprobe", ("solisten_kprobe", "solisten_kretprobe")),
        Variant("tracepoint", ("solisten_tp_enter", "solisten_tp_exit"), "no io_uring"),
        Variant("tp_btf", ("solisten_tp_btf",), "new only"),
    )

    def __init__(self, *, pid: int = 0, **kw: Any):
        """kw: netns= (an inode, `ip netns` name or path), cgroup=, container=... (core/tracer.py)"""
        super().__init__(**kw)
        self.pid = pid

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid}

    def make_event(self, raw: tuple) -> Listen:
        i = self.idx
        fam = raw[i["family"]]
        return Listen(raw[i["ts_ns"]], raw[i["pid"]], comm_text(raw[i["comm"]]), raw[i["netns"]], fam,
                      addr_obj(fam, raw[i["laddr"]]), raw[i["lport"]], raw[i["backlog"]], raw[i["ret"]],
                      *self.owner(raw, netns=False))


def netns_inode(pid: int | str = "self") -> int:
    """The network namespace inode of a process (what -n/--netns takes)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace listen() on TCP sockets. {LATENCY_NOTE}"
    p.add_argument("-t", "--timestamp", action="store_true", help="include a TIME column (HH:MM:SS)")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    p.add_argument("--show-netns", action="store_true", help="include a NETNS column")
    p.add_argument("--ret", action="store_true", help="include a RET column (listen()'s result)")
    add_container_args(p, SoListen, netns_flags=("-n", "--netns"))   # BCC's -n
    add_common(p, [v.hook for v in SoListen.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = SoListen(pid=args.pid, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)


def renderer(source: SoListen, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the tracer, or a
    recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


def _text_renderer(tracer: SoListen, args: argparse.Namespace, out: Output):
    """BCC's columns: PID COMM [NETNS] PROTO BACKLOG PORT ADDR, then [RET]."""
    head = f"{'TIME':<8} " if args.timestamp else ""
    head += f"{'PID':<6} {'COMM':<12} "
    if args.show_netns:
        head += f"{'NETNS':<12} "
    head += f"{'PROTO':<6} {'BACKLOG':<8} {'PORT':<5} "
    out.write(head + (f"{'ADDR':<39} RET" if args.ret else "ADDR") + "\n")

    i = tracer.idx
    i_ts, i_pid, i_comm, i_ns, i_fam = i["ts_ns"], i["pid"], i["comm"], i["netns"], i["family"]
    i_la, i_lp, i_bl, i_ret = i["laddr"], i["lport"], i["backlog"], i["ret"]
    addr, clock = AddrFormatter(), Clock()

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam = r[i_fam]
            line = f"{clock.hms(r[i_ts]):<8} " if args.timestamp else ""
            line += "%-6d %-12.12s " % (r[i_pid], comm_text(r[i_comm]))
            if args.show_netns:
                line += f"{r[i_ns]:<12} "
            line += "%-6s %-8d %-5d " % ("TCPv4" if fam == AF_INET else "TCPv6", r[i_bl], r[i_lp])
            a = addr(fam, r[i_la])
            lines.append(line + (f"{a:<39} {r[i_ret]}" if args.ret else a) + "\n")
        return "".join(lines)
    return render
