"""`pytrace replay FILE`: print a recording (--record FILE) as the live tool did.

The records are decoded back into the raw tuples the live tool had and fed
to the tool's own renderer, with the tool's recorded flags and clock epoch,
so the output is the live output byte for byte (lost-event reports
included).  --json switches a text recording to the tool's JSON.  Filters:
--since/--until on the event's time and --where FIELD=VALUE (or FIELD!=VALUE)
on the fields the tool's --json shows (for aggregating tools: the labels of
each series, e.g. raddr).
"""

from __future__ import annotations

import datetime
import enum
import os
import re
import sqlite3
import struct
import sys
import time
from typing import Any, Callable

from .. import tools as registry
from ..cli import cliutil
from ..cli.argparser import ArgParser
from ..core.errors import PytraceError, UsageError, shown

DESCRIPTION = __doc__.split("\n\n", 1)[1]


# A recording holds its times as nanoseconds in SQLite's signed 64-bit
# INTEGER: the last it can hold is 2**63-1 ns, 2262-04-11T23:47:16Z.  So
# --since/--until take SECONDS (after the start, or Unix) from 0 up to that,
# and are refused beyond it when they are parsed: a time SQLite cannot bind
# is the flag's fault, not the recording's.
MAX_NS = 2**63 - 1
MAX_SECONDS = MAX_NS // 1_000_000_000           # 9223372036
TIME_RANGE = f"0-{MAX_SECONDS}"                 # shown in -h
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def recording_time(text: str) -> tuple:
    """The argparse type of --since/--until: TIME, checked and bounded, to be
    placed on a recording's time line by at().  Forms: +SECONDS[s|m|h] (after
    the recording started), HH:MM[:SS[.frac]] (on the day it started, local
    time), an ISO 8601 date-time (local unless it has an offset), or Unix
    seconds (9 digits or more)."""
    t = text.strip()
    brief = text if len(text) <= 40 else text[:40] + "..."      # (errors.shown is another thing)

    def out_of_range() -> Exception:
        return cliutil.bad_value(f"'{brief}' is out of range: +SECONDS and Unix SECONDS {TIME_RANGE}, "
                                 "a date-time from 1970-01-01 to 2262-04-11")
    m = re.fullmatch(r"\+(\d+(?:\.\d*)?)([smh]?)", t)
    if m:
        secs = float(m.group(1)) * _UNITS[m.group(2)]      # hundreds of digits: inf, refused below
        if secs > MAX_SECONDS:
            raise out_of_range()
        return ("after start", int(secs * 1e9))
    if re.fullmatch(r"\d{9,}(\.\d*)?", t):
        secs = float(t)
        if secs > MAX_SECONDS:
            raise out_of_range()
        return ("wall", int(secs * 1e9))
    m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?", t)
    if m:
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        try:
            datetime.time(hh, mm, ss)
        except ValueError:
            raise cliutil.bad_value(f"'{brief}' is not a time of day") from None
        return ("on the first day", (hh, mm, ss), int(float(m.group(4) or 0) * 1e9))
    try:
        moment = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise cliutil.bad_value(f"'{brief}': expected +SECONDS, HH:MM[:SS], an ISO date-time "
                                "or Unix seconds") from None
    try:
        secs = moment.timestamp()
    except (ValueError, OverflowError, OSError):    # year 1 in local time: year 0
        raise out_of_range() from None
    if not 0 <= secs <= MAX_SECONDS:
        raise out_of_range()
    return ("wall", int(secs * 1e6) * 1000)


recording_time.range_text = TIME_RANGE    # type: ignore[attr-defined]


def at(when: tuple, start_ns: int) -> int:
    """A recording_time() on the time line of a recording that started at
    start_ns: wall-clock ns, at most MAX_NS (a time after every event it can hold)."""
    if when[0] == "after start":
        return min(start_ns + when[1], MAX_NS)
    if when[0] == "on the first day":
        day = datetime.datetime.fromtimestamp(start_ns / 1e9).date()
        moment = datetime.datetime.combine(day, datetime.time(*when[1]))
        return int(moment.timestamp()) * 1_000_000_000 + when[2]
    return when[1]


