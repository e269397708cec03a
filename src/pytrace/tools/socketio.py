"""socketio: socket I/O calls and bytes by process, direction, protocol and port.

Library:

    from pytrace.tools.socketio import SocketIO
    with SocketIO(pid=1234) as t:
        time.sleep(5)
        for f in t.flows():                 # SocketIOCount, frozen
            print(f.comm, f.dir, f.proto, f.rport, f.calls, f.bytes)

Every call through sock_sendmsg()/sock_recvmsg() is counted (so failed and
empty calls too); bytes are those moved.  proto is the kernel's protocol name
(TCP, UDPv6, UNIX-STREAM...).  Receives that bypass sock_recvmsg (splice,
kTLS, sockmap) are not seen.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ..core.aggregate import Rows, add_interval_args, print_loop
from ..core.cliutil import add_common, add_container_args, add_family_args, container_filters, family_of, process_id
from ..core.socklayer import DIRS, cstr, sock_io_variants
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "socketio"
SUMMARY = "socket I/O calls and bytes by process, direction, protocol and port"


@dataclass(frozen=True, slots=True)
class SocketIOCount:
    pid: int
    comm: str
    dir: str              # send or recv
    family: int
    protocol: int
    proto: str            # kernel protocol name: TCP, UDP, UNIX-STREAM...
    lport: int            # 0 unless keyed by local port
    rport: int            # remote port (0 for non-IP sockets)
    calls: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "dir": self.dir, "family": self.family,
                "protocol": self.protocol, "proto": self.proto, "lport": self.lport, "rport": self.rport,
                "calls": self.calls, "bytes": self.bytes}


class SocketIO(Tracer):
    OBJECT = "socketio"
    SCOPE = TASK_SCOPE
    VARIANTS = sock_io_variants("socketio")

    def __init__(self, *, pid: int = 0, by_lport: bool = False, family: int = 0, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid, self.by_lport, self.family = pid, by_lport, family

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "key_lport": self.by_lport, "targ_family": self.family}

    def setup(self) -> None:
        self._io = self.obj.map("io")
        self._kdec = self._io._decoder("key")

    def flows(self, clear: bool = False) -> list[SocketIOCount]:
        """Everything counted, fewest bytes first; clear=True starts a new interval."""
        items = self._io.items()
        out = []
        for kraw, vraw in items:
            k = self._kdec(kraw)
            calls, nbytes = struct.unpack_from("<QQ", vraw)
            out.append(SocketIOCount(k["pid"], cstr(k["comm"]), DIRS[k["dir"] & 1], k["family"], k["protocol"],
                                     cstr(k["proto_name"]), k["lport"], k["rport"], calls, nbytes))
        if clear:
            for kraw, _ in items:
                self._io.delete(kraw)
        return sorted(out, key=lambda f: (f.bytes, f.calls, f.pid))


ROWS = Rows(SocketIOCount, labels=("pid", "comm", "dir", "family", "protocol", "proto", "lport", "rport"),
            values=("calls", "bytes"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Count socket I/O calls and bytes by process, direction, protocol and remote "
                     "port; printed at Ctrl-C or every interval.")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    p.add_argument("-L", "--lport", action="store_true", help="also key by local port")
    add_family_args(p, "sockets")
    add_interval_args(p)
    add_container_args(p, SocketIO)
    add_common(p, [v.hook for v in SocketIO.VARIANTS])


def render(flows: list[SocketIOCount], lport: bool) -> str:
    lines = [f"{'PID':>7} {'COMM':<16} {'DIR':<4} {'PROTO':<12} " + (f"{'LPORT':>5} " if lport else "") +
             f"{'RPORT':>5} {'CALLS':>8} {'BYTES':>12}"]
    for f in flows:
        lines.append(f"{f.pid:>7} {f.comm:<16} {f.dir:<4} {f.proto:<12} " + (f"{f.lport:>5} " if lport else "") +
                     f"{f.rport:>5} {f.calls:>8} {f.bytes:>12}")
    return "\n".join(lines) + "\n\n"


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing socket I/O. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    return ROWS.render(snap, args, lambda flows: render(flows, args.lport))


def run(args: argparse.Namespace) -> int:
    family = family_of(args)
    with SocketIO(pid=args.pid, by_lport=args.lport, family=family, hook=args.hook, **container_filters(args)) as t:
        return print_loop(args, lambda: ROWS.snapshot(NAME, t.flows(clear=bool(args.interval)), args.interval),
                          render_snapshot, intro)
