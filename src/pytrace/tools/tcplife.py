"""tcplife: one line per TCP session when it closes, with its bytes and lifespan.

Library:

    from pytrace.tools.tcplife import TcpLife
    with TcpLife(lports=[8080]) as tracer:
        for s in tracer.events(duration=10):
            print(s.pid, s.comm, s.raddr, s.rport, s.tx_bytes, s.rx_bytes, s.ms)

tx_bytes/rx_bytes are payload bytes (what the application sent and got;
SYN and FIN are taken out of the kernel's sequence-space counters, see
src/bpf/tcplife.bpf.c).  PID/COMM are the socket's owner, learned at the
connect()/close()/shutdown() that changed its state, else (a session that
ended by a reset before its owner touched it) the task current at close.
ms runs from the last of SYN_SENT/SYN_RECV/ESTABLISHED to CLOSE, as in BCC.
"""

from __future__ import annotations

from ..core.cliutil import (LATENCY_NOTE, Clock, Output, SinceFirst, add_common, add_container_args,
                            add_family_args, container_filters, family_of, json_renderer, ports, process_id,
                            run_stream)
from ..core.loader import Variant
from ..core.rows import compile_rows
from ..core.net import AF_INET, AF_INET6, ByteLabels, addr_obj, comm_text
from ..core.stream import EventTracer, lazy_event
from ..core.tracer import LABELS, SOCKET_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    import argparse
    import ipaddress
    from typing import Any

    from ..core.containers import Labels

NAME = "tcplife"
SUMMARY = "TCP sessions at close: owner, addresses, bytes each way, lifespan"


# TcpSession's fields and methods: the frozen slotted dataclass itself is made
# on first use (see __getattr__ below).
class _TcpSession:
    ts_ns: int                 # CLOCK_MONOTONIC of the close
    pid: int
    comm: str
    family: int                # AF_INET or AF_INET6
    laddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    lport: int
    raddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    rport: int
    tx_bytes: int              # payload sent (and acknowledged)
    rx_bytes: int              # payload received
    ms: float                  # lifespan
    cgroup_id: int = 0         # the socket's cgroup and netns (with labels=True)
    netns: int = 0
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm,
                "ip": 4 if self.family == AF_INET else 6, "laddr": str(self.laddr), "lport": self.lport,
                "raddr": str(self.raddr), "rport": self.rport, "tx_bytes": self.tx_bytes,
                "rx_bytes": self.rx_bytes, "ms": round(self.ms, 3),
                **(self.labels.to_dict() if self.labels else {})}


# PEP 562: importing TcpSession makes the dataclass, which the CLI's text
# output never needs (importing dataclasses would cost its start-up ~7 ms).
_event_class, __getattr__ = lazy_event(globals(), "TcpSession", _TcpSession,
                                       imports=("ipaddress", "pytrace.core.containers:Labels"))


if TYPE_CHECKING:
    TcpSession = _TcpSession


