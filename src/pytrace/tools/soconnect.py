"""soconnect: IP connect() calls with address, port, latency and result.

Library:

    from pytrace.tools.soconnect import SoConnect
    with SoConnect(pid=1234) as t:
        for ev in t.events(duration=10):          # ConnectCall, frozen
            print(ev.comm, ev.addr, ev.port, ev.lat_us, ev.result)

LAT(us) is the time spent in the connect() call: the whole handshake for a
blocking connect, the call alone for a non-blocking one (result "In
progress"; soconnlat follows those to poll/select/epoll).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..core.cliutil import Output, container_filters, run_stream
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, addr_obj, comm_text
from ..core.socklayer import CONNECT_RESULTS, add_call_arguments, call_renderer, result_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "soconnect"
SUMMARY = "IP connect() calls with address, port, latency and result"


@dataclass(frozen=True, slots=True)
class ConnectCall:
    ts_ns: int                 # CLOCK_MONOTONIC when connect() returned
    pid: int
    tid: int
    comm: str
    fd: int
    family: int                # of the address passed: AF_INET or AF_INET6
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    lat_us: float              # time in connect()
    ret: int                   # 0 or -errno
    cgroup_id: int = 0         # filter.h labels (0 unless asked for)
    netns: int = 0
    labels: Labels | None = None

    @property
    def error(self) -> int:
        return -self.ret if self.ret < 0 else 0

    @property
    def result(self) -> str:
        return result_text(CONNECT_RESULTS, self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "pid": self.pid, "tid": self.tid, "comm": self.comm, "fd": self.fd,
                "ip": 4 if self.family == AF_INET else 6, "addr": str(self.addr), "port": self.port,
                "lat_us": round(self.lat_us, 3), "ret": self.ret, "result": self.result,
                **(self.labels.to_dict() if self.labels else {})}


class SoConnect(EventTracer):
    OBJECT = "soconnect"
    EVENT = "soconnect_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (Variant("tracepoint", ("soconnect_enter", "soconnect_exit")),)

    def __init__(self, *, pid: int = 0, rports: list[int] | None = None, **kw: Any):
        super().__init__(**kw)
        self.pid, self.rports = pid, rports or []

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "rports": self.rports, "n_rports": len(self.rports)}

    def make_event(self, raw: tuple) -> ConnectCall:
        i = self.idx
        fam = raw[i["family"]]
        return ConnectCall(raw[i["ts_ns"]], raw[i["pid"]], raw[i["tid"]], comm_text(raw[i["comm"]]),
                           raw[i["fd"]], fam, addr_obj(fam, raw[i["addr"]]), raw[i["port"]],
                           raw[i["lat_ns"]] / 1000.0, raw[i["ret"]], *self.owner(raw))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_call_arguments(p, SoConnect, "Trace IP connect() calls with address, port, latency and result.",
                       "only these destination ports")


def _line(ev: ConnectCall) -> str:
    return (f"{ev.pid:<6} {ev.comm:<16} {ev.family:<3} {str(ev.addr):<16} {ev.port:<5} "
            f"{int(ev.lat_us):>8} {ev.result}\n")


def renderer(source: SoConnect, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the live tracer,
    or a recording standing in for it in `pytrace replay`)."""
    return call_renderer(source, args, out, f"{'PID':<6} {'PROCESS':<16} FAM {'ADDRESS':<16} {'PORT':<5} "
                                            f"{'LAT(us)':>8} RESULT\n", _line, args.timestamp)


def run(args: argparse.Namespace) -> int:
    tracer = SoConnect(pid=args.pid, rports=args.port, hook=args.hook, **container_filters(args))
    return run_stream(tracer, args, renderer)
