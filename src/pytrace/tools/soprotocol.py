"""soprotocol: connects and accepts by transport protocol and process.

Library:

    from pytrace.tools.soprotocol import SoProtocol
    with SoProtocol() as sp:
        time.sleep(5)
        for c in sp.counts():            # ProtocolCount, frozen
            print(c.kind, c.comm, c.protocol_name, c.kproto, c.count)

kproto is the kernel's name of the socket's protocol implementation
(TCP, TCPv6, UDP, UDPv6, UNIX-STREAM...).  Counted in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.aggregate import Rows, add_interval_args, print_loop
from ..core.cliutil import add_common, add_container_args, container_filters, process_id
from ..core.loader import Variant
from ..core.socklayer import counted, cstr, family_name, protocol_name, type_name
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "soprotocol"
SUMMARY = "connects and accepts by transport protocol and process"

KINDS = ("connect", "accept")   # as src/bpf/soprotocol.bpf.c


@dataclass(frozen=True, slots=True)
class ProtocolCount:
    kind: str            # connect or accept
    pid: int
    comm: str
    protocol: int        # sk_protocol: 6 TCP, 17 UDP, 0 for AF_UNIX...
    kproto: str          # the kernel's struct proto name: TCP, UDPv6, UNIX-STREAM...
    family: int
    type: int            # SOCK_STREAM, SOCK_DGRAM...
    count: int

    @property
    def protocol_name(self) -> str:
        return protocol_name(self.protocol)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pid": self.pid, "comm": self.comm, "protocol": self.protocol,
                "protocol_name": self.protocol_name, "kproto": self.kproto,
                "family": family_name(self.family), "type": type_name(self.type), "count": self.count}


class SoProtocol(Tracer):
    OBJECT = "soprotocol"
    SCOPE = TASK_SCOPE
    VARIANTS = (
        Variant("kprobe", ("soprotocol_kprobe_connect", "soprotocol_kprobe_accept")),
        Variant("tracepoint", ("soprotocol_connect", "soprotocol_accept4", "soprotocol_accept")),
    )

    def __init__(self, *, pid: int = 0, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid = pid

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid}

    def setup(self) -> None:
        self._counts = self.obj.map("counts")

    def counts(self, clear: bool = False) -> list[ProtocolCount]:
        out = [ProtocolCount(KINDS[k["kind"]] if k["kind"] < len(KINDS) else str(k["kind"]), k["pid"],
                             cstr(k["comm"]), k["protocol"], cstr(k["proto_name"]), k["family"], k["type"], n)
               for k, n in counted(self._counts, clear)]
        return sorted(out, key=lambda c: (c.kind, c.count, c.pid, c.protocol, c.kproto))


ROWS = Rows(ProtocolCount, labels=("kind", "pid", "comm", "protocol", "kproto", "family", "type"),
            values=("count",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Count connects and accepts by transport protocol and process; printed at "
                     "Ctrl-C or every interval.")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    add_interval_args(p)
    add_container_args(p, SoProtocol)
    add_common(p, [v.hook for v in SoProtocol.VARIANTS])


def render(counts: list[ProtocolCount]) -> str:
    lines = [f"{'KIND':<8} {'PID':>7} {'COMM':<16} {'PROTO':>5} {'PROTOCOL':<14} {'KPROTO':<12} {'COUNT':>8}"]
    for c in counts:
        lines.append(f"{c.kind:<8} {c.pid:>7} {c.comm:<16} {c.protocol:>5} {c.protocol_name:<14} "
                     f"{c.kproto:<12} {c.count:>8}")
    return "\n".join(lines) + "\n\n"


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing socket connect/accepts. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    return ROWS.render(snap, args, render)


def run(args: argparse.Namespace) -> int:
    with SoProtocol(pid=args.pid, hook=args.hook, **container_filters(args)) as tracer:
        return print_loop(args, lambda: ROWS.snapshot(NAME, tracer.counts(clear=bool(args.interval)), args.interval),
                          render_snapshot, intro)
