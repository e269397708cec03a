"""sofamily: new sockets, connects and accepts by address family and process.

Library:

    from pytrace.tools.sofamily import SoFamily
    with SoFamily() as sf:
        time.sleep(5)
        for c in sf.counts():            # FamilyCount, frozen
            print(c.kind, c.pid, c.comm, c.family_name, c.count)

kind is "socket" (socket() calls, by the family asked for), "connect" (by
the family of the address passed to connect()) or "accept" (by the family
of the accepted socket).  Counted in the kernel at the syscall tracepoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.aggregate import Rows, add_interval_args, print_loop
from ..core.cliutil import add_common, add_container_args, container_filters, process_id
from ..core.loader import Variant
from ..core.socklayer import counted, cstr, family_name
from ..core.tracer import TASK_SCOPE, Tracer
from ..sinks.snapshot import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "sofamily"
SUMMARY = "new sockets, connects and accepts by address family and process"

KINDS = ("socket", "connect", "accept")   # as src/bpf/sofamily.bpf.c


@dataclass(frozen=True, slots=True)
class FamilyCount:
    kind: str            # socket, connect or accept
    pid: int
    comm: str
    family: int          # AF_* number
    count: int

    @property
    def family_name(self) -> str:
        return family_name(self.family)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pid": self.pid, "comm": self.comm, "family": self.family,
                "family_name": self.family_name, "count": self.count}


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

    def counts(self, clear: bool = False) -> list[FamilyCount]:
        out = [FamilyCount(KINDS[k["kind"]] if k["kind"] < len(KINDS) else str(k["kind"]), k["pid"],
                           cstr(k["comm"]), k["family"], n)
               for k, n in counted(self._counts, clear)]
        return sorted(out, key=lambda c: (c.kind, c.count, c.pid, c.family))


ROWS = Rows(FamilyCount, labels=("kind", "pid", "comm", "family"), values=("count",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Count new sockets (socket()), connects and accepts by address family and "
                     "process; printed at Ctrl-C or every interval.")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    add_interval_args(p)
    add_container_args(p, SoFamily)
    add_common(p, [v.hook for v in SoFamily.VARIANTS])


def render(counts: list[FamilyCount]) -> str:
    lines = [f"{'KIND':<8} {'PID':>7} {'COMM':<16} {'FAM':>3} {'FAMILY':<12} {'COUNT':>8}"]
    for c in counts:
        lines.append(f"{c.kind:<8} {c.pid:>7} {c.comm:<16} {c.family:>3} {c.family_name:<12} {c.count:>8}")
    return "\n".join(lines) + "\n\n"


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing socket()/connect()/accept() address families. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    return ROWS.render(snap, args, render)


def run(args: argparse.Namespace) -> int:
    with SoFamily(pid=args.pid, hook=args.hook, **container_filters(args)) as tracer:
        return print_loop(args, lambda: ROWS.snapshot(NAME, tracer.counts(clear=bool(args.interval)), args.interval),
                          render_snapshot, intro)
