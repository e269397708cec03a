"""tcpsubnet: TCP bytes sent per destination subnet, summed in the kernel.

Library:

    from pytrace.tools.tcpsubnet import TcpSubnet
    with TcpSubnet("192.0.2.0/24,2001:db8::/32,0.0.0.0/0") as t:
        time.sleep(5)
        for s in t.read():                  # SubnetBytes: subnets that got bytes since the last read()
            print(s.subnet, s.bytes)

Each send is counted under the first subnet in the list that holds its
destination, like BCC.  Unlike BCC, IPv6 subnets work too, and IPv6 sockets
talking to v4-mapped addresses count under the IPv4 subnets.  Bytes not in
any subnet are not counted (BCC's default list ends with 0.0.0.0/0 to catch
the rest of IPv4; add ::/0 for IPv6).
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from typing import Any, Sequence

from ..cli.aggregate import local_time
from ..cli.cliutil import bad_value, intervals, seconds
from ..core.errors import UsageError
from ..core.loader import Variant
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Snapshot
from ..spec import TABLE, EventType, Option, ToolSpec, print_program, public_classes

DEFAULT_SUBNETS = "127.0.0.1/32,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,0.0.0.0/0"
MAX_SUBNETS = 32     # as in tcpsubnet.bpf.c
SUBNET_TEXT = 47     # characters of a subnet's text a row keeps (struct tcpsubnet_row)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# -f: BCC's units (bits or bytes, plain, K or M with 1024 steps)
FORMATS = {"b": (8, 1), "k": (8, 1024), "m": (8, 1024 ** 2),
           "B": (1, 1), "K": (1, 1024), "M": (1, 1024 ** 2)}

# struct tcpsubnet_row of src/bpf/tcpsubnet.bpf.c: the rows user space makes from
# the per-CPU sums (build.py generates SubnetBytes from its BTF)
SUBNET_ROW = EventType("SubnetBytes", struct="tcpsubnet_row", doc="The bytes sent to one subnet in a period.",
                       fields="""
    index                       # position in the subnet list
    subnet: text                # as the user wrote it, e.g. 10.0.0.0/8
    bytes                       # bytes sent to it in the period
    -pad
