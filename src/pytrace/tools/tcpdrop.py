"""tcpdrop: TCP packets dropped by the kernel, with the drop reason and kernel stack.

Library:

    from pytrace.tools.tcpdrop import TcpDrop
    with TcpDrop() as tracer:
        for d in tracer.events(duration=10):
            print(d.saddr, d.sport, ">", d.daddr, d.dport, d.reason, d.flags, d.stack[:3])

Addresses and ports are the dropped packet's own (source > destination),
so an incoming packet shows the remote end first.  state is the TCP state
of the socket that received it or, before any socket lookup, of the one
that sent it if the packet still carries it (transmit path, veth); None
when there is neither (NO_SOCKET: nothing listens).  reason is the kernel's enum skb_drop_reason name, read from this
kernel's BTF.  stack is symbolized from /proc/kallsyms, innermost first,
starting at the function that freed the packet.  PID is the task current
at the drop (often 0 or unrelated: most drops happen in softirq).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import (Clock, LATENCY_NOTE, Output, add_common, add_container_args, add_family_args,
                            container_filters, family_of, json_renderer, netns_inode, process_id, run_stream)
from ..core.containers import Labels
from ..core.drops import DROP_REASONS, TRACING_PREFIXES
from ..core.errors import UsageError
from ..core.loader import Variant
from ..core.net import AF_INET, AF_INET6, STATE_NAMES, AddrFormatter, TcpState, addr_obj
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpdrop"
SUMMARY = "TCP packets dropped by the kernel: addresses, state, flags, reason, stack"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

# include/net/tcp.h TCPHDR_*, in BCC's order
_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"),
               (0x10, "ACK"), (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"))
FLAGS_TEXT = tuple("|".join(n for bit, n in _FLAG_NAMES if f & bit) for f in range(256))
_MACHINERY_DEPTH = 10      # the tracing frames above the drop, at most (classic tracepoints have most)


@dataclass(frozen=True, slots=True)
class TcpDropEvent:
    ts_ns: int                 # CLOCK_MONOTONIC
    pid: int
    family: int
    saddr: Addr
    sport: int
    daddr: Addr
    dport: int
    state: TcpState | None     # None: the packet reached no socket
    flags: str                 # "SYN", "ACK|PSH"... as BCC prints them
    reason: str                # enum skb_drop_reason name without SKB_DROP_REASON_
    stack: tuple[str, ...]     # "function+0xoff", innermost first
    skaddr: int
    netns: int                 # inode number of the network namespace
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "ip": 4 if self.family == AF_INET else 6,
                "saddr": str(self.saddr), "sport": self.sport, "daddr": str(self.daddr), "dport": self.dport,
                "state": None if self.state is None else getattr(self.state, "name", str(self.state)),
                "flags": self.flags, "reason": self.reason, "stack": list(self.stack),
                "skaddr": f"{self.skaddr:x}", "netns": self.netns,
                **(self.labels.to_dict() if self.labels else {})}


class TcpDrop(EventTracer):
    OBJECT = "tcpdrop"
    EVENT = "tcpdrop_event"
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcpdrop_tp_btf",), needs=DROP_REASONS),
        Variant("raw_tp", ("tcpdrop_raw_tp",), needs=DROP_REASONS),
        Variant("tracepoint", ("tcpdrop_tracepoint",), needs=DROP_REASONS),
    )

    def __init__(self, *, family: int = 0, **kw: Any):
        """kw: netns= (the packet's: its device's, else its socket's; an inode,
        `ip netns` name or path), cgroup=, container= (the socket's; drops
        without a socket pass none of them)... (core/tracer.py)"""
        super().__init__(**kw)
        self.family = family

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family}

    def setup(self) -> None:
        super().setup()
        self.prepare_replay()

    def prepare_replay(self) -> None:
        """The kernel's tables that records are read with: drop reason names
        (this kernel's BTF) and symbols (/proc/kallsyms).  Also called by
        `pytrace replay`, which can only be right on the recording's boot."""
        from ..core.drops import DropNames
        self.names = DropNames()

    def reason_name(self, value: int) -> str:
        return self.names.reason(value)

    def stack_of(self, raw: tuple) -> list[str]:
        """The symbolized stack of a raw record, tracing frames removed (core/drops.py).

        The innermost frame is our BPF program, whose symbol leaves kallsyms
        with it: replayed later it resolves to nonsense, which would stop the
        trimming there.  So everything up to the outermost tracing frame near
        the top (bpf_trace_run*, perf_trace_*...) goes, whatever it resolves
        to, and live and replayed stacks agree."""
        n = max(0, raw[self.idx["stack_bytes"]]) // 8
        at = self.idx["stack[0]"]
        addrs = raw[at:at + n]
        fn = self.names.ksyms.function
        top = [i for i, a in enumerate(addrs[:_MACHINERY_DEPTH]) if fn(a).startswith(TRACING_PREFIXES)]
        return self.names.stack(addrs[top[-1] + 1:] if top else addrs)

    def make_event(self, raw: tuple) -> TcpDropEvent:
        i = self.idx
        fam = raw[i["family"]]
        state = raw[i["state"]]
        return TcpDropEvent(raw[i["ts_ns"]], raw[i["pid"]], fam, addr_obj(fam, raw[i["saddr"]]), raw[i["sport"]],
                            addr_obj(fam, raw[i["daddr"]]), raw[i["dport"]],
                            TcpState.of(state) if state else None, FLAGS_TEXT[raw[i["tcpflags"]]],
                            self.reason_name(raw[i["reason"]]), tuple(self.stack_of(raw)), raw[i["skaddr"]],
                            raw[i["netns"]], *self.owner(raw, netns=False))


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = f"Trace TCP drops by the kernel. {LATENCY_NOTE}"
    add_family_args(p)
    ns = p.add_mutually_exclusive_group()
    ns.add_argument("--netns-id", type=netns_inode, default=0, metavar="INODE",
                    help="only this network namespace (its inode number, as in ls -L -i /proc/PID/ns/net)")
    ns.add_argument("--pid-netns", type=process_id, default=0, metavar="PID",
                    help="only the network namespace of this process")
    add_container_args(p, TcpDrop)
    add_common(p, [v.hook for v in TcpDrop.VARIANTS])


def _netns(args: argparse.Namespace) -> int:
    if args.pid_netns:
        try:
            return os.stat(f"/proc/{args.pid_netns}/ns/net").st_ino
        except OSError:
            raise UsageError(f"--pid-netns {args.pid_netns}: no such process") from None
    return args.netns_id


def run(args: argparse.Namespace) -> int:
    kw = container_filters(args)
    if _netns(args):
        if "netns" in kw:
            raise UsageError("--netns and --netns-id/--pid-netns: one of them")
        kw["netns"] = _netns(args)
    tracer = TcpDrop(family=family_of(args), hook=args.hook, **kw)
    return run_stream(tracer, args, renderer)


def renderer(source: TcpDrop, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the live tracer,
    or a recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, out)


def _text_renderer(tracer: TcpDrop, out: Output):
    """BCC tcpdrop's lines (plus REASON), each followed by its stack and a blank line."""
    out.write("%-8s %-7s %-2s %-20s > %-20s %s (%s) %s\n" % ("TIME", "PID", "IP", "SADDR:SPORT", "DADDR:DPORT",
                                                           "STATE", "FLAGS", "REASON"))
    i = tracer.idx
    i_ts, i_pid, i_fam, i_sa, i_sp = i["ts_ns"], i["pid"], i["family"], i["saddr"], i["sport"]
    i_da, i_dp, i_state, i_flags, i_reason = i["daddr"], i["dport"], i["state"], i["tcpflags"], i["reason"]
    addr, clock, states = AddrFormatter(), Clock(), STATE_NAMES
    ipver = {AF_INET: 4, AF_INET6: 6}

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam, state = r[i_fam], r[i_state]
            lines.append("%-8s %-7d %-2d %-20s > %-20s %s (%s) %s\n" % (
                clock.hms(r[i_ts]), r[i_pid], ipver.get(fam, 0), f"{addr(fam, r[i_sa])}:{r[i_sp]}",
                f"{addr(fam, r[i_da])}:{r[i_dp]}", states[state] if state else "-", FLAGS_TEXT[r[i_flags]],
                tracer.reason_name(r[i_reason])))
            lines.extend(f"\t{frame}\n" for frame in tracer.stack_of(r))
            lines.append("\n")
        return "".join(lines)
    return render
