"""Where events go besides the terminal: recordings, InfluxDB, Prometheus.

Every sink implements one interface, `Sink`, and a tool never knows which are
attached:

- an event-streaming tool runs cli/cliutil.stream_events(tracer, out, render)
  (usually through cliutil.run_stream(tracer, args, renderer, intro)); that
  loop hands the session's sinks the tracer once (begin), then every batch
  of raw record tuples (events) and the cumulative lost count (lost);
- an aggregating tool builds a `Snapshot` per interval and calls
  cli/cliutil.publish(snapshot): cli/aggregate.print_loop(args, snapshot,
  render_snapshot, intro) does that and the printing (see tools/sofamily.py);
- cli.py opens the session's sinks from --record/--influx (`from_args`) before
  the tool runs, and closes them afterwards, also on Ctrl-C/SIGTERM/errors.

The sinks: record.Recorder (SQLite file, read back by `pytrace replay`),
influx.InfluxSink (over the reusable influx.InfluxWriter), and
prometheus.EventCounter (events counted for `pytrace exporter`, which also
reads the tools' in-kernel maps at scrape time).

Replay protocol.  `pytrace replay` re-runs a tool's own renderers on the
stored records, through the calls pytrace.spec's docstring lists (every
tool's SPEC provides them):

    intro(args) -> str                        printed first
    event_renderer(source, args, out) -> render(batch: list[tuple]) -> str | bytes
    render_snapshot(snap, args) -> str        an interval tool's interval
    replay_intro(args, first_snapshot) -> str when the intro depends on what the
                                              tool resolved live (count's tracepoints)

where `source` is the live tracer or, on replay, an unopened instance of the
same tracer class whose raw_fields/idx come from the recording: so a
renderer may use only raw_fields, idx, decoder()/make_event, project() and
constructor defaults, plus whatever an optional prepare_replay() method of
the tracer sets up (kernel symbol or enum tables that setup() would load).
Clocks made with cliutil.Clock() replay with the recorded epoch.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .snapshot import Series, Snapshot

__all__ = ["Sink", "SinkSet", "Session", "EventSource", "Snapshot", "Series", "from_args", "notice"]


def notice(text: str) -> None:
    """One line on stderr from a sink (outages, drops), never on stdout."""
    sys.stderr.write(f"pytrace: {text}\n")
    sys.stderr.flush()


def local_tz() -> str:
    """The local time zone's name (TZ, or /etc/localtime's zoneinfo path), for replay elsewhere."""
    tz = os.environ.get("TZ")
    if tz:
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
        return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
    except OSError:
        return ""


@dataclass(frozen=True)
class Session:
    """What ran: a recording's header, and what every sink can tag with."""
    tool: str
    argv: tuple[str, ...]
    host: str
    kernel: str
    start_ns: int          # wall clock
    version: str
    tz: str

    @classmethod
    def current(cls, tool: str, argv: Sequence[str]) -> "Session":
        from .. import __version__
        return cls(tool, tuple(argv), socket.gethostname(), platform.release(), time.time_ns(),
                   __version__, local_tz())


@dataclass(frozen=True)
class EventSource:
    """An event tracer as the sinks see it: record layout and decoder."""
    tool: str
    tracer_class: str                 # "module:QualName", to rebuild make_event on replay
    event: str                        # the C struct of a record
    fields: tuple[str, ...]           # one name per value of a raw tuple
    record_format: str                # struct format of one record (from the object's BTF)
    hook: str
    epoch: tuple[int, int]            # (wall - monotonic offset, start) in ns, as cliutil.Clock
    make_event: Callable[[tuple], Any]
    labeler: Any = None               # core/containers.Labeler when labels were asked for (events carry them)

    @classmethod
    def of(cls, tracer: Any, tool: str) -> "EventSource":
        from ..cli import cliutil
        ep = cliutil.epoch()
        if ep is None:
            clock = cliutil.Clock()
            ep = (clock.offset, clock.start_ns)
        kind = type(tracer)
        variant = getattr(tracer, "variant", None)
        layout = tracer.obj.types.struct(tracer.EVENT)
        if tuple(tracer.raw_fields) != layout.names:
            # a renderer projected the records (EventTracer.project) although sinks need them whole
            raise RuntimeError(f"{tool}: records are projected to {len(tracer.raw_fields)} fields; "
                               "sinks need every field (EventTracer.projection_allowed)")
        return cls(tool, f"{kind.__module__}:{kind.__qualname__}", tracer.EVENT, tuple(tracer.raw_fields),
                   layout.format, getattr(variant, "hook", ""), ep, tracer.make_event,
                   getattr(tracer, "labeler", None))

    @property
    def time_index(self) -> int | None:
        """Index of the record's kernel monotonic timestamp, when it has one."""
        for name in ("ts_ns", "ts"):
            if name in self.fields:
                return self.fields.index(name)
        return None


