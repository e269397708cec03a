"""The command line of the aggregating tools that print on an interval
(tcprtt, tcptop, softirqs, tcpsubnet, sockstat, the so* socket tools,
tcpsynbl, netsize, qdisclat, skblife, skbdrop, tcpnagle, nettxlat...).

Such a tool reads its in-kernel maps into a sinks.Snapshot (one Series per
histogram or row, labels saying which), and renders text or JSON from that
snapshot only, so that --record/--influx get exactly what is printed and
`pytrace replay` can print it again (the replay protocol in sinks/__init__.py):

    def intro(args) -> str                       # printed once, before the first output
    def render_snapshot(snap, args) -> str       # one interval's output

    def run(args):
        with Tool(...) as t:
            return print_loop(args, lambda: t.snapshot(clear=bool(args.interval)), render_snapshot, intro)

A tool whose rows are a frozen dataclass declares once which fields name a
row and which are its numbers (Rows), and gets both directions from that.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Callable, Iterable, Mapping

from ..sinks.snapshot import Series, Snapshot
from .cliutil import intervals, publish, seconds, wall_iso
from ..core.errors import PytraceError, UsageError
from .periodic import each_tick

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see cli/argparser.py)
    import argparse


def add_interval_args(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """-T plus either libbpf-tools' positional `[interval] [count]` or the
    book tools' -i SEC / -c N / -d SEC (printed at Ctrl-C when no interval)."""
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    if positional:
        p.add_argument("interval", nargs="?", type=seconds, help="print every INTERVAL seconds")
        p.add_argument("count", nargs="?", type=intervals, help="number of outputs")
        p.set_defaults(duration=None)
    else:
        p.add_argument("-i", "--interval", type=seconds, metavar="SEC",
                       help="print (and reset) every SEC seconds")
        p.add_argument("-c", "--count", type=intervals, metavar="N", help="stop after N intervals")
        p.add_argument("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds")


def check_interval_args(args: argparse.Namespace) -> None:
    if getattr(args, "count", None) and not getattr(args, "interval", None):
        raise UsageError("a count needs an interval")


def print_loop(args: argparse.Namespace, snapshot: Callable[[], Snapshot],
               render_snapshot: Callable[[Snapshot, argparse.Namespace], str],
               intro: Callable[[argparse.Namespace], str] | None = None, *,
               between: Callable[[], None] | None = None, once: bool = False,
               gone: Callable[[], str | None] | None = None) -> int:
    """The run() of every aggregating tool: intro(args) once, then one
    snapshot() per interval of args.interval/count/duration (or one at the
    end), handed to the session's sinks (--record, --influx) and printed with
    render_snapshot(snap, args), so what is recorded is what is printed.
    Ctrl-C or SIGTERM prints the partial interval, also when it lands while
    the intro or an interval is being printed (periodic.each_tick).

    between: for a tool that prints only at the end but must look at its maps
    meanwhile (soconnlat reads the mappings of processes while they live):
    without an interval the loop then wakes every second to call it.

    once: one snapshot at Ctrl-C or SIGTERM, whatever args holds (the count
    modes of tcpconnect -c and tcpretrans -c, whose -c is not a number).

    gone: for a tool whose subject can vanish (tunnelmon's device): checked
    about twice a second; once it returns a reason, the partial interval is
    printed and the reason raised as a PytraceError (status 1)."""
    if once:
        interval = count = duration = None
    else:
        check_interval_args(args)
        interval, count, duration = (getattr(args, n, None) for n in ("interval", "count", "duration"))
    poll = between is not None and not interval
    out = sys.stdout

    def start() -> None:
        text = intro(args) if intro is not None else ""
        if text:
            out.write(text)
            out.flush()

    def emit(last: bool) -> None:
        if poll and not last:
            between()
            return
        snap = snapshot()
        publish(snap)
        out.write(render_snapshot(snap, args))
        out.flush()

    why: list[str] = []

    def stop_when() -> bool:
        reason = gone()
        if reason:
            why.append(reason)
        return bool(reason)

    each_tick(emit, 1 if poll else interval, None if poll else count, duration, start=start,
              stop_when=stop_when if gone is not None else None)
    if why:
        raise PytraceError(why[0])
    return 0


