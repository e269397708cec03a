"""The command line of the aggregating tools that print on an interval
(tcpsynbl, netsize, qdisclat, skblife, skbdrop, tcpnagle, nettxlat...).

Such a tool reads its in-kernel maps into a sinks.Snapshot (one Series per
histogram or row, labels saying which), and renders text or JSON from that
snapshot only, so that --record/--influx get exactly what is printed and
`pytrace replay` can print it again (the replay protocol in sinks/__init__.py):

    def intro(args) -> str                       # printed once, before the first output
    def render_snapshot(snap, args) -> str       # one interval's output

    def run(args):
        with Tool(...) as t:
            return print_loop(args, lambda: t.snapshot(clear=bool(args.interval)), render_snapshot, intro)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

from ..sinks.snapshot import Snapshot
from .cliutil import positive_int, publish, wall_iso
from .errors import UsageError
from .periodic import ticks


def add_interval_args(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """-T plus either libbpf-tools' positional `[interval] [count]` or the
    book tools' -i SEC / -c N / -d SEC (printed at Ctrl-C when no interval)."""
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    if positional:
        p.add_argument("interval", nargs="?", type=positive_int, help="print every INTERVAL seconds")
        p.add_argument("count", nargs="?", type=positive_int, help="number of outputs")
        p.set_defaults(duration=None)
    else:
        p.add_argument("-i", "--interval", type=positive_int, metavar="SEC",
                       help="print (and reset) every SEC seconds")
        p.add_argument("-c", "--count", type=positive_int, metavar="N", help="stop after N intervals")
        p.add_argument("-d", "--duration", type=positive_int, metavar="SEC", help="total run time in seconds")


def check_interval_args(args: argparse.Namespace) -> None:
    if args.count and not args.interval:
        raise UsageError("a count needs an interval")


def print_loop(args: argparse.Namespace, snapshot: Callable[[], Snapshot],
               render_snapshot: Callable[[Snapshot, argparse.Namespace], str],
               intro: Callable[[argparse.Namespace], str]) -> int:
    """Print intro, then one snapshot per interval (or one at the end), each
    also handed to the session's sinks.  Ctrl-C prints the partial interval."""
    check_interval_args(args)
    sys.stdout.write(intro(args))
    sys.stdout.flush()
    for _last in ticks(args.interval, count=args.count, duration=args.duration):
        snap = snapshot()
        publish(snap)
        sys.stdout.write(render_snapshot(snap, args))
        sys.stdout.flush()
    return 0


def timestamp_line(snap: Snapshot, args: argparse.Namespace) -> str:
    if not getattr(args, "timestamp", False):
        return ""
    return time.strftime("%H:%M:%S", time.localtime(snap.time_ns // 1_000_000_000)) + "\n"


def json_lines(snap: Snapshot) -> str:
    """One JSON object per series: ts, its labels, its values and its histogram."""
    out = []
    for s in snap.series:
        rec: dict = {"ts": wall_iso(snap.time_ns), **dict(s.labels), **dict(s.values)}
        if s.hist is not None:
            rec.update(s.hist.to_dict())
        out.append(json.dumps(rec) + "\n")
    return "".join(out)
