"""tcptracer: TCP connections as they are made and ended (C connect, A accept, X close).

Library:

    from pytrace.tools.tcptracer import TcpTracer
    with TcpTracer() as tracer:
        for ev in tracer.events(duration=10):          # TcpEvent
            print(ev.type, ev.pid, ev.comm, ev.saddr, ev.sport, ev.daddr, ev.dport)

C is reported when a connect completes, with the process that called
connect(); A when accept() returns, with the accepting process; X when the
process ends an established connection: its close() or shutdown(), or, for
a connection the peer reset (or that timed out) under it, its close() of the
socket (or its exit), as BCC reports it.  BCC reports X from tcp_close()
only, so it shows no X for a shutdown(); here the first of shutdown() and
close() is the X.
"""

from __future__ import annotations

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TYPE_WORDS = {"C": "connect", "A": "accept", "X": "close"}
_LETTERS = {word: letter for letter, word in TYPE_WORDS.items()}


def type_value(raw: int) -> str:
    return chr(raw)


def type_json(letter: str) -> str:
    """connect, accept or close (BCC's -v words)."""
    return TYPE_WORDS.get(letter, "unknown")


def type_parse(v: Any) -> str:
    return _LETTERS.get(v, v) if isinstance(v, str) else chr(int(v))


def bracketed_value(raw: bytes, family: int) -> Any:
    return convert.address_value(raw, family)


_WORDS = {ord(letter): word.encode() for letter, word in TYPE_WORDS.items()}
convert.register(convert.Conversion("tcptracer_type", type_value, type_json, type_parse, text=("c", "{0}"),
                                    kind="str"))
# -v's TYPE column: the word
convert.register(convert.Conversion("tcptracer_word", type_value, type_json, type_parse,
                                    text=("s", "_tcptracer_words.get({0}, b'unknown')"), kind="str",
                                    env={"_tcptracer_words": _WORDS}))
# BCC brackets IPv6 addresses ([::1]); the value and JSON are the address itself
convert.register(convert.Conversion("tcptracer_addr", bracketed_value, convert.address_json, convert.address_parse,
                                    needs=("family",),
                                    text=("s", "((_a4get({0}) or _addr({1}, {0})) if {1} == 2 else "
                                               "b'[' + (_a6get({0}) or _addr({1}, {0})) + b']')")))

# struct tcptracer_event of src/bpf/tcptracer.bpf.c; build.py generates TcpEvent from its BTF
TCPTRACER_EVENT = EventType("TcpEvent", struct="tcptracer_event",
                            doc="One TCP connect (C), accept (A) or close (X).", fields="""
    ts_ns                       # CLOCK_MONOTONIC
    type: tcptracer_type        # "C", "A" or "X" (JSON: connect, accept, close)
    pid
    comm: text
    family: family              # AF_INET or AF_INET6
    saddr: address              # local address
    sport
    daddr: address              # remote address
    dport
    netns                       # inode of the socket's network namespace
    -pad
""")


class TcpTracer(EventTracer):
    OBJECT = "tcptracer"
    EVENT_TYPE = TCPTRACER_EVENT
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcptracer_kprobe_v4", "tcptracer_kprobe_v6", "tcptracer_kretprobe_accept",
                           "tcptracer_raw_tp", "tcptracer_raw_tp_destroy")),
        Variant("tracepoint", ("tcptracer_tracepoint", "tcptracer_tp_destroy", "tcptracer_tp_accept4",
                               "tcptracer_tp_accept"), "no io_uring"),
    )

    def __init__(self, *, pid: int = 0, family: int = 0, **kw: Any):
        """kw: netns= (an inode, `ip netns` name or path), cgroup=, container=... (core/tracer.py)"""
        super().__init__(**kw)
        self.pid, self.family = pid, family

    def rodata(self) -> dict[str, Any]:
        return {"filter_pid": self.pid, "target_family": self.family}


__getattr__ = public_classes(__name__, TcpEvent=TCPTRACER_EVENT)


def _verbose(args: Any) -> bool:
    return args.verbose


def _terse(args: Any) -> bool:
    return not args.verbose


SPEC = ToolSpec(
    "tcptracer", "TCP connect, accept and close events (C/A/X)", TcpTracer, EVENTS,
    description=("Trace TCP established connections: connects (C), accepts (A) and closes (X). -v is BCC's "
                 "verbose output (TYPE words, NETNS column, TIME(ns)); libbpf's log is --libbpf-log. "
                 + LATENCY_NOTE),
    event=TCPTRACER_EVENT,
    netns_flags=("-N", "--netns"),      # BCC's -N: filter.h's --netns (an inode, ip netns name or path)
    options=(
        Option("-t", "--timestamp", action="store_true",
               help="include timestamp on output (TIME(s), or TIME(ns) with -v: since the first event)"),
        pid(),
        family(),
        Option("-v", "--verbose", action="store_true",
               help="print full lines, with long event type names and network namespace numbers"),
    ),
    intro="Tracing TCP established connections. Ctrl-C to end.\n",
    # BCC: [TIME(s) "%-9.3f" | TIME(ns) "%-14d"] then "%-2s " T (or "%-12s " TYPE),
    # "%-6d %-16s %-2d %-16s %-16s %-6d %-6d", and with -v (no -N) " %-8d" NETNS
    columns=(
        Column("TIME(s)", "ts_ns", width=8, form="since_first", precision=".3",
               when=lambda a: a.timestamp and not a.verbose),
        Column("TIME(ns)", "ts_ns", width=13, form="since_first_ns", when=lambda a: a.timestamp and a.verbose),
        Column("T", "type", width=2, when=_terse),
        Column("TYPE", "type", width=12, form="tcptracer_word", when=_verbose),
        Column("PID", "pid", width=6),
        Column("COMM", "comm", width=16),
        Column("IP", "family", width=2, form="ipver"),
        Column("SADDR", "saddr", width=16, form="tcptracer_addr"),
        Column("DADDR", "daddr", width=16, form="tcptracer_addr"),
        Column("SPORT", "sport", width=6),
        Column("DPORT", "dport", width=lambda a: 6 if a.verbose and not a.netns else None),
        Column("NETNS", "netns", when=lambda a: a.verbose and not a.netns),
    ),
    examples=(
        ("pytrace tcptracer", "trace all TCP established connections"),
        ("pytrace tcptracer -v", "include long event type names and network namespace numbers"),
        ("pytrace tcptracer -p 181", "only trace PID 181"),
        ("pytrace tcptracer -N 4026531969", "only trace connections in network namespace 4026531969"),
        ("pytrace tcptracer -4", "trace IPv4 family only"),
        ("pytrace tcptracer -6", "trace IPv6 family only"),
    ),
)
