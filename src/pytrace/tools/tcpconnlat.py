"""tcpconnlat: latency of active TCP connects (SYN sent to handshake complete).

Library:

    from pytrace.tools.tcpconnlat import TcpConnLat
    with TcpConnLat(min_ms=1.0) as tracer:
        for c in tracer.events(duration=10):
            print(c.pid, c.comm, c.raddr, c.rport, c.ms)

The clock starts in connect() (tcp_v4/v6_connect, or its CLOSE->SYN_SENT
state change where kprobes are missing) and stops when the socket becomes
ESTABLISHED.  Connects that fail are not shown.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (LATENCY_NOTE, Output, SinceFirst, add_common, add_container_args, add_family_args,
                            bad_value, container_filters, family_of, json_renderer, process_id, run_stream)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpconnlat"
SUMMARY = "latency of TCP connects (SYN sent to handshake complete)"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ConnectLatency:
    ts_ns: int                 # CLOCK_MONOTONIC when the handshake completed
    pid: int
    comm: str
    family: int
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int
    delta_ns: int              # connect() to ESTABLISHED
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    @property
    def ms(self) -> float:
        return self.delta_ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm,
                "ip": 4 if self.family == AF_INET else 6, "laddr": str(self.laddr), "lport": self.lport,
                "raddr": str(self.raddr), "rport": self.rport, "lat_ms": round(self.ms, 3),
                **(self.labels.to_dict() if self.labels else {})}


class TcpConnLat(EventTracer):
    OBJECT = "tcpconnlat"
    EVENT = "tcpconnlat_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("fentry", ("tcpconnlat_fentry_v4", "tcpconnlat_fentry_v6", "tcpconnlat_tp_btf_end")),
        Variant("kprobe", ("tcpconnlat_kprobe_v4", "tcpconnlat_kprobe_v6", "tcpconnlat_raw_tp_end")),
        Variant("tp_btf", ("tcpconnlat_tp_btf",)),
        Variant("tracepoint", ("tcpconnlat_tracepoint",)),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, min_ms: float = 0.0, **kw: Any):
        super().__init__(**kw)
        if min_ms < 0:
            raise ValueError("min_ms must not be negative")
        self.pid, self.family, self.min_ms = pid, family, min_ms

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid, "target_family": self.family,
                "min_ns": int(round(self.min_ms * 1_000_000))}

    def make_event(self, raw: tuple) -> ConnectLatency:
        i = self.idx
        fam = raw[i["family"]]
        return ConnectLatency(raw[i["ts_ns"]], raw[i["pid"]], comm_text(raw[i["comm"]]), fam,
                              addr_obj(fam, raw[i["saddr"]]), raw[i["sport"]],
                              addr_obj(fam, raw[i["daddr"]]), raw[i["dport"]], raw[i["delta_ns"]], *self.owner(raw))


# -- command line ---------------------------------------------------------------

def min_latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad_value(f"'{text}' is not a number of milliseconds") from None
    if not value >= 0 or value == float("inf"):
        raise bad_value(f"'{text}' must be a positive number of milliseconds")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace TCP connects and show their latency (SYN sent to established). {LATENCY_NOTE}"
    p.add_argument("-t", "--timestamp", action="store_true", help="include a TIME(s) column (since the first event)")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    p.add_argument("-L", "--lport", action="store_true", help="include an LPORT column")
    add_family_args(p)
    p.add_argument("duration_ms", nargs="?", type=min_latency, default=0.0, metavar="MIN_MS",
                   help="only connects slower than this many milliseconds (fractions allowed)")
    add_container_args(p, TcpConnLat)
    add_common(p, [v.hook for v in TcpConnLat.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpConnLat(pid=args.pid, family=family_of(args),
                        min_ms=args.duration_ms, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)


def renderer(source: TcpConnLat, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the tracer, or a
    recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


def _text_renderer(tracer: TcpConnLat, args: argparse.Namespace, out: Output):
    """BCC's columns: [TIME(s)] PID COMM IP SADDR [LPORT] DADDR DPORT LAT(ms)."""
    head = f"{'TIME(s)':<9}" if args.timestamp else ""
    head += f"{'PID':<6} {'COMM':<12} {'IP':<2} {'SADDR':<16} "
    if args.lport:
        head += f"{'LPORT':<6} "
    out.write(head + f"{'DADDR':<16} {'DPORT':<5} LAT(ms)\n")

    i = tracer.idx
    i_ts, i_pid, i_comm, i_fam = i["ts_ns"], i["pid"], i["comm"], i["family"]
    i_sa, i_sp, i_da, i_dp, i_d = i["saddr"], i["sport"], i["daddr"], i["dport"], i["delta_ns"]
    addr = AddrFormatter()
    since_first = SinceFirst()

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam = r[i_fam]
            line = ""
            if args.timestamp:
                line = f"{since_first(r[i_ts]):<9.3f}"
            line += "%-6d %-12.12s %-2d %-16s " % (r[i_pid], comm_text(r[i_comm]), 4 if fam == AF_INET else 6,
                                                  addr(fam, r[i_sa]))
            if args.lport:
                line += f"{r[i_sp]:<6} "
            lines.append(line + f"{addr(fam, r[i_da]):<16} {r[i_dp]:<5} {r[i_d] / 1e6:.2f}\n")
        return "".join(lines)
    return render
