"""tcpdrop: TCP packets dropped by the kernel, with the drop reason and kernel stack.

Library:

    from pytrace.tools.tcpdrop import TcpDrop
    with TcpDrop() as tracer:
        for d in tracer.events(duration=10):           # TcpDropEvent
            print(d.saddr, d.sport, ">", d.daddr, d.dport, d.reason, d.flags, d.stack[:3])

Addresses and ports are the dropped packet's own (source > destination),
so an incoming packet shows the remote end first.  state is the TCP state
of the socket that received it or, before any socket lookup, of the one
that sent it if the packet still carries it (transmit path, veth).  Like
BCC, only drops that have such a socket are reported; no_socket=True
(--no-socket) adds the others (state None: NO_SOCKET, nothing listens;
drops at tc or netfilter before any socket lookup), which on a busy host
are thousands a second.  reason is the kernel's enum skb_drop_reason name,
read from this kernel's BTF.  stack is symbolized from /proc/kallsyms,
innermost first, starting at the function that freed the packet.  PID is
the task current at the drop (often 0 or unrelated: most drops happen in
softirq).
"""

from __future__ import annotations

import os

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE, Clock, netns_inode, process_id
from ..core.drops import DROP_REASONS, TRACING_PREFIXES  # (and registers drop_reason, as skbdrop uses it)
from ..core.errors import UsageError
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..spec import EVENTS, EventType, Exclusive, Option, ToolSpec, family, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# include/net/tcp.h TCPHDR_*, in BCC's order
_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"),
               (0x10, "ACK"), (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"))
FLAGS_TEXT = tuple("|".join(n for bit, n in _FLAG_NAMES if f & bit) for f in range(256))
_MACHINERY_DEPTH = 10      # the tracing frames above the drop, at most (classic tracepoints have most)

_names: list = []


def drop_names() -> Any:
    """This kernel's reason names and symbols (core/drops.DropNames), made once:
    `pytrace replay` reads a recording with them, right only on its boot."""
    if not _names:
        from ..core.drops import DropNames
        _names.append(DropNames())
    return _names[0]


def state_value(raw: int) -> Any:
    """The socket's TcpState, None when the packet reached no socket."""
    return convert.tcp_state_value(raw) if raw else None


def state_parse(v: Any) -> Any:
    return None if v is None else convert.tcp_state_parse(v)


def flags_value(raw: int) -> str:
    """"SYN", "ACK|PSH"... as BCC prints them."""
    return FLAGS_TEXT[raw & 0xff]


def stack_value(addrs: tuple, nbytes: int) -> tuple[str, ...]:
    """The symbolized stack, tracing frames removed (core/drops.py).

    The innermost frame is our BPF program, whose symbol leaves kallsyms with
    it: replayed later it resolves to nonsense, which would stop the trimming
    there.  So everything up to the outermost tracing frame near the top
    (bpf_trace_run*, perf_trace_*...) goes, whatever it resolves to, and live
    and replayed stacks agree."""
    names = drop_names()
    addrs = addrs[:max(0, nbytes) // 8]
    fn = names.ksyms.function
    top = [i for i, a in enumerate(addrs[:_MACHINERY_DEPTH]) if fn(a).startswith(TRACING_PREFIXES)]
    return tuple(names.stack(addrs[top[-1] + 1:] if top else addrs))


def stack_json(v: tuple) -> list:
    return list(v)


def stack_parse(v: Any) -> tuple:
    return tuple(v)


convert.register(convert.Conversion("tcpdrop_state", state_value, convert.enum_json, state_parse, kind="enum"))
convert.register(convert.Conversion("tcp_flags", flags_value, None, convert.text_parse, kind="str"))
convert.register(convert.Conversion("kernel_stack", stack_value, stack_json, stack_parse, needs=("stack_bytes",),
                                    kind="list"))

# struct tcpdrop_event of src/bpf/tcpdrop.bpf.c; build.py generates TcpDropEvent from its BTF
TCPDROP_EVENT = EventType("TcpDropEvent", struct="tcpdrop_event", doc="One TCP packet dropped by the kernel.",
                          fields="""
    ts_ns                       # CLOCK_MONOTONIC
    pid                         # the task current at the drop (often unrelated)
    family: family              # AF_INET or AF_INET6
    saddr: address              # the packet's source
    sport
    daddr: address              # the packet's destination
    dport
    state: tcpdrop_state        # TCP state of its socket, None: no socket
    flags <- tcpflags: tcp_flags
    reason: drop_reason         # enum skb_drop_reason, without SKB_DROP_REASON_
    stack: kernel_stack         # "function+0xoff", innermost first
    skaddr: hex                 # the socket (0: none)
    netns                       # inode of the network namespace
    -stack_bytes
""")


class TcpDrop(EventTracer):
    OBJECT = "tcpdrop"
    EVENT_TYPE = TCPDROP_EVENT
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcpdrop_tp_btf",), needs=DROP_REASONS),
        Variant("raw_tp", ("tcpdrop_raw_tp",), needs=DROP_REASONS),
        Variant("tracepoint", ("tcpdrop_tracepoint",), needs=DROP_REASONS),
    )

    def __init__(self, *, family: int = 0, no_socket: bool = False, **kw: Any):
        """kw: netns= (the packet's: its device's, else its socket's; an inode,
        `ip netns` name or path), cgroup=, container= (the socket's; drops
        without a socket pass none of them)... (core/tracer.py)"""
        super().__init__(**kw)
        self.family, self.no_socket = family, no_socket

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family, "with_nosock": self.no_socket}

    def setup(self) -> None:
        super().setup()
        drop_names()        # the kernel's tables, read before the first drop arrives


