"""tcptop: TCP throughput per process and connection, summed in the kernel.

Library:

    from pytrace.tools.tcptop import TcpTop
    with TcpTop(pid=1234) as top:
        time.sleep(1)
        for f in top.read():                 # flows since the last read(), busiest first
            print(f.pid, f.comm, f.laddr, f.lport, f.raddr, f.rport, f.rx_bytes, f.tx_bytes)
        print("not counted (table full):", top.missed)

A flow is (pid, local address and port, remote address and port); bytes are
those the process sent and read (a peek reads nothing).  COMM is the task's
name when it first moved bytes in the period.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..core.aggregate import Rows, local_time, print_loop
from ..core.cliutil import (add_common, add_container_args, add_family_args, container_filters, family_of, int_range,
                            intervals, process_id, seconds)
from ..core.loader import Variant
from ..core.net import AF_INET, AF_INET6, addr_obj, comm_text
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcptop"
SUMMARY = "TCP send/receive throughput per process and connection"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
SORTS = ("all", "sent", "received")
MAX_ROWS = 10240       # the flow table's size


@dataclass(frozen=True, slots=True)
class TcpFlow:
    pid: int
    comm: str
    family: int          # AF_INET or AF_INET6
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int
    rx_bytes: int
    tx_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "ip": 4 if self.family == AF_INET else 6,
                "laddr": str(self.laddr), "lport": self.lport, "raddr": str(self.raddr),
                "rport": self.rport, "rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes}


def sort_key(sort: str):
    """Busiest first by -s: all (sent + received), sent, or received."""
    if sort == "sent":
        return lambda f: (-f.tx_bytes, -f.rx_bytes, f.pid)
    if sort == "received":
        return lambda f: (-f.rx_bytes, -f.tx_bytes, f.pid)
    return lambda f: (-(f.rx_bytes + f.tx_bytes), f.pid)


class TcpTop(Tracer):
    OBJECT = "tcptop"
    SCOPE = TASK_SCOPE
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
        self._missed = self.obj.global_u64("missed")

    @property
    def missed(self) -> int:
        """Sends/receives not counted since the start because the flow table was full."""
        return self._missed.value

    def read(self, sort: str = "all") -> list[TcpFlow]:
        """The flows that moved bytes since the last read (or the start), busiest
        first; each is taken out of the kernel's table as it is read."""
        out = []
        for k, v in self._flows.pop_decoded_items():
            fam = k["family"]
            out.append(TcpFlow(k["pid"], comm_text(v["comm"]), fam, addr_obj(fam, k["saddr"]), k["lport"],
                               addr_obj(fam, k["daddr"]), k["dport"], v["received"], v["sent"]))
        out.sort(key=sort_key(sort))
        return out


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Summarize TCP send/recv throughput by host (and process)."
    p.add_argument("-C", "--noclear", action="store_true", help="don't clear the screen")
    p.add_argument("-S", "--nosummary", action="store_true", help="skip system summary line")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    add_family_args(p)
    p.add_argument("-s", "--sort", choices=SORTS, default="all",
                   help="sort by sent + received (all, default), sent, or received bytes")
    p.add_argument("-r", "--rows", type=int_range(1, MAX_ROWS), default=20, help="maximum rows to print (default 20)")
    p.add_argument("interval", nargs="?", type=seconds, default=1,
                   help="output interval, in seconds (default 1)")
    p.add_argument("count", nargs="?", type=intervals, help="number of outputs")
    add_container_args(p, TcpTop)
    add_common(p, [v.hook for v in TcpTop.VARIANTS])


def _pid_width() -> int:
    """Wide enough for the largest PID this system can hand out (libbpf-tools)."""
    try:
        return max(6, len(open("/proc/sys/kernel/pid_max").read().strip()))
    except OSError:
        return 7


def render(flows: list[TcpFlow], args: argparse.Namespace, pw: int, loadavg: str = "?\n",
           clock: str | None = None) -> str:
    """BCC's layout: an IPv4 table, then an IPv6 one, each busiest first."""
    lines = []
    if not args.nosummary:
        lines.append(f"{clock or time.strftime('%H:%M:%S'):<8} loadavg: {loadavg}")
    for fam, w, la, ra in ((AF_INET, 21, "LADDR", "RADDR"), (AF_INET6, 32, "LADDR6", "RADDR6")):
        rows = [f for f in flows if f.family == fam]
        if not rows:
            continue
        lines.append(("\n" if fam == AF_INET6 else "") +
                     f"{'PID':<{pw}} {'COMM':<12} {la:<{w}} {ra:<{w}} {'RX_KB':>6} {'TX_KB':>6}")
        for f in rows:
            lines.append(f"{f.pid:<{pw}} {f.comm[:12]:<12} {f'{f.laddr}:{f.lport}':<{w}} "
                         f"{f'{f.raddr}:{f.rport}':<{w}} {f.rx_bytes // 1024:>6} {f.tx_bytes // 1024:>6}")
    return "\n".join(lines) + "\n"


# -- snapshots: what the sinks get each interval, and what replay renders -------

ROWS = Rows(TcpFlow, labels=("pid", "comm", "family", "laddr", "lport", "raddr", "rport"),
            values=("rx_bytes", "tx_bytes"), convert={"laddr": ipaddress.ip_address, "raddr": ipaddress.ip_address})
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


def snapshot(tracer: TcpTop, args: argparse.Namespace) -> Snapshot:
    flows = tracer.read(args.sort)[:args.rows]
    return ROWS.snapshot(NAME, flows, args.interval, {**loadavg(), "missed": tracer.missed})


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else f"Tracing... Output every {args.interval} secs. Hit Ctrl-C to end\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    flows = ROWS.rows(snap)
    if args.json:
        import json
        ts = local_time(snap, "%Y-%m-%dT%H:%M:%S")
        return "".join(json.dumps({"ts": ts, **f.to_dict()}, separators=(",", ":")) + "\n" for f in flows)
    # refresh in place on a terminal; elsewhere (or -C) periods follow each other
    clear = sys.stdout.isatty() and not args.noclear
    return ("\033[H\033[2J" if clear else "\n") + render(flows, args, _pid_width(), _loadavg_text(snap),
                                                         local_time(snap))


def run(args: argparse.Namespace) -> int:
    tracer = TcpTop(pid=args.pid, family=family_of(args),
                    hook=args.hook, **container_filters(args))
    reported = 0

    def take() -> Snapshot:
        nonlocal reported
        snap = snapshot(tracer, args)
        missed = snap.value("missed", 0)
        if missed > reported:
            sys.stderr.write(f"tcptop: {missed - reported} sends/receives not counted (flow table full)\n")
            reported = missed
        return snap

    with tracer:
        return print_loop(args, take, render_snapshot, intro)
