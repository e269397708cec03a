"""solisten: listen() on TCP sockets, with port, address and effective backlog.

Library:

    from pytrace.tools.solisten import SoListen
    with SoListen() as tracer:
        for ev in tracer.events(duration=10):          # Listen
            print(ev.pid, ev.comm, ev.proto, ev.backlog, ev.lport, ev.laddr)

BACKLOG is the effective one: the caller's value clamped to the socket's
net.core.somaxconn (sk_max_ack_backlog), as BCC's solisten shows it.
Failed listen() calls are shown too (RET with --ret).  Where kprobes are
missing the events come from the listen syscall tracepoints, which io_uring
listens bypass.
"""

from __future__ import annotations

import os

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def proto_value(family: int) -> str:
    """BCC's PROTO: TCPv4 or TCPv6 (the traced sockets are TCP's)."""
    return "TCPv4" if family == convert.AF_INET else "TCPv6"


convert.register(convert.Conversion("tcp_proto", proto_value, None, convert.text_parse,
                                    text=("s", "(b'TCPv4' if {0} == 2 else b'TCPv6')"), kind="str"))

# struct solisten_event of src/bpf/solisten.bpf.c; build.py generates Listen from its BTF
LISTEN_EVENT = EventType("Listen", struct="solisten_event", doc="One listen() on a TCP socket.", fields="""
    ts_ns                       # CLOCK_MONOTONIC of the listen
    pid
    comm: text
    netns                       # inode of the socket's network namespace
    family: family              # AF_INET or AF_INET6
    proto <- family: tcp_proto  # TCPv4 or TCPv6, as BCC prints it
    laddr: address
    lport
    backlog                     # effective (after the somaxconn clamp)
    ret                         # listen()'s result: 0 or -errno
""")


class SoListen(EventTracer):
    OBJECT = "solisten"
    EVENT_TYPE = LISTEN_EVENT
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


__getattr__ = public_classes(__name__, Listen=LISTEN_EVENT)


def netns_inode(pid: int | str = "self") -> int:
    """The network namespace inode of a process (what -n/--netns takes)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


SPEC = ToolSpec(
    "solisten", "TCP listen() calls with port, address and effective backlog", SoListen, EVENTS,
    description=f"Stream sockets listen. {LATENCY_NOTE}",
    event=LISTEN_EVENT,
    netns_flags=("-n", "--netns"),      # BCC's -n: filter.h's --netns (an inode, ip netns name or path)
    options=(
        Option("--show-netns", action="store_true", help="show network namespace"),
        pid(),
        Option("-t", "--timestamp", action="store_true", help="include a TIME column (HH:MM:SS)"),
        Option("--ret", action="store_true", help="include a RET column (listen()'s result)"),
    ),
    # BCC's "%-7d %-12.12s [%-12d] %-6s %-8d %-5d %-39s"
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="timestamp"),
        Column("PID", "pid", width=7),
        Column("COMM", "comm", width=12, precision=".12"),
        Column("NETNS", "netns", width=12, when="show_netns"),
        Column("PROTO", "proto", width=6),
        Column("BACKLOG", "backlog", width=8),
        Column("PORT", "lport", width=5),
        Column("ADDR", "laddr", width=lambda args: 39 if args.ret else None),
        Column("RET", "ret", when="ret"),
    ),
    examples=(
        ("pytrace solisten", "stream socket listen"),
        ("pytrace solisten -p 1234", "stream socket listen for specified PID only"),
        ("pytrace solisten --netns 4242", "stream socket listen for the specified network namespace ID only"),
        ("pytrace solisten --show-netns", "show network ns ID (useful for containers)"),
    ),
)