__getattr__ = public_classes(__name__, TcpDropEvent=TCPDROP_EVENT)


def _netns(args: Any) -> int:
    if args.pid_netns:
        try:
            return os.stat(f"/proc/{args.pid_netns}/ns/net").st_ino
        except OSError:
            raise UsageError(f"--pid-netns {args.pid_netns}: no such process") from None
    return args.netns_id


def text(source: Any, args: Any, out: Any):
    """BCC tcpdrop's lines (plus REASON), each followed by its stack and a blank line."""
    out.write("%-8s %-7s %-2s %-20s > %-20s %s (%s) %s\n" % ("TIME", "PID", "IP", "SADDR:SPORT", "DADDR:DPORT",
                                                           "STATE", "FLAGS", "REASON"))
    clock, addr, ipver = Clock(), convert.address_json, convert.ipver_value

    def render(batch: list[tuple]) -> str:
        decode = source.decoder()
        lines = []
        for raw in batch:
            e = decode(raw)
            state = "-" if e.state is None else getattr(e.state, "name", str(e.state))
            lines.append("%-8s %-7d %-2d %-20s > %-20s %s (%s) %s\n" % (
                clock.hms(e.ts_ns), e.pid, ipver(e.family), f"{addr(e.saddr)}:{e.sport}",
                f"{addr(e.daddr)}:{e.dport}", state, e.flags, e.reason))
            lines.extend(f"\t{frame}\n" for frame in e.stack)
            lines.append("\n")
        return "".join(lines)
    return render


SPEC = ToolSpec(
    "tcpdrop", "TCP packets dropped by the kernel: addresses, state, flags, reason, stack", TcpDrop, EVENTS,
    description=("Trace TCP drops by the kernel: the packet's addresses, its socket's state, its flags, "
                 "the kernel's drop reason and stack. Like BCC, only drops of packets that reached a socket "
                 f"(or were sent by one); --no-socket adds the others. {LATENCY_NOTE}"),
    event=TCPDROP_EVENT,
    options=(
        family(),
        Option("--no-socket", action="store_true", kw="no_socket",
               help="also drops no socket took (NO_SOCKET: nothing listens; tc or netfilter drops before "
                    "the socket lookup), which BCC never shows: thousands a second on a busy host"),
        Exclusive(Option("--netns-id", type=netns_inode, default=0, metavar="INODE",
                         help="only this network namespace (its inode number, as in ls -L -i /proc/PID/ns/net)"),
                  Option("--pid-netns", type=process_id, default=0, metavar="PID",
                         help="only the network namespace of this process"),
                  kw="netns", value=_netns),
    ),
    text=text,
    examples=(
        ("pytrace tcpdrop", "trace kernel-based TCP packet drops with details"),
        ("pytrace tcpdrop -4", "trace IPv4 family only"),
        ("pytrace tcpdrop -6", "trace IPv6 family only"),
        ("pytrace tcpdrop --no-socket", "also the drops no socket took (e.g. a SYN to a closed port)"),
    ),
)
