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

from ..core import convert
from ..cli.aggregate import timestamp_line
from ..cli.cliutil import netns_inode, stack_storage
from ..core.drops import DROP_REASONS, DropNames
from ..core.loader import Variant
from ..core.socklayer import protocol_name, table_rows
from ..core.tracer import Tracer
from ..core.usyms import read_stack
from ..spec import TABLE, EventType, Option, ToolSpec, interval_flags, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


convert.register(convert.Conversion("skb_protocol", protocol_text, None, convert.text_parse, needs=("ipproto",),
                                    kind="str"))

# A row of the drops map: key struct skbdrop_key, value the count; kstack (a
# stack id in the map) is resolved by counts()
SKBDROP_COUNT = EventType("SkbDropCount", map="drops", doc="Drops with one reason, protocol and kernel stack.",
                          fields="""
    reason: drop_reason         # enum skb_drop_reason's name, without SKB_DROP_REASON_
    protocol <- ethertype: skb_protocol     # "IPv4/UDP", "ARP", ...
    count <- value
    stack <- kstack: frames     # "function+0xoff", innermost first; () without stacks
    -ipproto
    -pad
""")


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

    def counts(self, clear: bool = False) -> list:
        """Drops since the start (or the last clear), one SkbDropCount per reason/protocol/stack,
        most frequent last.  (The stack map is never cleared: a key read late must still find its stack.)"""
        make = SKBDROP_COUNT.cls
        merged: dict[tuple, int] = {}
        for r in table_rows(self._drops, make, clear):      # r.stack: the stack id, as the map holds it
            key = (r.reason, r.protocol, self._stack(r.stack))
            merged[key] = merged.get(key, 0) + r.count
        out = [make(reason, proto, n, stack) for (reason, proto, stack), n in merged.items()]
        return sorted(out, key=lambda d: (d.count, d.reason, d.protocol, d.stack))


__getattr__ = public_classes(__name__, SkbDropCount=SKBDROP_COUNT)


def text(snap: Any, args: Any) -> str:
    """A block per stack (bpftrace's map print), then a summary by reason and protocol."""
    rows = SPEC.rows(snap)
    parts = [timestamp_line(snap, args)]
    if not args.no_stacks:
        for d in rows:
            frames = "".join(f"    {f}\n" for f in d.stack or ())
            parts.append(f"{frames}    {d.reason} [{d.protocol}]\n        {d.count}\n\n")
    by_reason: dict[tuple[str, str], int] = {}
    for d in rows:
        by_reason[d.reason, d.protocol] = by_reason.get((d.reason, d.protocol), 0) + d.count
    parts.append(f"{'REASON':<32} {'PROTOCOL':<14} {'COUNT':>8}\n")
    for (reason, proto), n in sorted(by_reason.items(), key=lambda kv: (kv[1], kv[0])):
        parts.append(f"{reason:<32} {proto:<14} {n:>8}\n")
    return "".join(parts) + "\n"


SPEC = ToolSpec(
    "skbdrop", "packet drops by reason, protocol and kernel stack, counted in the kernel", SkbDrop, TABLE,
    description=("Count packet drops (skb:kfree_skb), any protocol, by drop reason, protocol and kernel "
                 "stack; printed at Ctrl-C or every interval, with a summary by reason."),
    event=SKBDROP_COUNT,
    labels=("reason", "protocol", "stack"), values=("count",),
    options=(
        Option("-S", "--no-stacks", action="store_true", kw="stacks", value=lambda args: not args.no_stacks,
               help="count by reason and protocol only"),
        Option("-N", "--no-unspecified", action="store_true", kw="unspecified",
               value=lambda args: not args.no_unspecified,
               help="leave out drops without a specific reason (NOT_SPECIFIED)"),
        Option("--netns-id", type=netns_inode, default=0, metavar="INODE", kw="netns",
               help="only drops in this network namespace (inode, as ls -Li /proc/PID/ns/net)"),
        Option("--stack-storage-size", type=stack_storage, default=STACK_STORAGE, metavar="N", kw="stack_storage",
               help=f"distinct stacks kept (default {STACK_STORAGE})"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: tracer.counts(clear=bool(args.interval)),
    text=text,
    intro="Tracing skb drops by reason and kernel stack. Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace skbdrop", "drops by reason, protocol and stack, at Ctrl-C"),
        ("pytrace skbdrop -S -i 1", "by reason and protocol only, every second"),
        ("pytrace skbdrop -N", "without plain kfree_skb() drops (NOT_SPECIFIED)"),
        ("pytrace skbdrop --netns-id 4026531840", "only drops in that network namespace"),
        ("pytrace skbdrop --json", "one JSON object per reason, protocol and stack"),
    ),
)