def _plain(value: Any) -> Any:
    return value.name if isinstance(value, enum.Enum) else value


def _matches(value: Any, want: str) -> bool:
    value = _plain(value)
    if str(value) == want:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(want) == value
        except ValueError:
            return False
    return False


def parse_where(items: list[str]) -> list[tuple[str, bool, str]]:
    out = []
    for item in items:
        m = re.fullmatch(r"([A-Za-z_][\w.\[\]]*)\s*(!=|=)(.*)", item)
        if not m:
            raise UsageError(f"--where {shown(item)}: expected FIELD=VALUE or FIELD!=VALUE")
        out.append((m.group(1), m.group(2) == "=", m.group(3)))
    return out


def event_filter(source: Any, conds: list[tuple[str, bool, str]]) -> Callable[[tuple], bool]:
    def keep(raw: tuple) -> bool:
        ev = source.make_event(raw)
        d = ev.to_dict() if hasattr(ev, "to_dict") else {}
        for name, equal, want in conds:
            if name in d:
                value = d[name]
            elif hasattr(ev, name):
                value = getattr(ev, name)
            else:
                known = sorted(set(d) | set(getattr(ev, "FIELDS", ())) | set(getattr(ev, "__dataclass_fields__", {})))
                raise UsageError(f"--where {name}: no such field (fields: {', '.join(known)})")
            if _matches(value, want) != equal:
                return False
        return True
    return keep


def add_arguments(p: ArgParser) -> None:
    p.description = DESCRIPTION
    p.add_argument("file", metavar="FILE", help="a recording made with --record FILE")
    p.add_argument("--since", metavar="TIME", type=recording_time,
                   help="only from this time on: +SECONDS[s|m|h] after the recording started, HH:MM[:SS] on "
                        f"its first day, an ISO date-time or Unix SECONDS; SECONDS {TIME_RANGE} (up to 2262-04-11)")
    p.add_argument("--until", metavar="TIME", type=recording_time,
                   help=f"only up to this time (the forms of --since; SECONDS {TIME_RANGE})")
    p.add_argument("--where", metavar="FIELD=VALUE", action="append", default=[],
                   help="only events whose FIELD equals (or, with !=, differs from) VALUE; repeatable")
    p.add_argument("--json", action="store_true", help="print the tool's JSON (one object per line)")


def run(argv: list[str]) -> int:
    p = ArgParser(prog="pytrace replay")
    add_arguments(p)
    args = p.parse_args(argv)
    conds = parse_where(args.where)

    from ..sinks.record import Recording
    rec = Recording(args.file)
    try:
        return _replay(rec, args, conds)
    except (sqlite3.Error, struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError) as exc:
        # a recording is input: whatever its rows hold, one line (the header was checked)
        raise UsageError(f"{args.file}: a damaged or foreign recording ({type(exc).__name__}: {exc})") from None
    finally:
        rec.close()


