"""tcptop: TCP throughput per process and connection, summed in the kernel.

Library:

    from pytrace.tools.tcptop import TcpTop
    with TcpTop(pid=1234) as top:
        time.sleep(1)
        for f in top.read():                 # flows since the last read(), busiest first
            print(f.pid, f.comm, f.laddr, f.lport, f.raddr, f.rport, f.rx_bytes, f.tx_bytes)
        print("not counted (table full):", top.missed)

With TcpTop(labels=True) (the CLI's --show-container) each flow also
carries its task's cgroup and its socket's network namespace (cgroup_id,
netns) and f.labels, its container and pod (core/containers.Labels).

A flow is (pid, local address and port, remote address and port); bytes are
those the process sent and read (a peek reads nothing).  COMM is the task's
name when it first moved bytes in the period.
"""

from __future__ import annotations

import sys
from typing import Any

from ..cli.aggregate import local_time
from ..cli.cliutil import int_range
from ..core.loader import Variant
from ..core.net import AF_INET, AF_INET6
from ..core.tracer import LABELS, TASK_SCOPE, Tracer
from ..sinks.snapshot import Snapshot
from ..spec import TOP, Column, EventType, Option, ToolSpec, family, interval_positionals, pid, public_classes
from ..spec.text import CONTAINER, table

SORTS = ("all", "sent", "received")
MAX_ROWS = 10240       # the flow table's size

# A row of the kernel's flow table: key struct tcptop_key and value struct
# tcptop_val of src/bpf/tcptop.bpf.c; build.py generates TcpFlow from their BTF.
TCP_FLOW = EventType("TcpFlow", map="flows", doc="The bytes one process moved on one TCP connection in a period.",
                     fields="""
    pid
    comm: text                  # the task's name when it first moved bytes in the period
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport
    raddr <- daddr: address
    rport <- dport
    rx_bytes <- received        # bytes read (a peek reads nothing)
    tx_bytes <- sent            # bytes sent
    cgroup_id                   # labels=True: the task's cgroup (0 otherwise)
    netns                       # labels=True: the socket's network namespace (0 otherwise)
    -pad
""")


def sort_key(sort: str):
    """Busiest first by -s: all (sent + received), sent, or received."""
    if sort == "sent":
        return lambda f: (-f.tx_bytes, -f.rx_bytes, f.pid)
    if sort == "received":
        return lambda f: (-f.rx_bytes, -f.tx_bytes, f.pid)
    return lambda f: (-(f.rx_bytes + f.tx_bytes), f.pid)


