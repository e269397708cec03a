"""socketio: socket I/O calls and bytes by process, direction, protocol and port.

Library:

    from pytrace.tools.socketio import SocketIO
    with SocketIO(pid=1234) as t:
        time.sleep(5)
        for f in t.flows():                 # SocketIOCount
            print(f.comm, f.dir, f.proto, f.rport, f.calls, f.bytes)

Every call through sock_sendmsg()/sock_recvmsg() is counted (so failed and
empty calls too); bytes are those moved.  proto is the kernel's protocol name
(TCP, UDPv6, UNIX-STREAM...).  Receives that bypass sock_recvmsg (splice,
kTLS, sockmap) are not seen.
"""

from __future__ import annotations

from ..cli.aggregate import timestamp_line
from ..core.socklayer import sock_io_variants, table_rows
from ..core.tracer import TASK_SCOPE, Tracer
from ..spec import TABLE, Column, EventType, Option, ToolSpec, family, interval_flags, pid, public_classes, timestamp
from ..spec.text import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# A row of the io map: key struct socketio_key, value struct socketio_val
SOCKETIO_COUNT = EventType("SocketIOCount", map="io", doc="One process's I/O in one direction on one kind of socket.",
                           fields="""
    pid
    comm: text
    dir: io_dir                 # send or recv
    family: family
    protocol: ip_protocol
    proto <- proto_name: text   # the kernel's protocol name: TCP, UDP, UNIX-STREAM...
    lport                       # 0 unless keyed by local port (by_lport)
    rport                       # the remote port (0 for sockets without one)
    calls
    bytes
    -pad
    -pad2
""")


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

    def flows(self, clear: bool = False) -> list:
        """Everything counted (SocketIOCount), fewest bytes first; clear=True starts a new interval."""
        out = table_rows(self._io, SOCKETIO_COUNT.cls, clear)
        return sorted(out, key=lambda f: (f.bytes, f.calls, f.pid))


__getattr__ = public_classes(__name__, SocketIOCount=SOCKETIO_COUNT)


COLUMNS = (
    Column("PID", "pid", width=7, align=">"),
    Column("COMM", "comm", width=16),
    Column("DIR", "dir", width=4),
    Column("PROTO", "proto", width=12),
    Column("LPORT", "lport", width=5, align=">", when="lport"),
    Column("RPORT", "rport", width=5, align=">"),
    Column("CALLS", "calls", width=8, align=">"),
    Column("BYTES", "bytes", width=12, align=">"),
)


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + table(COLUMNS, SPEC.rows(snap), args) + "\n"


SPEC = ToolSpec(
    "socketio", "socket I/O calls and bytes by process, direction, protocol and port", SocketIO, TABLE,
    description=("Count socket I/O calls and bytes by process, direction, protocol and remote "
                 "port; printed at Ctrl-C or every interval."),
    event=SOCKETIO_COUNT,
    labels=("pid", "comm", "dir", "family", "protocol", "proto", "lport", "rport"), values=("calls", "bytes"),
    options=(
        pid("only this process"),
        Option("-L", "--lport", action="store_true", kw="by_lport", help="also key by local port"),
        family("sockets"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: tracer.flows(clear=bool(args.interval)),
    columns=COLUMNS, text=text,
    intro="Tracing socket I/O. Ctrl-C to end.\n",
    examples=(
        ("pytrace socketio", "calls and bytes of every process, at Ctrl-C"),
        ("pytrace socketio -L -i 1", "keyed by local port too, every second"),
        ("pytrace socketio -p 181 -4", "IPv4 sockets of process 181"),
        ("pytrace socketio --json", "one JSON object per process, direction and port"),
    ),
)
