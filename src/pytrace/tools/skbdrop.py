"""skbdrop: packets the kernel dropped, any protocol, counted by drop reason,
protocol and kernel stack.

Library:

    from pytrace.tools.skbdrop import SkbDrop
    with SkbDrop() as t:
        time.sleep(10)
        for d in t.counts():          # SkbDropCount, most frequent last
            print(d.reason, d.protocol, d.count)
            print("\\n".join(d.stack))

Every skb:kfree_skb is a drop (consumed packets go to skb:consume_skb); the
reason is the kernel's enum skb_drop_reason name, NOT_SPECIFIED for a plain
kfree_skb().  The stack is symbolized from /proc/kallsyms, innermost first,
starting at the function that freed the packet.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from ..core.aggregate import add_interval_args, check_interval_args, print_loop, timestamp_line
from ..core.cliutil import add_common, netns_inode, stack_storage, wall_iso
from ..core.drops import DROP_REASONS, DropNames
from ..core.loader import Variant
from ..core.socklayer import counted, protocol_name
from ..core.tracer import Tracer
from ..core.usyms import read_stack
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "skbdrop"
SUMMARY = "packet drops by reason, protocol and kernel stack, counted in the kernel"

STACK_STORAGE = 4096
ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "802.1Q", 0x88A8: "802.1ad",
              0x8847: "MPLS", 0x88CC: "LLDP", 0x0004: "802.2", 0x0003: "ETH_P_ALL", 0x0000: "none"}


def protocol_text(ethertype: int, ipproto: int) -> str:
    """'IPv4/UDP', 'IPv6/TCP', 'ARP', '0x88b5'..."""
    l3 = ETHERTYPES.get(ethertype, f"0x{ethertype:04x}")
    if ethertype == 0x86DD and ipproto == 0:
        return f"{l3}/HOPOPTS"      # the first next header: hop-by-hop options (MLD...)
    if ethertype in (0x0800, 0x86DD):
        return f"{l3}/{protocol_name(ipproto).replace('IPPROTO_', '')}"
    return l3


@dataclass(frozen=True, slots=True)
class SkbDropCount:
    reason: str                 # enum skb_drop_reason name, without SKB_DROP_REASON_
    protocol: str               # "IPv4/UDP", "ARP", ...
    count: int
    stack: tuple[str, ...]      # "function+0xoff", innermost first; () without stacks

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "protocol": self.protocol, "count": self.count, "stack": list(self.stack)}


class SkbDrop(Tracer):
    OBJECT = "skbdrop"
    VARIANTS = (
        Variant("tp_btf", ("skbdrop_tp_btf",), needs=DROP_REASONS),
        Variant("raw_tp", ("skbdrop_raw_tp",), needs=DROP_REASONS),
        Variant("tracepoint", ("skbdrop_tracepoint",), needs=DROP_REASONS),
    )

    def __init__(self, *, stacks: bool = True, unspecified: bool = True, netns: int = 0,
                 stack_storage: int = STACK_STORAGE, hook: str | None = None):
        super().__init__(hook=hook)
        self.stacks, self.unspecified, self.netns, self.stack_storage = stacks, unspecified, netns, stack_storage

    def rodata(self) -> dict[str, Any]:
        return {"no_stacks": not self.stacks, "no_unspecified": not self.unspecified, "target_netns": self.netns}

    def map_sizes(self) -> dict[str, int]:
        return {"stacks": self.stack_storage if self.stacks else 1}

    def setup(self) -> None:
        self.names = DropNames()
        self._drops = self.obj.map("drops")
        self._stacks = self.obj.map("stacks")

    def _stack(self, sid: int) -> tuple[str, ...]:
        addrs, err = read_stack(self._stacks, sid)
        if addrs is None:
            return ()
        if not addrs:
            return (f"[missed kernel stack: {errno.errorcode.get(err, err)}]",)
        return tuple(self.names.stack(addrs))

    def counts(self, clear: bool = False) -> list[SkbDropCount]:
        """Drops since the start (or the last clear), one per reason/protocol/stack, most frequent last.
        (The stack map is never cleared: a key read late must still find its stack.)"""
        rows = counted(self._drops, clear)
        out = [SkbDropCount(self.names.reason(k["reason"]), protocol_text(k["ethertype"], k["ipproto"]), n,
                            self._stack(k["kstack"])) for k, n in rows]
        return sorted(out, key=lambda d: (d.count, d.reason, d.protocol, d.stack))

    def snapshot(self, clear: bool = False, interval: float | None = None) -> Snapshot:
        return Snapshot.now(NAME, [Series.of({"reason": d.reason, "protocol": d.protocol,
                                              "stack": ";".join(d.stack)}, {"count": d.count})
                                   for d in self.counts(clear)], interval)


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Count packet drops (skb:kfree_skb), any protocol, by drop reason, protocol and kernel "
                     "stack; printed at Ctrl-C or every interval, with a summary by reason.")
    p.add_argument("-S", "--no-stacks", action="store_true", help="count by reason and protocol only")
    p.add_argument("-N", "--no-unspecified", action="store_true",
                   help="leave out drops without a specific reason (NOT_SPECIFIED)")
    p.add_argument("--netns-id", type=netns_inode, default=0, metavar="INODE",
                   help="only drops in this network namespace (inode, as ls -Li /proc/PID/ns/net)")
    p.add_argument("--stack-storage-size", type=stack_storage, default=STACK_STORAGE, metavar="N",
                   help=f"distinct stacks kept (default {STACK_STORAGE})")
    add_interval_args(p)
    add_common(p, [v.hook for v in SkbDrop.VARIANTS])


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing skb drops by reason and kernel stack. Hit Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    rows = [(s.label("reason"), s.label("protocol"), s.label("stack") or "", dict(s.values)["count"])
            for s in snap.series]
    if args.json:
        import json
        ts = wall_iso(snap.time_ns)
        return "".join(json.dumps({"ts": ts, "reason": r, "protocol": p, "count": n,
                                   "stack": st.split(";") if st else []}) + "\n" for r, p, st, n in rows)
    parts = [timestamp_line(snap, args)]
    if not args.no_stacks:
        for reason, proto, stack, n in rows:
            frames = "".join(f"    {f}\n" for f in stack.split(";")) if stack else ""
            parts.append(f"{frames}    {reason} [{proto}]\n        {n}\n\n")
    by_reason: dict[tuple[str, str], int] = {}
    for reason, proto, _stack, n in rows:
        by_reason[reason, proto] = by_reason.get((reason, proto), 0) + n
    parts.append(f"{'REASON':<32} {'PROTOCOL':<14} {'COUNT':>8}\n")
    for (reason, proto), n in sorted(by_reason.items(), key=lambda kv: (kv[1], kv[0])):
        parts.append(f"{reason:<32} {proto:<14} {n:>8}\n")
    return "".join(parts) + "\n"


def run(args: argparse.Namespace) -> int:
    check_interval_args(args)
    tracer = SkbDrop(stacks=not args.no_stacks, unspecified=not args.no_unspecified, netns=args.netns_id,
                     stack_storage=args.stack_storage_size, hook=args.hook)
    with tracer:
        return print_loop(args, lambda: tracer.snapshot(clear=bool(args.interval), interval=args.interval),
                          render_snapshot, intro)