class TcpLife(EventTracer):
    OBJECT = "tcplife"
    EVENT = "tcplife_event"
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcplife_tp_btf",)),
        Variant("raw_tp", ("tcplife_raw_tp",)),
        Variant("tracepoint", ("tcplife_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, pid: int = 0, lports: list[int] | None = None,
                 rports: list[int] | None = None, max_sessions: int | None = None, **kw):
        """max_sessions: how many open sessions the kernel can follow at once (65536);
        a session beyond that is counted in `lost` when it starts."""
        super().__init__(**kw)
        self.family, self.pid = family, pid
        self.lports, self.rports = lports or [], rports or []
        self.max_sessions = max_sessions

    def map_sizes(self) -> dict[str, int] | None:
        sizes = dict(super().map_sizes() or {})
        if self.max_sessions:
            sizes["conns"] = self.max_sessions
        return sizes or None

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family, "target_pid": self.pid,
                "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}

    def make_event(self, raw: tuple) -> TcpSession:
        i = self.idx
        fam = raw[i["family"]]
        return _event_class()(raw[i["ts_ns"]], raw[i["pid"]], comm_text(raw[i["comm"]]), fam,
                              addr_obj(fam, raw[i["saddr"]]), raw[i["lport"]],
                              addr_obj(fam, raw[i["daddr"]]), raw[i["rport"]],
                              raw[i["tx_b"]], raw[i["rx_b"]], raw[i["span_us"]] / 1000.0, *self.owner(raw))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace the lifespan of TCP sessions and summarize. {LATENCY_NOTE}"
    p.add_argument("-T", "--time", action="store_true", help="include a time column (HH:MM:SS)")
    p.add_argument("-t", "--timestamp", action="store_true", help="include a timestamp column (seconds)")
    p.add_argument("-w", "--wide", action="store_true", help="wide column output (fits IPv6 addresses)")
    p.add_argument("-s", "--csv", action="store_true", help="comma separated values output")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    p.add_argument("-L", "--localport", type=ports("-L"), metavar="PORTS", help="only these local ports (comma list)")
    p.add_argument("-D", "--remoteport", type=ports("-D"), metavar="PORTS",
                   help="only these remote ports (comma list)")
    add_family_args(p)
    add_container_args(p, TcpLife)
    add_common(p, [v.hook for v in TcpLife.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpLife(family=family_of(args), pid=args.pid,
                     lports=args.localport, rports=args.remoteport, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)


def renderer(source: TcpLife, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the live tracer,
    or a recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


def _text_renderer(tracer: TcpLife, args: argparse.Namespace, out: Output):
    """BCC tcplife's columns, formatted in bytes straight from the raw tuples:
    the CLI's hot path (this tool is benchmarked against libbpf-tools).  Only
    the shown fields are decoded, and unpacked by name in a compiled
    comprehension (core/rows.py); addresses and command names are formatted
    once and memoised; one bytes %-format per line."""
    if args.csv:
        head, fmt = "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s", "%d,%s,%s,%s,%d,%s,%d,%d,%d,%d.%02d\n"
    elif args.wide:
        head = "%-5s %-16.16s %-2s %-26s %-5s %-26s %-5s %6s %6s %s"
        fmt = "%-5d %-16.16s %-2s %-26s %-5d %-26s %-5d %6d %6d %d.%02d\n"
    else:
        head = "%-5s %-10.10s %s%-15s %-5s %-15s %-5s %5s %5s %s"
        fmt = "%-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %d.%02d\n"
    bfmt = fmt.encode()
    show_ip = args.wide or args.csv
    pre = ""
    if args.time:
        pre += "TIME," if args.csv else f"{'TIME':<8} "
    if args.timestamp:
        pre += "TIME(s)," if args.csv else f"{'TIME(s)':<9} "
    out.write(pre + head % ("PID", "COMM", "IP" if show_ip else "", "LADDR", "LPORT", "RADDR", "RPORT",
                            "TX_KB", "RX_KB", "MS") + "\n")
    shown = {"pid", "comm", "family", "saddr", "lport", "daddr", "rport", "tx_b", "rx_b", "span_us"}
    if args.time or args.timestamp:
        shown.add("ts_ns")
    if hasattr(tracer, "project"):
        tracer.project(shown)
    i_ts = tracer.idx.get("ts_ns")
    ipcol = ({AF_INET: b"4", AF_INET6: b"6"} if show_ip else {AF_INET: b"", AF_INET6: b""})
    clock, labels = Clock(), ByteLabels()
    since_first = SinceFirst()
    secs_fmt, time_sep = ("%.6f," if args.csv else "%-9.6f "), ("," if args.csv else " ")

    def prefix(ts: int) -> bytes:
        text = ""
        if args.time:
            text += clock.hms(ts) + time_sep
        if args.timestamp:      # seconds since the first event, as BCC
            text += secs_fmt % since_first(ts)
        return text.encode()

    rows = compile_rows(tracer.raw_fields, (
        f"bfmt % (pid, {labels.COMM}, ip(family, b'?'),"
        f" {labels.addr_expr('saddr')}, lport, {labels.addr_expr('daddr')}, rport,"
        # MS to 2 decimals, rounded: 1235 us -> 1.24
        " tx_b >> 10, rx_b >> 10, (span_us + 5) // 1000, (span_us + 5) // 10 % 100)"),
        {"bfmt": bfmt, "ip": ipcol.get, **labels.row_env()})

    def render(batch: list[tuple]) -> bytes:
        lines = rows(batch)
        if i_ts is not None:
            lines = [prefix(r[i_ts]) + line for r, line in zip(batch, lines)]
        return b"".join(lines)
    return render
