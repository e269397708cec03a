"""sockrmem: socket receive buffer fill, and receive queues found full.

Library:

    from pytrace.tools.sockrmem import SockRmem
    with SockRmem() as t:
        for ev in t.events(duration=10):       # RmemEvent: a queue full or a memory limit hit
            print(ev.probe, ev.rmem_alloc, ev.rcvbuf)
        alloc, limit = t.histograms()          # Log2Histogram of sk_rmem_alloc and sk_rcvbuf, bytes

The histograms sample every socket receive as it starts: bytes queued on the
socket (rmem_alloc, skb truesize included) and its limit (rcvbuf).  Where
kprobes are missing the receive system calls are sampled instead of
sock_recvmsg(), so in-kernel socket users are not.  "queue full" fires for
protocols that queue through __sock_queue_rcv_skb (ping, raw...): UDP and
TCP count their drops in nstat (UdpRcvbufErrors, TcpExtTCPRcvQDrop).
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import time
from dataclasses import dataclass
from typing import Any

from ..core import aggregate
from ..core.cliutil import (LATENCY_NOTE, Output, Terminate, active_sinks, add_common, add_container_args,
                            container_filters, emit_batch, process_id, release_stops, seconds)
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.net import comm_text
from ..core.socklayer import HIST_SLOTS, attach_with_tracefs, cstr
from ..core.stream import EventTracer
from ..core.tracer import TASK_SCOPE
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "sockrmem"
SUMMARY = "socket receive buffer fill histograms, and full receive queues"

EVENTS = ("tracepoint:sock:sock_rcvqueue_full", "tracepoint:sock:sock_exceed_buf_limit")
_EVENT_PROGS = ("sockrmem_rcvqueue_full", "sockrmem_exceed_buf_limit")


@dataclass(frozen=True, slots=True)
class RmemEvent:
    ts_ns: int
    probe: str              # one of EVENTS
    pid: int                # the current task (often not the socket's owner: softirq)
    comm: str
    rmem_alloc: int
    rcvbuf: int             # queue full: the socket's limit
    truesize: int           # queue full: the skb that did not fit
    allocated: int          # limit exceeded: the protocol's pages in use
    sysctl_rmem: int        # limit exceeded
    proto: str              # limit exceeded: the protocol (TCP, UDP...)
    mem_kind: int           # limit exceeded: 0 send, 1 receive

    def text(self) -> str:
        if self.probe == EVENTS[0]:
            return (f"{self.probe} rmem_alloc {self.rmem_alloc} > rcvbuf {self.rcvbuf}, "
                    f"skb size {self.truesize}")
        return f"{self.probe} rmem_alloc {self.rmem_alloc}, allocated {self.allocated} ({self.proto})"

    def to_dict(self) -> dict[str, Any]:
        d = {"ts_ns": self.ts_ns, "probe": self.probe, "pid": self.pid, "comm": self.comm,
             "rmem_alloc": self.rmem_alloc}
        if self.probe == EVENTS[0]:
            d.update(rcvbuf=self.rcvbuf, truesize=self.truesize)
        else:
            d.update(allocated=self.allocated, sysctl_rmem=self.sysctl_rmem, proto=self.proto,
                     kind="recv" if self.mem_kind else "send")
        return d


class SockRmem(EventTracer):
    OBJECT = "sockrmem"
    EVENT = "sockrmem_event"
    SCOPE = TASK_SCOPE
    VARIANTS = (
        Variant("kprobe", ("sockrmem_kprobe", *_EVENT_PROGS)),
        Variant("tracepoint", tuple(f"sockrmem_{c}" for c in ("read", "readv", "recvfrom", "recvmsg",
                                                              "recvmmsg")) + _EVENT_PROGS),
    )

    def __init__(self, *, pid: int = 0, **kw: Any):
        super().__init__(**kw)
        self.pid = pid

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid}

    attach = staticmethod(attach_with_tracefs)

    def setup(self) -> None:
        super().setup()
        self._hists = self.obj.map("hists")

    def make_event(self, raw: tuple) -> RmemEvent:
        i = self.idx
        kind = raw[i["kind"]]
        return RmemEvent(raw[i["ts_ns"]], EVENTS[kind] if kind < len(EVENTS) else str(kind), raw[i["pid"]],
                         comm_text(raw[i["comm"]]), raw[i["rmem_alloc"]], raw[i["rcvbuf"]], raw[i["truesize"]],
                         raw[i["allocated"]], raw[i["sysctl_rmem"]], cstr(raw[i["proto"]]), raw[i["mem_kind"]])

    def histograms(self, clear: bool = False) -> tuple[Log2Histogram, Log2Histogram]:
        """(rmem_alloc, rcvbuf) histograms in bytes, over every receive sampled."""
        out = []
        for k in (0, 1):
            key = struct.pack("<I", k)
            raw = self._hists.lookup(key)
            if raw is None:
                out.append(Log2Histogram((0,) * HIST_SLOTS, "bytes", 0, 0))
                continue
            vals = struct.unpack_from(f"<{HIST_SLOTS + 2}Q", raw)
            out.append(Log2Histogram(tuple(vals[:HIST_SLOTS]), "bytes", vals[HIST_SLOTS], vals[HIST_SLOTS + 1]))
            if clear:
                self._hists.delete(key)
        return out[0], out[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Summarize socket receive buffer fill (rmem_alloc) and limit (rcvbuf) at each receive "
                     "as histograms, printed at Ctrl-C or every interval, and print full receive queues "
                     f"and exceeded protocol memory limits as they happen. {LATENCY_NOTE}")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="histograms of this process only")
    p.add_argument("-i", "--interval", type=seconds, metavar="SEC", help="print (and reset) every SEC seconds")
    p.add_argument("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    add_container_args(p, SockRmem)
    add_common(p, [v.hook for v in SockRmem.VARIANTS])


# -- output: events as they come, histograms per interval (a Snapshot each), so that
# --record holds both ('mixed') and `pytrace replay` prints them in the same order

def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing socket receive buffer size. Hit Ctrl-C to end.\n"


def renderer(source: SockRmem, args: argparse.Namespace, out: Output):
    make = source.make_event

    def render(batch: list[tuple]) -> str:
        evs = [make(r) for r in batch]
        if args.json:
            return "".join(json.dumps({"type": "event", **e.to_dict()}) + "\n" for e in evs)
        return "".join(e.text() + "\n" for e in evs)
    return render


def hist_snapshot(tracer: SockRmem, args: argparse.Namespace) -> Snapshot:
    alloc, limit = tracer.histograms(clear=bool(args.interval))
    return Snapshot.now(NAME, [Series.of({"name": "rmem_alloc"}, hist=alloc),
                               Series.of({"name": "rmem_limit"}, hist=limit)], args.interval)


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    hists = {s.label("name"): s.hist for s in snap.series}
    if args.json:
        ts = aggregate.local_time(snap, "%Y-%m-%dT%H:%M:%S")
        return "".join(json.dumps({"type": "histogram", "ts": ts, "name": n, **h.to_dict()}) + "\n"
                       for n, h in hists.items())
    return (f"{aggregate.timestamp_line(snap, args)}@rmem_alloc:\n{hists['rmem_alloc'].render()}\n"
            f"@rmem_limit:\n{hists['rmem_limit'].render()}\n")


@contextlib.contextmanager
def _uninterrupted():
    """Ctrl-C/SIGTERM wait until what was recorded is also printed (so replay equals the output)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run(args: argparse.Namespace) -> int:
    tracer = SockRmem(pid=args.pid, hook=args.hook, **container_filters(args))
    out = Output(args.json)
    sinks = active_sinks()

    def events(batch: list[tuple]) -> None:
        with _uninterrupted():
            emit_batch(tracer, out, render, batch, sinks)

    def hists() -> None:
        with _uninterrupted():
            snap = hist_snapshot(tracer, args)
            if sinks is not None:
                sinks.snapshot(snap)
            out.write(render_snapshot(snap, args))

    with tracer:
        render = renderer(tracer, args, out)
        if sinks is not None:
            sinks.begin(tracer)
        next_print = time.monotonic() + args.interval if args.interval else None
        try:
            out.write(intro(args))
            release_stops()      # a stop held while the tool started lands here: drained below
            for batch in tracer.batches(args.duration):
                events(batch)
                if next_print is not None and time.monotonic() >= next_print:
                    hists()
                    next_print += args.interval
        except (KeyboardInterrupt, Terminate):
            pass
        try:
            events(tracer.drain())
            hists()
        except (KeyboardInterrupt, Terminate):
            pass
    return 0
