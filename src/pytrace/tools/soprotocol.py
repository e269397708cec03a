"""soprotocol: connects and accepts by transport protocol and process.

Library:

    from pytrace.tools.soprotocol import SoProtocol
    with SoProtocol() as sp:
        time.sleep(5)
        for c in sp.counts():            # ProtocolCount
            print(c.kind, c.comm, c.protocol.name, c.kproto, c.count)

protocol is the socket's IP protocol (an IpProtocol: IPPROTO_TCP == 6;
IPPROTO_IP, 0, for AF_UNIX); kproto is the kernel's name of the socket's
protocol implementation (TCP, TCPv6, UDP, UDPv6, UNIX-STREAM...).  Counted
in the kernel.
"""

from __future__ import annotations

from ..core import convert
from ..cli.aggregate import timestamp_line
from ..core.loader import Variant
from ..core.socklayer import table_rows
from ..core.tracer import TASK_SCOPE, Tracer
from ..spec import TABLE, Column, EventType, ToolSpec, interval_flags, pid, public_classes, timestamp
from ..spec.text import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KINDS = ("connect", "accept")   # as src/bpf/soprotocol.bpf.c


def kind_value(v: int) -> str:
    return KINDS[v] if v < len(KINDS) else str(v)


convert.register(convert.Conversion("soprotocol_kind", kind_value, None, convert.text_parse, kind="str"))

# A row of the counts map: key struct soprotocol_key, value the count
PROTOCOL_COUNT = EventType("ProtocolCount", map="counts", doc="Calls of one kind, by one process, on one protocol.",
                           fields="""
    kind: soprotocol_kind       # connect or accept
    pid
    comm: text
    protocol: ip_protocol       # sk_protocol: IPPROTO_TCP, IPPROTO_UDP; IPPROTO_IP for AF_UNIX
    kproto <- proto_name: text  # the kernel's struct proto name: TCP, UDPv6, UNIX-STREAM...
    family: family
    type: sock_type             # SOCK_STREAM, SOCK_DGRAM...
    count <- value
    -pad
""")


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

    def counts(self, clear: bool = False) -> list:
        """ProtocolCount rows since the start (or the last clear), by kind, fewest first."""
        out = table_rows(self._counts, PROTOCOL_COUNT.cls, clear)
        return sorted(out, key=lambda c: (c.kind, c.count, c.pid, c.protocol, c.kproto))


__getattr__ = public_classes(__name__, ProtocolCount=PROTOCOL_COUNT)


COLUMNS = (
    Column("KIND", "kind", width=8),
    Column("PID", "pid", width=7, align=">"),
    Column("COMM", "comm", width=16),
    Column("PROTO", lambda d: int(convert.ip_protocol_parse(d["protocol"])), width=5, align=">"),
    Column("PROTOCOL", "protocol", width=14),
    Column("KPROTO", "kproto", width=12),
    Column("COUNT", "count", width=8, align=">"),
)


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + table(COLUMNS, SPEC.rows(snap), args) + "\n"


SPEC = ToolSpec(
    "soprotocol", "connects and accepts by transport protocol and process", SoProtocol, TABLE,
    description=("Count connects and accepts by transport protocol and process; printed at "
                 "Ctrl-C or every interval."),
    event=PROTOCOL_COUNT,
    labels=("kind", "pid", "comm", "protocol", "kproto", "family", "type"), values=("count",),
    options=(pid("only this process"), *interval_flags(), timestamp()),
    read=lambda tracer, args: tracer.counts(clear=bool(args.interval)),
    columns=COLUMNS, text=text,
    intro="Tracing socket connect/accepts. Ctrl-C to end.\n",
    examples=(
        ("pytrace soprotocol", "counts of every process, at Ctrl-C"),
        ("pytrace soprotocol -i 5 -c 3", "every 5 seconds, 3 times"),
        ("pytrace soprotocol -p 181", "only process 181"),
        ("pytrace soprotocol --json", "one JSON object per process, kind and protocol"),
    ),
)
