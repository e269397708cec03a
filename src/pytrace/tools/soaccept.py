"""soaccept: IP accept() calls with the peer's address and port, and the result.

Library:

    from pytrace.tools.soaccept import SoAccept
    with SoAccept(pid=1234) as t:
        for ev in t.events(duration=10):          # AcceptCall, frozen
            print(ev.comm, ev.addr, ev.port, ev.lport, ev.result)

The peer is read from the accepted socket, so it is known even when the
caller passes no address buffer.  Failed calls (e.g. "None to accept" for a
non-blocking accept) are reported with the listening socket's family.
io_uring accepts do not pass through the system calls and are not seen.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import Output, container_filters, run_stream
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, addr_obj, comm_text
from ..core.socklayer import ACCEPT_RESULTS, add_call_arguments, call_renderer, result_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "soaccept"
SUMMARY = "IP accept() calls with peer address, port and result"


@dataclass(frozen=True, slots=True)
class AcceptCall:
    ts_ns: int
    pid: int
    comm: str
    listen_fd: int
    family: int
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None   # peer (unspecified on failure)
    port: int                  # peer port (0 on failure)
    lport: int                 # listening port
    ret: int                   # new fd, or -errno
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    @property
    def error(self) -> int:
        return -self.ret if self.ret < 0 else 0

    @property
    def result(self) -> str:
        return result_text(ACCEPT_RESULTS, self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm, "listen_fd": self.listen_fd,
                "ip": 4 if self.family == AF_INET else 6, "addr": str(self.addr), "port": self.port,
                "lport": self.lport, "ret": self.ret, "result": self.result,
                **(self.labels.to_dict() if self.labels else {})}


class SoAccept(EventTracer):
    OBJECT = "soaccept"
    EVENT = "soaccept_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (Variant("tracepoint", ("soaccept_enter4", "soaccept_enter", "soaccept_exit4",
                                       "soaccept_exit")),)

    def __init__(self, *, pid: int = 0, lports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.lports = pid, lports or []

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "lports": self.lports, "n_lports": len(self.lports)}

    def make_event(self, raw: tuple) -> AcceptCall:
        i = self.idx
        fam = raw[i["family"]]
        return AcceptCall(raw[i["ts_ns"]], raw[i["pid"]], comm_text(raw[i["comm"]]), raw[i["listen_fd"]],
                          fam, addr_obj(fam, raw[i["addr"]]), raw[i["port"]], raw[i["lport"]], raw[i["ret"]],
                          *self.owner(raw))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_call_arguments(p, SoAccept, "Trace IP accept() calls with the peer's address and port and the result.",
                       "only these listening ports")


def _line(ev: AcceptCall) -> str:
    addr = str(ev.addr) if ev.ret >= 0 else "-"
    return f"{ev.pid:<6} {ev.comm:<16} {ev.family:<3} {addr:<16} {ev.port:<5} {ev.lport:<5} {ev.result}\n"


def renderer(source: SoAccept, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the live tracer,
    or a recording standing in for it in `pytrace replay`)."""
    return call_renderer(source, args, out, f"{'PID':<6} {'PROCESS':<16} FAM {'ADDRESS':<16} {'PORT':<5} "
                                            f"{'LPORT':<5} RESULT\n", _line, args.timestamp)


def run(args: argparse.Namespace) -> int:
    tracer = SoAccept(pid=args.pid, lports=args.port, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)