class _RecordedFlags(ArgParser):
    """A tool's parser for the flags a recording holds: they are data, so one
    that does not parse is one line of replay's (never the tool's usage
    message, nor its -h)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError((message or "").strip() or "an option that exits")

    def print_help(self, file: Any = None) -> None:
        raise UsageError("-h")

    print_usage = print_help


def _replay(rec: Any, args: Any, conds: list[tuple[str, bool, str]]) -> int:
    """Print rec as its tool did live (run() turns what a damaged row raises into one line)."""
    since = at(args.since, rec.start_ns) if args.since is not None else None
    until = at(args.until, rec.start_ns) if args.until is not None else None
    if not registry.exists(rec.tool):
        raise PytraceError(f"{args.file}: recorded by tool '{rec.tool}', which this pytrace does not have")
    tool = registry.command(rec.tool)   # its SPEC, or a legacy module alike (pytrace.spec)
    cliutil.skip_host_checks()          # its flags were checked where they ran
    tool_parser = _RecordedFlags(prog=f"pytrace {rec.tool}")
    tool.add_arguments(tool_parser)
    try:
        targs = tool_parser.parse_args(_without_sink_flags(rec.argv))
    except UsageError as exc:
        raise PytraceError(f"{args.file}: its flags {' '.join(rec.argv)[:200]} do not parse any more "
                           f"({exc})") from None
    if args.json:
        targs.json = True
    if rec.tz and rec.tz != os.environ.get("TZ"):
        os.environ["TZ"] = rec.tz      # the recording's local time, for HH:MM:SS columns
        time.tzset()
    if rec.epoch:
        cliutil.share_epoch(rec.epoch)
    out = cliutil.Output(targs.json)
    if rec.kind == "snapshots":
        return _replay_snapshots(rec, tool, targs, out, since, until, conds)
    if rec.kind not in ("events", "mixed"):
        sys.stderr.write(f"pytrace replay: {args.file} holds no events ({rec.tool} "
                         f"{' '.join(rec.argv)} did not stream any)\n")
        return 0
    from ..core.stream import EventTracer
    EventTracer.projection_allowed = False     # the renderer gets whole records, as recorded
    source = rec.source()
    if conds or since is not None:
        # TIME(s) counts from the run's first event even where it is left out
        cliutil.share_first_event(rec.first_event_ns())
    out.write(tool.intro(targs))    # what the tool prints once, before its renderer's header
    try:
        if getattr(targs, "show_container", False) and not targs.json:
            from ..cli.cliutil import container_column
            render = container_column(source, tool.event_renderer, targs, out)
        else:
            render = tool.event_renderer(source, targs, out)
        keep = event_filter(source, conds) if conds else None
        if rec.kind == "mixed":     # events and interval snapshots (sockrmem), as printed
            items = rec.mixed(since, until)
        else:
            items = ((batch, losts, None) for batch, losts in rec.batches(since, until))
        for batch, losts, snap in items:
            if snap is not None:
                out.write(tool.render_snapshot(snap, targs))
                continue
            if keep is not None:
                batch = [r for r in batch if keep(r)]
            if batch:
                out.write(render(batch))
            for count, total in losts:
                out.reported_lost = total - count
                out.lost(total)
    except AttributeError as exc:   # make_event wants what only a loaded tracer has
        raise PytraceError(f"{rec.tool} cannot decode its records without loading it ({exc}); "
                           "its tracer needs a prepare_replay() (see pytrace.sinks)") from None
    return 0


def _without_sink_flags(argv: list[str]) -> list[str]:
    """The recorded flags minus --record/--influx (their files and servers are not replay's business)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--record", "--influx"):
            skip = True
            continue
        if a.startswith(("--record=", "--influx=")):
            continue
        out.append(a)
    return out


def _replay_snapshots(rec: Any, tool: Any, targs: Any, out: cliutil.Output, since: int | None,
                      until: int | None, conds: list[tuple[str, bool, str]]) -> int:
    from dataclasses import replace
    render = tool.render_snapshot
    if render is not None:
        out.write(tool.intro(targs))
    # an intro that depends on what the tool resolved live is rebuilt from the first snapshot
    late_intro = render is not None
    for snap in rec.snapshots(since, until):
        if late_intro:
            out.write(tool.replay_intro(targs, snap))
            late_intro = False
        if conds:
            series = []
            for s in snap.series:
                labels = dict(s.labels)
                for name, equal, want in conds:
                    if name not in labels:
                        raise UsageError(f"--where {name}: the series have no label {name}"
                                         f" (labels: {', '.join(sorted(labels)) or 'none'})")
                if all((labels[n] == w) == e for n, e, w in conds):
                    series.append(s)
            snap = replace(snap, series=tuple(series))
        if render is not None:
            out.write(render(snap, targs))
        else:
            out.record(snap.to_json())
    return 0