def local_time(snap: Snapshot, fmt: str = "%H:%M:%S") -> str:
    """The snapshot's wall-clock time in local time (replay sets the recording's TZ)."""
    return time.strftime(fmt, time.localtime(snap.time_ns // 1_000_000_000))


def timestamp_line(snap: Snapshot, args: argparse.Namespace) -> str:
    if not getattr(args, "timestamp", False):
        return ""
    return local_time(snap) + "\n"


def json_lines(snap: Snapshot) -> str:
    """One JSON object per series: ts, its labels, its values and its histogram."""
    out = []
    for s in snap.series:
        rec: dict = {"ts": wall_iso(snap.time_ns), **dict(s.labels), **dict(s.values)}
        if s.hist is not None:
            rec.update(s.hist.to_dict())
        out.append(json.dumps(rec) + "\n")
    return "".join(out)


# -- rows of a table <-> series of a snapshot ---------------------------------------

_FROM_LABEL: dict[Any, Callable[[str], Any]] = {"int": int, int: int, "str": str, str: str,
                                                "float": float, float: float}


class Rows:
    """The rows of an aggregating tool's table (a frozen dataclass) as the
    Series of a Snapshot, and back, for render_snapshot() and replay:

        ROWS = Rows(FamilyCount, labels=("kind", "pid", "comm", "family"), values=("count",))
        snap = ROWS.snapshot(NAME, tracer.counts(), args.interval)
        counts = ROWS.rows(snap)              # FamilyCount again

    labels are the fields that say which row it is (InfluxDB tags, what
    replay --where matches; text in a Series), values its numbers, hist a
    Log2Histogram field.  A label goes back to its field's declared type
    (int, str, float) or through convert[name]; every other field of the
    class must have a default."""

    def __init__(self, cls: type, labels: Iterable[str], values: Iterable[str] = (), hist: str | None = None,
                 convert: Mapping[str, Callable[[str], Any]] | None = None):
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        self.cls, self.labels, self.values, self.hist = cls, tuple(labels), tuple(values), hist
        self._conv = {n: (convert or {}).get(n) or _FROM_LABEL[types[n]] for n in self.labels}

    def series(self, row: Any) -> Series:
        return Series.of({n: getattr(row, n) for n in self.labels}, {n: getattr(row, n) for n in self.values},
                         getattr(row, self.hist) if self.hist else None)

    def row(self, s: Series) -> Any:
        labels, values = dict(s.labels), dict(s.values)
        kw = {n: conv(labels[n]) for n, conv in self._conv.items()}
        kw.update((n, values[n]) for n in self.values)
        if self.hist:
            kw[self.hist] = s.hist
        return self.cls(**kw)

    def snapshot(self, tool: str, rows: Iterable[Any], interval: float | None = None,
                 values: Mapping[str, Any] | None = None) -> Snapshot:
        return Snapshot.now(tool, [self.series(r) for r in rows], interval, values)

    def rows(self, snap: Snapshot) -> list[Any]:
        return [self.row(s) for s in snap.series]

    def render(self, snap: Snapshot, args: argparse.Namespace, text: Callable[[list[Any]], str]) -> str:
        """The socket tools' output: with --json one object per row, its
        to_dict() after "ts" (local time to the second); else the -T line
        and text(rows)."""
        rows = self.rows(snap)
        if args.json:
            ts = local_time(snap, "%Y-%m-%dT%H:%M:%S")
            return "".join(json.dumps({"ts": ts, **r.to_dict()}) + "\n" for r in rows)
        return timestamp_line(snap, args) + text(rows)
