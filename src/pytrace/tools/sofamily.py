"""sofamily: new sockets, connects and accepts by address family and process.

Library:

    from pytrace.tools.sofamily import SoFamily
    with SoFamily() as sf:
        time.sleep(5)
        for c in sf.counts():            # FamilyCount
            print(c.kind, c.pid, c.comm, c.family.name, c.count)

kind is "socket" (socket() calls, by the family asked for), "connect" (by
the family of the address passed to connect()) or "accept" (by the family
of the accepted socket).  Counted in the kernel at the syscall tracepoints.
"""

from __future__ import annotations

from ..core import convert
from ..cli.aggregate import timestamp_line
from ..core.loader import Variant
from ..core.socklayer import family_number, table_rows
from ..core.tracer import TASK_SCOPE, Tracer
from ..spec import TABLE, Column, EventType, ToolSpec, interval_flags, pid, public_classes, timestamp
from ..spec.text import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KINDS = ("socket", "connect", "accept")   # as src/bpf/sofamily.bpf.c


def kind_value(v: int) -> str:
    return KINDS[v] if v < len(KINDS) else str(v)


convert.register(convert.Conversion("sofamily_kind", kind_value, None, convert.text_parse, kind="str"))

# A row of the counts map: key struct sofamily_key, value the count
FAMILY_COUNT = EventType("FamilyCount", map="counts", doc="Calls of one kind, by one process, in one family.",
                         fields="""
    kind: sofamily_kind         # socket, connect or accept
    pid
    comm: text
    family: family              # AF_INET, AF_INET6, AF_UNIX...
    count <- value
    -pad
""")


class SoFamily(Tracer):
    OBJECT = "sofamily"
    SCOPE = TASK_SCOPE
    VARIANTS = (Variant("tracepoint", ("sofamily_socket", "sofamily_connect", "sofamily_accept4",
                                       "sofamily_accept")),)

    def __init__(self, *, pid: int = 0, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid = pid

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid}

    def setup(self) -> None:
        self._counts = self.obj.map("counts")

    def counts(self, clear: bool = False) -> list:
        """FamilyCount rows since the start (or the last clear), by kind, fewest first."""
        out = table_rows(self._counts, FAMILY_COUNT.cls, clear)
        return sorted(out, key=lambda c: (c.kind, c.count, c.pid, c.family))


__getattr__ = public_classes(__name__, FamilyCount=FAMILY_COUNT)


COLUMNS = (
    Column("KIND", "kind", width=8),
    Column("PID", "pid", width=7, align=">"),
    Column("COMM", "comm", width=16),
    Column("FAM", lambda d: family_number(d["family"]), width=3, align=">"),
    Column("FAMILY", "family", width=12),
    Column("COUNT", "count", width=8, align=">"),
)


def text(snap: Any, args: Any) -> str:
    return timestamp_line(snap, args) + table(COLUMNS, SPEC.rows(snap), args) + "\n"


SPEC = ToolSpec(
    "sofamily", "new sockets, connects and accepts by address family and process", SoFamily, TABLE,
    description=("Count new sockets (socket()), connects and accepts by address family and "
                 "process; printed at Ctrl-C or every interval."),
    event=FAMILY_COUNT,
    labels=("kind", "pid", "comm", "family"), values=("count",),
    options=(pid("only this process"), *interval_flags(), timestamp()),
    read=lambda tracer, args: tracer.counts(clear=bool(args.interval)),
    columns=COLUMNS, text=text,
    intro="Tracing socket()/connect()/accept() address families. Ctrl-C to end.\n",
    examples=(
        ("pytrace sofamily", "counts of every process, at Ctrl-C"),
        ("pytrace sofamily -i 1 -T", "every second, with the time"),
        ("pytrace sofamily -p 181 -d 10", "process 181 for 10 seconds"),
        ("pytrace sofamily --json", "one JSON object per process, kind and family"),
    ),
)