""")


class Subnet:
    """One subnet of the list: its text as written, and the network (host bits cleared)."""

    __slots__ = ("text", "network")

    def __init__(self, text: str, network: Network):
        self.text, self.network = text, network

    def __repr__(self) -> str:
        return f"Subnet({self.text!r}, {self.network})"


def parse_subnets(spec: str | Sequence[str | Subnet]) -> list[Subnet]:
    """"a/n,b/m" (or a list) -> Subnets; a bad one is a UsageError naming it."""
    parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for text in parts:
        if isinstance(text, Subnet):
            out.append(text)
            continue
        addr, slash, bits = text.partition("/")
        if not slash or not bits.isdigit():
            raise UsageError(f"subnet '{text}': expected ADDRESS/PREFIXLEN, e.g. 10.0.0.0/8 or 2001:db8::/32")
        if len(text) > SUBNET_TEXT:
            raise UsageError(f"subnet '{text[:60]}': longer than {SUBNET_TEXT} characters")
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise UsageError(f"subnet '{text}': {exc}") from None
        out.append(Subnet(text, net))
    if not out:
        raise UsageError("no subnets given")
    if len(out) > MAX_SUBNETS:
        raise UsageError(f"at most {MAX_SUBNETS} subnets ({len(out)} given)")
    return out


def _words(raw: bytes, fmt: str) -> list[int]:
    """Address bytes as the kernel compares them: native words of memory."""
    return list(struct.unpack("<" + fmt * (len(raw) // struct.calcsize(fmt)), raw))


class TcpSubnet(Tracer):
    OBJECT = "tcpsubnet"
    SCOPE = TASK_SCOPE
    VARIANTS = (
        Variant("kprobe", ("tcpsubnet_kprobe",)),
        Variant("tp_btf", ("tcpsubnet_tp_btf",), needs="tracepoint sock_send_length"),
        Variant("raw_tp", ("tcpsubnet_raw_tp",), needs="tracepoint sock_send_length"),
        Variant("tracepoint", ("tcpsubnet_tracepoint",), needs="tracepoint sock_send_length"),
    )

    def __init__(self, subnets: str | Sequence[str | Subnet] = DEFAULT_SUBNETS, *, hook: str | None = None,
                 **scope: Any):
        """scope: netns= (the sockets': an inode, `ip netns` name or path), cgroup=,
        container= (the sending task's)... (core/tracer.py)"""
        super().__init__(hook=hook, **scope)
        self.subnets = parse_subnets(subnets)
        self._base: dict[int, int] = {}

    def rodata(self) -> dict[str, Any]:
        ro: dict[str, Any] = {}
        v4 = [(i, s.network) for i, s in enumerate(self.subnets) if s.network.version == 4]
        v6 = [(i, s.network) for i, s in enumerate(self.subnets) if s.network.version == 6]
        ro["n4"], ro["idx4"] = len(v4), [i for i, _ in v4]
        ro["net4"] = [_words(n.network_address.packed, "I")[0] for _, n in v4]
        ro["mask4"] = [_words(n.netmask.packed, "I")[0] for _, n in v4]
        ro["n6"], ro["idx6"] = len(v6), [i for i, _ in v6]
        ro["net6"] = [w for _, n in v6 for w in _words(n.network_address.packed, "Q")]
        ro["mask6"] = [w for _, n in v6 for w in _words(n.netmask.packed, "Q")]
        return ro

    def setup(self) -> None:
        self._bytes = self.obj.map("subnet_bytes")

    def read(self, reset: bool = True) -> list:
        """Subnets (SubnetBytes) that got bytes since the last read(reset=True) (or
        the start), in list order.  The kernel's sums are never cleared: periods
        are differences, so no byte is lost between two reads."""
        make = SUBNET_ROW.cls
        out = []
        for i, s in enumerate(self.subnets):
            total = self._bytes.percpu_sum(struct.pack("<I", i)) or 0
            delta = total - self._base.get(i, 0)
            if reset:
                self._base[i] = total
            if delta:
                out.append(make(i, s.text, delta))
        return out


__getattr__ = public_classes(__name__, SubnetBytes=SUBNET_ROW)


# -- command line ---------------------------------------------------------------

def _subnets_arg(text: str) -> list[Subnet]:
    try:
        return parse_subnets(text)
    except UsageError as exc:
        raise bad_value(str(exc)) from None


def scaled(nbytes: int, fmt: str) -> int | float:
    """BCC's -f conversion: bits/bytes stay integers, K and M are true divisions."""
    mult, div = FORMATS[fmt]
    return nbytes * mult if div == 1 else nbytes * mult / div


def intro(args: Any) -> str:
    if args.print_program:      # -v: BCC logs the subnets it evaluates (the program follows, spec.run)
        subnets = parse_subnets(args.subnets)
        sys.stderr.write("".join(f"subnet {i}: {s.text} -> {s.network}\n" for i, s in enumerate(subnets)))
    return "" if args.bcc_json else f"Tracing... Output every {args.interval} secs. Hit Ctrl-C to end\n"


def text(snap: Snapshot, args: Any) -> str:
    """BCC's output: the date and time, then each subnet, largest first ("%-21s %6d"
    in -f units); -J: its JSON object per interval ({"date", "time", "entries"})."""
    rows = sorted(SPEC.rows(snap), key=lambda r: (-r.bytes, r.index))
    if args.bcc_json:
        import json
        rec = {"date": local_time(snap, "%x"), "time": local_time(snap, "%X"),
               "entries": {r.subnet: scaled(r.bytes, args.format) for r in rows}}
        return json.dumps(rec) + "\n"
    lines = [local_time(snap, "[%x %X]")]
    lines += [f"{r.subnet:<21} {int(scaled(r.bytes, args.format)):>6}" for r in rows]
    return "\n".join(lines) + "\n"


SPEC = ToolSpec(
    "tcpsubnet", "TCP bytes sent, summed per destination subnet", TcpSubnet, TABLE,
    description=("Summarize TCP send and aggregate by subnet. IPv6 subnets work too (BCC: IPv4 only). "
                 "-J prints BCC's JSON (an object per interval); --json pytrace's (an object per subnet)."),
    event=SUBNET_ROW,
    labels=("subnet", "index"), values=("bytes",),
    options=(
        Option("subnets", nargs="?", type=_subnets_arg, default=DEFAULT_SUBNETS, kw="subnets",
               help=f"comma separated list of subnets, IPv4 or IPv6 (default {DEFAULT_SUBNETS})"),
        print_program("-v", "--verbose", stream="stderr",
                      help="verbose: print the subnets as evaluated and the BPF program (on stderr), then trace"),
        Option("-J", dest="bcc_json", action="store_true",
               help="format output in JSON, as BCC: an object per interval (--json: one per subnet)"),
        Option("-f", "--format", default="B", choices=list(FORMATS),
               help="[bkmBKM] format to report: bits, Kbits, Mbits, bytes, KBytes, MBytes (default B)"),
        Option("-i", "--interval", type=seconds, default=1, metavar="SEC",
               help="output interval, in seconds (default 1)"),
        Option("-c", "--count", type=intervals, metavar="N", help="stop after N intervals"),
        Option("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds"),
    ),
    netns_flags=("-N", "--netns"),      # filter.h's --netns (an inode, ip netns name or path)
    read=lambda tracer, args: tracer.read(),
    text=text, intro=intro,
    examples=(
        ("pytrace tcpsubnet", "summarize TCP traffic by the default subnets"),
        ("pytrace tcpsubnet 0.0.0.0/0", "summarize all IPv4 TCP traffic"),
        ("pytrace tcpsubnet -J -fk 0.0.0.0/0", "all IPv4 TCP traffic, in BCC's JSON and Kb"),
        ("pytrace tcpsubnet 192.0.2.0/24,2001:db8::/32,0.0.0.0/0,::/0", "IPv6 subnets too"),
        ("pytrace tcpsubnet -i 10 -c 6", "every 10 seconds, 6 times"),
    ),
)
