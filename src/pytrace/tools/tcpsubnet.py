"""tcpsubnet: TCP bytes sent per destination subnet, summed in the kernel.

Library:

    from pytrace.tools.tcpsubnet import TcpSubnet
    with TcpSubnet("192.0.2.0/24,2001:db8::/32,0.0.0.0/0") as t:
        time.sleep(5)
        for s in t.read():                  # subnets that got bytes since the last read()
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
from dataclasses import dataclass
from typing import Any, Sequence

from ..core.aggregate import local_time, print_loop
from ..core.cliutil import add_common, add_container_args, bad_value, container_filters, seconds
from ..core.errors import UsageError
from ..core.loader import Variant
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpsubnet"
SUMMARY = "TCP bytes sent, summed per destination subnet"

DEFAULT_SUBNETS = "127.0.0.1/32,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,0.0.0.0/0"
MAX_SUBNETS = 32     # as in tcpsubnet.bpf.c

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# -f: BCC's units (bits or bytes, plain, K or M with 1024 steps)
FORMATS = {"b": (8, 1), "k": (8, 1024), "m": (8, 1024 ** 2),
           "B": (1, 1), "K": (1, 1024), "M": (1, 1024 ** 2)}


@dataclass(frozen=True, slots=True)
class Subnet:
    text: str            # as the user wrote it, e.g. "10.0.0.0/8"
    network: Network     # host bits cleared


@dataclass(frozen=True, slots=True)
class SubnetBytes:
    index: int           # position in the subnet list
    subnet: str          # as the user wrote it
    network: Network
    bytes: int           # bytes sent to it in the period

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "subnet": self.subnet, "bytes": self.bytes}


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

    def read(self, reset: bool = True) -> list[SubnetBytes]:
        """Subnets that got bytes since the last read(reset=True) (or the start),
        in list order.  The kernel's sums are never cleared: periods are
        differences, so no byte is lost between two reads."""
        out = []
        for i, s in enumerate(self.subnets):
            total = self._bytes.percpu_sum(struct.pack("<I", i)) or 0
            delta = total - self._base.get(i, 0)
            if reset:
                self._base[i] = total
            if delta:
                out.append(SubnetBytes(i, s.text, s.network, delta))
        return out


# -- command line ---------------------------------------------------------------

def _subnets_arg(text: str) -> list[Subnet]:
    try:
        return parse_subnets(text)
    except UsageError as exc:
        raise bad_value(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Summarize TCP send and aggregate by subnet."
    p.add_argument("subnets", nargs="?", type=_subnets_arg, default=DEFAULT_SUBNETS,
                   help=f"comma separated list of subnets, IPv4 or IPv6 (default {DEFAULT_SUBNETS})")
    p.add_argument("-J", dest="json", action="store_true", help="format output in JSON (same as --json)")
    p.add_argument("-f", "--format", default="B", choices=list(FORMATS),
                   help="[bkmBKM] format to report: bits, Kbits, Mbits, bytes, KBytes, MBytes (default B)")
    p.add_argument("-i", "--interval", type=seconds, default=1,
                   help="output interval, in seconds (default 1)")
    add_container_args(p, TcpSubnet, netns_flags=("-N", "--netns"))
    add_common(p, [v.hook for v in TcpSubnet.VARIANTS])


def scaled(nbytes: int, fmt: str) -> int | float:
    """BCC's -f conversion: bits/bytes stay integers, K and M are true divisions."""
    mult, div = FORMATS[fmt]
    return nbytes * mult if div == 1 else nbytes * mult / div


# -- snapshots: what the sinks get each interval, and what replay renders -------

def snapshot(rows: list[SubnetBytes], interval: int) -> Snapshot:
    return Snapshot.now(NAME, [Series.of({"subnet": r.subnet, "index": r.index}, {"bytes": r.bytes})
                               for r in rows], interval)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else f"Tracing... Output every {args.interval} secs. Hit Ctrl-C to end\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    # like BCC: the largest first
    rows = sorted(((s.label("subnet"), int(s.label("index")), dict(s.values)["bytes"]) for s in snap.series),
                  key=lambda r: (-r[2], r[1]))
    if args.json:
        import json
        rec = {"date": local_time(snap, "%x"), "time": local_time(snap, "%X"),
               "entries": {subnet: scaled(n, args.format) for subnet, _, n in rows}}
        return json.dumps(rec) + "\n"
    lines = [local_time(snap, "[%x %X]")]
    lines += [f"{subnet:<21} {int(scaled(n, args.format)):>6}" for subnet, _, n in rows]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    with TcpSubnet(args.subnets, hook=args.hook, **container_filters(args)) as tracer:
        return print_loop(args, lambda: snapshot(tracer.read(), args.interval), render_snapshot, intro)