class Sink:
    """One destination.  Every method has a do-nothing default.  SinkSet calls
    them from the sink's own thread (sinks/worker.py), in order.

    durable: the CLI prints a batch only once this sink has taken it.
    events_packed(data, n) (optional): instead of events(), the n records
    as the queue holds them, packed with the record format (a recording
    stores those bytes as they are).
    give_up() (optional): polled while the sink's queue drains at close;
    True abandons the rest (counted, then passed to close as `dropped`)."""

    durable = False

    def begin(self, source: EventSource) -> None:
        """An event tool starts streaming (once, before any events)."""

    def events(self, batch: list[tuple]) -> None:
        """A batch of raw record tuples, in the order the tool prints them."""

    def lost(self, total: int) -> None:
        """Cumulative records the kernel could not queue; called after every batch."""

    def snapshot(self, snap: Snapshot) -> None:
        """An aggregating tool's interval."""

    def close(self, failed: bool = False, dropped: int = 0) -> None:
        """Flush and release; report what could not be delivered (notice()),
        including the `dropped` records its worker could not pass on."""


LONG_BACKLOG = 20000        # events still queued at close: more than a second's work, say so


class SinkSet(Sink):
    """The session's sinks, fanned out in order, each on its own thread
    (sinks/worker.py), so that the reader hands a batch over and goes on.

    events() and lost() return tickets; settle(tickets) waits until every
    durable sink (the recording) holds what they were given, held(tickets)
    says whether it does: the CLI prints a batch only then."""

    def __init__(self, session: Session, sinks: Sequence[Sink]):
        from .worker import SinkWorker
        self.session = session
        self.sinks = list(sinks)
        self.workers = [SinkWorker(s, getattr(s, "name", type(s).__name__)) for s in self.sinks]
        self._pack: Callable[..., bytes] | None = None
        self._lost = 0
        self.durable = any(w.durable for w in self.workers)

    def begin(self, tracer: Any) -> None:  # type: ignore[override]
        import struct
        source = tracer if isinstance(tracer, EventSource) else EventSource.of(tracer, self.session.tool)
        self._pack = struct.Struct(source.record_format).pack
        for w in self.workers:
            w.begin(source)

    def events(self, batch: list[tuple]) -> list[int]:  # type: ignore[override]
        """Hand a batch to every sink: packed once here (~0.5 us a record,
        the one per-record cost left in the reader's thread)."""
        if not batch:
            return []
        pack = self._pack
        packed = b"".join([pack(*r) for r in batch])
        n = len(batch)
        return [w.events(packed, n) for w in self.workers]

    def settle(self, tickets: list[int]) -> None:
        """Until the durable sinks hold what these tickets were given for."""
        for w, t in zip(self.workers, tickets):
            if w.durable:
                w.wait(t)

    def held(self, tickets: list[int]) -> bool:
        """Whether the durable sinks hold it already (never waits; raises a
        sink's failure)."""
        return all(w.holds(t) for w, t in zip(self.workers, tickets) if w.durable)

    def lost(self, total: int) -> list[int]:  # type: ignore[override]
        if total == self._lost:
            return []               # called after every batch: only a change is news
        self._lost = total
        return [w.lost(total) for w in self.workers]

    def snapshot(self, snap: Snapshot) -> None:
        """An interval, after the events queued before it; returns once the
        durable sinks hold it (it is printed next)."""
        tickets = [w.snapshot(snap) for w in self.workers]
        self.settle(tickets)

    def close(self, failed: bool = False) -> None:
        """Let every sink take what is queued, then close it (each reports
        what it could not deliver).  A stop that insists cuts the wait short:
        what is still queued is counted as dropped, and reported."""
        first: Exception | None = None
        interrupted: BaseException | None = None
        for w in self.workers:
            backlog = w.backlog if interrupted is None else 0
            if backlog >= LONG_BACKLOG:
                notice(f"{w.name}: {backlog} events still to pass on; Ctrl-C again to give up on them")
            try:
                if interrupted is None:
                    w.finish(getattr(w.sink, "give_up", None))
                else:
                    w.abandon()
            except Exception as exc:
                first = first or exc
            except BaseException as exc:    # a stop that insists: abandon the rest, then stop
                interrupted = exc
            try:
                w.sink.close(failed, w.dropped)
            except Exception as exc:  # close the others anyway
                first = first or exc
        if interrupted is not None:
            raise interrupted
        if first is not None:
            raise first


def from_args(tool: str, argv: Sequence[str], args: Any) -> SinkSet | None:
    """The sinks the common flags ask for (None when there are none)."""
    record, influx = getattr(args, "record", None), getattr(args, "influx", None)
    if not record and not influx:
        return None
    session = Session.current(tool, argv)
    sinks: list[Sink] = []
    try:
        if record:
            from .record import Recorder
            sinks.append(Recorder(record, session))
        if influx:
            from .influx import InfluxSink
            sinks.append(InfluxSink(influx, session))
    except BaseException:
        SinkSet(session, sinks).close(failed=True)
        raise
    return SinkSet(session, sinks)