class TcpTop(Tracer):
    OBJECT = "tcptop"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcptop_kprobe_send", "tcptop_kretprobe_send", "tcptop_kprobe_recv", "tcptop_kretprobe_recv")),
        Variant("tp_btf", ("tcptop_tp_btf_send", "tcptop_tp_btf_recv"), needs="tracepoints sock_send/recv_length"),
        Variant("raw_tp", ("tcptop_raw_tp_send", "tcptop_raw_tp_recv"), needs="tracepoints sock_send/recv_length"),
        Variant("tracepoint", ("tcptop_tracepoint_send", "tcptop_tracepoint_recv"),
                needs="tracepoints sock_send/recv_length"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        if family not in (0, AF_INET, AF_INET6):
            raise ValueError("family must be 0, AF_INET or AF_INET6")
        self.pid, self.family = pid, family

    def rodata(self) -> dict[str, Any]:
        return {"targ_pid": self.pid, "targ_family": self.family}

    def setup(self) -> None:
        self._flows = self.obj.map("flows")
        self._decode = TCP_FLOW.cls.decoder(self._flows.row_names())
        self._missed = self.obj.global_u64("missed")

    @property
    def missed(self) -> int:
        """Sends/receives not counted since the start because the flow table was full."""
        return self._missed.value

    def read(self, sort: str = "all") -> list:
        """The flows (TcpFlow) that moved bytes since the last read (or the start),
        busiest first; each is taken out of the kernel's table as it is read.
        With labels=True each has its container's labels (f.labels)."""
        decode = self._decode
        out = self.labelled_rows([decode(row) for row in self._flows.pop_rows()])
        out.sort(key=sort_key(sort))
        return out


__getattr__ = public_classes(__name__, TcpFlow=TCP_FLOW)


# -- the text: BCC's layout, an IPv4 table, then an IPv6 one, each busiest first -----------

def _pid_width(args: Any = None) -> int:
    """Wide enough for the largest PID this system can hand out (libbpf-tools)."""
    try:
        return max(6, len(open("/proc/sys/kernel/pid_max").read().strip()))
    except OSError:
        return 7


COLUMNS = (
    CONTAINER,
    Column("PID", "pid", width=_pid_width),
    Column("COMM", "comm", width=12, clip=True),
    Column("LADDR", lambda d: f"{d['laddr']}:{d['lport']}", width=21),
    Column("RADDR", lambda d: f"{d['raddr']}:{d['rport']}", width=21),
    Column("RX_KB", lambda d: d["rx_bytes"] // 1024, width=6, align=">"),
    Column("TX_KB", lambda d: d["tx_bytes"] // 1024, width=6, align=">"),
)
COLUMNS6 = tuple(c.but(header=c.header + "6", width=32) if c.header in ("LADDR", "RADDR") else c for c in COLUMNS)

_LOAD = ("load1", "load5", "load15", "running", "threads", "last_pid")


def loadavg() -> dict[str, float | int]:
    """/proc/loadavg as numbers (so a recording can print the summary line again)."""
    try:
        a, b, c, tasks, last = open("/proc/loadavg").read().split()
        running, threads = tasks.split("/")
        return dict(zip(_LOAD, (float(a), float(b), float(c), int(running), int(threads), int(last))))
    except (OSError, ValueError):
        return {}


def _loadavg_text(snap: Snapshot) -> str:
    v = [snap.value(n) for n in _LOAD]
    if None in v:
        return "?\n"
    return f"{v[0]:.2f} {v[1]:.2f} {v[2]:.2f} {v[3]}/{v[4]} {v[5]}\n"      # as fs/proc/loadavg.c prints it


def text(snap: Snapshot, args: Any) -> str:
    """One period: the summary line, then the tables; refreshed in place on a
    terminal (elsewhere, or with -C, periods follow each other).  Every flow
    is printed, as BCC; -r ROWS prints the busiest ROWS and says how many
    were left out."""
    flows = sorted(SPEC.rows(snap), key=sort_key(args.sort))
    cut = 0
    if args.rows is not None and len(flows) > args.rows:
        cut, flows = len(flows) - args.rows, flows[:args.rows]
    tables = [table(columns, rows, args) for columns, rows in
              ((COLUMNS, [f for f in flows if f.family == AF_INET]),
               (COLUMNS6, [f for f in flows if f.family == AF_INET6])) if rows]
    if cut:
        tables.append(f"({cut} more connection{'s' if cut > 1 else ''} not shown: -r {args.rows})\n")
    body = "\n".join(tables)
    if not args.nosummary:
        body = f"{local_time(snap):<8} loadavg: {_loadavg_text(snap)}\n" + body
    clear = sys.stdout.isatty() and not args.noclear
    return ("\033[H\033[2J" if clear else "\n") + (body or "\n")


SPEC = ToolSpec(
    "tcptop", "TCP send/receive throughput per process and connection", TcpTop, TOP,
    description="Summarize TCP send/recv throughput by host (and process).",
    event=TCP_FLOW,
    labels=("pid", "comm", "family", "laddr", "lport", "raddr", "rport"),
    values=("rx_bytes", "tx_bytes", "cgroup_id", "netns"),
    options=(
        Option("-C", "--noclear", action="store_true", help="don't clear the screen"),
        Option("-S", "--nosummary", action="store_true", help="skip system summary line"),
        pid(),
        family(),
        Option("-s", "--sort", choices=SORTS, default="all",
               help="sort by sent + received (all, default), sent, or received bytes"),
        Option("-r", "--rows", type=int_range(1, MAX_ROWS), default=None,
               help="maximum rows to print (default: all, as BCC; a line says how many were left out); "
                    "--json prints every row"),
        *interval_positionals(default=1),
    ),
    cgroup_flags=("-c", "--cgroup"),    # libbpf-tools' -c PATH: filter.h's --cgroup (with descendants)
    read=lambda tracer, args: tracer.read(args.sort),
    extra=lambda tracer, args: {**loadavg(), "missed": tracer.missed},
    missed="sends/receives not counted (flow table full)",
    columns=COLUMNS, text=text,
    intro="Tracing... Output every {interval} secs. Hit Ctrl-C to end\n",
    examples=(
        ("pytrace tcptop", "summarize TCP throughput by active sessions, 1 second refresh"),
        ("pytrace tcptop -C 5", "don't clear the screen (rolling output), and 5 second summaries"),
        ("pytrace tcptop -C 5 3", "every 5 seconds, 3 times, without clearing the screen"),
        ("pytrace tcptop -p 181", "only process 181"),
        ("pytrace tcptop -Cp 181", "trace PID 181 only, and don't clear the screen"),
        ("pytrace tcptop -s sent -r 5", "the 5 connections that sent most"),
        ("pytrace tcptop -c /sys/fs/cgroup", "only processes in this cgroup (v2) and below"),
        ("pytrace tcptop -4", "trace IPv4 family only"),
        ("pytrace tcptop -6", "trace IPv6 family only"),
        ("pytrace tcptop --json 10", "one JSON object per connection, every 10 seconds"),
    ),
)
