"""ToolSpec: one declared contract per tool, from which the CLI is derived.

A tool module keeps what is its own (its tracer class, its conversions, any
special rendering) and declares the rest once:

    SPEC = ToolSpec(
        "tcpstates", "TCP state changes with the time spent in each state",
        TcpStates, EVENTS,
        description="Trace TCP state changes and the time spent in each state.",
        event=TCPSTATES_EVENT,          # spec/eventtype.py: renames and conversions
        options=(Option("-L", "--localport", type=ports("-L"), metavar="PORTS",
                        help="only these local ports", kw="lports"), family()),
        columns=(Column("SKADDR", "skaddr", width=16), ...),
        examples=(("pytrace tcpstates -L 80", "only sockets on local port 80"), ...),
    )

The registry (pytrace/tools/__init__.py) finds SPEC in the module, and
everything else follows from it, for every tool alike:

    -h           description, options, the shared pytrace options (cliutil.add_common)
                 and, last, the examples (as BCC's tools end their help)
    the tracer   built from the options' kw= (plus --hook)
    run          EVENTS: the ring buffer streamed (cliutil.run_stream); the
                 other kinds: one snapshot per interval (core/aggregate.print_loop)
    text         EVENTS: the columns compiled into the hot path (spec/text.py);
                 TABLE/TOP: the rows under the columns; HISTOGRAM: each
                 histogram under its label; text= replaces it
    --json       one convention (spec/jsonout.py)
    replay       the same renderers over a recording (commands/replay.py)
    exporter     the event fields that count_by/observe may name
    pytrace list the summary; README's tool table (spec/readme.py)

Kinds: EVENTS (an event stream: a ring buffer of `event` records), TABLE (an
interval table of `event` rows: `labels` say which row, `values` are its
numbers), TOP (the same, busiest first, refreshed in place), HISTOGRAM
(log2 histograms, `label(args)` names what each one is for).  An interval
tool says how to read one interval: read(tracer, args) -> rows (or
{label value: Log2Histogram}), extra(tracer, args) -> the interval's own
numbers (tcptop's load average), or snapshot(tracer, args) -> Snapshot for
all of it.  missed= names what the snapshot value "missed" counts, reported
on stderr as it grows.

What the registry, cli.py, replay, listing and the exporter call on a tool
(tools/_legacy.LegacyTool provides the same for tools not yet converted):

    name, summary, kind, object, variants, hooks, sources, spec
    commands, streams                         (spec/commands.py: a tool with subcommands)
    add_arguments(parser), run(args)
    intro(args) -> str                       printed first (not with --json)
    event_renderer(source, args, out)        -> render(batch of raw tuples) -> str | bytes
    render_snapshot(snap, args) -> str       (None for an event tool)
    replay_intro(args, snap) -> str
    event_fields() -> set | None, numeric_field(name) -> bool

Start-up: this package is on the CLI's start-up path (tcpstates' first line
is benchmarked), so it imports no dataclasses, typing or enum; --json's and
the interval tools' modules are imported when used.
"""

from __future__ import annotations

import sys

from .eventtype import EventType
from .options import Exclusive, Option, family, interval_flags, interval_positionals, pid, timestamp
from .text import Column

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ..sinks.snapshot import Snapshot

EVENTS = "event stream"
TABLE = "interval table"
TOP = "top"
HISTOGRAM = "histogram"
KINDS = (EVENTS, TABLE, TOP, HISTOGRAM)

__all__ = ["ToolSpec", "EventType", "Option", "Exclusive", "Column", "family", "pid", "timestamp",
           "interval_flags", "interval_positionals", "EVENTS", "TABLE", "TOP", "HISTOGRAM", "KINDS"]


class ToolSpec:
    """A tool's declared contract (see the module docstring)."""

    def __init__(self, name: str, summary: str, tracer: type, kind: str, *,
                 description: str | None = None,
                 options: Sequence[Option | Exclusive] = (),
                 columns: Sequence[Column] = (),
                 examples: Sequence[tuple[str, str]] = (),
                 event: EventType | None = None,
                 labels: Sequence[str] = (), values: Sequence[str] = (),
                 label: Callable[[Any], str | None] | None = None,
                 read: Callable[[Any, Any], Any] | None = None,
                 extra: Callable[[Any, Any], dict] | None = None,
                 snapshot: Callable[[Any, Any], Snapshot] | None = None,
                 text: Callable[..., Any] | None = None,
                 intro: str | Callable[[Any], str] | None = None,
                 missed: str | None = None,
                 netns_flags: Sequence[str] = ("--netns",)):
        if kind not in KINDS:
            raise ValueError(f"{name}: kind must be one of {', '.join(KINDS)}")
        if event is None and kind in (EVENTS, TABLE, TOP):
            raise ValueError(f"{name}: a {kind} tool declares its event= (an EventType)")
        if kind != EVENTS and read is None and snapshot is None:
            raise ValueError(f"{name}: an interval tool says how to read an interval: read= or snapshot=")
        if kind in (TABLE, TOP) and not labels:
            raise ValueError(f"{name}: a {kind} tool names the fields that say which row is which: labels=")
        for example, _what in examples:
            if not example.startswith(f"pytrace {name}"):
                raise ValueError(f"{name}: example {example!r} is not a pytrace {name} command line")
        self.name, self.summary, self.tracer, self.kind = name, summary, tracer, kind
        self.description = description or summary[:1].upper() + summary[1:] + "."
        self.options, self.columns, self.examples = tuple(options), tuple(columns), tuple(examples)
        self.event, self.labels, self.values, self.label = event, tuple(labels), tuple(values), label
        self.missed = missed
        self.netns_flags = tuple(netns_flags)   # --netns as the tool spells it (its SCOPE's options)
        self._read, self._extra, self._snapshot, self._text, self._intro = read, extra, snapshot, text, intro
        if event is not None:
            event.bind(tracer.OBJECT)
        # the replay protocol's "no snapshots" for an event tool
        self.render_snapshot = None if kind == EVENTS else self._render_snapshot

    def __repr__(self) -> str:
        return f"ToolSpec({self.name}, {self.kind})"

    # -- what the registry and the commands read ---------------------------------------------
    @property
    def spec(self) -> ToolSpec:
        return self

    @property
    def object(self) -> str:
        """The BPF object whose source --ebpf prints."""
        return self.tracer.OBJECT

    @property
    def variants(self) -> tuple:
        return tuple(self.tracer.VARIANTS)

    @property
    def hooks(self) -> tuple[str, ...]:
        """What --hook may force: every variant's hook."""
        return tuple(dict.fromkeys(v.hook for v in self.variants))

    # A tool without subcommands (spec/commands.CommandSpec has them): the tool
    # itself is what streams, and what the contract test runs
    commands: tuple = ()
    streams = True

    @property
    def module(self) -> str:
        return self.tracer.__module__

    @property
    def sources(self) -> tuple[str, ...]:
        """The files that define this tool's arguments: core/prefetch keeps a
        parse only while they are unchanged."""
        from ..core import cliutil
        from . import options
        return (sys.modules[self.module].__file__, options.__file__, cliutil.__file__)

    def types(self) -> tuple[EventType, ...]:
        """The record types to generate at build time (core/gentypes.py)."""
        return (self.event,) if self.event is not None else ()

    def event_fields(self) -> set[str] | None:
        return set(self.event.cls.FIELDS) if self.event is not None else None

    def numeric_field(self, name: str) -> bool:
        return self.event is not None and self.event.cls.KINDS.get(name) in ("int", "float")

    # -- the command line --------------------------------------------------------------------
    def add_arguments(self, parser: Any) -> None:
        from ..core.cliutil import add_common, add_container_args
        parser.description = self.description
        parser.examples = self.examples         # core/argparser.ArgParser prints them last
        for opt in self.options:
            opt.add_to(parser)
        add_container_args(parser, self.tracer, self.netns_flags)
        add_common(parser, list(self.hooks))

    def tracer_kwargs(self, args: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for opt in self.options:
            kwargs.update(opt.tracer_kwargs(args))
        kwargs["hook"] = getattr(args, "hook", None)
        from ..core.cliutil import container_filters
        kwargs.update(container_filters(args))      # the tracer's SCOPE (core/tracer.py)
        return kwargs

    def make_tracer(self, args: Any) -> Any:
        return self.tracer(**self.tracer_kwargs(args))

    def intro(self, args: Any) -> str:
        """What the tool prints once, before anything else (never with --json)."""
        if self._intro is None or getattr(args, "json", False):
            return ""
        return self._intro(args) if callable(self._intro) else self._intro.format(**vars(args))

    def run(self, args: Any) -> int:
        if self.kind == EVENTS:
            from ..core.cliutil import run_stream
            return run_stream(self.make_tracer(args), args, self.event_renderer, self.intro)
        from ..core.aggregate import print_loop
        with self.make_tracer(args) as tracer:
            return print_loop(args, self._interval_reader(tracer, args), self.render_snapshot, self.intro)

    # -- event tools ------------------------------------------------------------------------------
    def event_renderer(self, source: Any, args: Any, out: Any) -> Callable[[list[tuple]], str | bytes]:
        """render(batch of raw tuples) for the live tracer or replay's stand-in."""
        if getattr(args, "json", False):
            from .jsonout import event_json
            return event_json(self.event, source)
        if self._text is not None:
            return self._text(source, args, out)
        from .text import event_text
        return event_text(self.columns, self.event, source, args, out)

    # -- interval tools ---------------------------------------------------------------------------
    def snapshot(self, tracer: Any, args: Any) -> Snapshot:
        """One interval of an opened tracer, as the sinks and the renderer get it."""
        if self._snapshot is not None:
            return self._snapshot(tracer, args)
        from . import snapshots
        extra = self._extra(tracer, args) if self._extra is not None else None
        data = self._read(tracer, args)
        if self.kind == HISTOGRAM:
            return snapshots.histograms_snapshot(self, data, args, extra)
        return snapshots.rows_snapshot(self, data, args, extra)

    def rows(self, snap: Snapshot) -> list[Any]:
        """A TABLE or TOP snapshot's rows again (the event type's instances)."""
        from . import snapshots
        return snapshots.rows(self, snap)

    def _interval_reader(self, tracer: Any, args: Any) -> Callable[[], Snapshot]:
        reported = 0

        def take() -> Snapshot:
            nonlocal reported
            snap = self.snapshot(tracer, args)
            missed = snap.value("missed", 0) if self.missed else 0
            if missed > reported:
                sys.stderr.write(f"{self.name}: {missed - reported} {self.missed}\n")
                sys.stderr.flush()
                reported = missed
            return snap
        return take

    def _render_snapshot(self, snap: Snapshot, args: Any) -> str:
        if getattr(args, "json", False):
            from . import jsonout
            if self.kind == HISTOGRAM:
                return jsonout.histograms_json(snap)
            return jsonout.rows_json(snap, self.rows(snap))
        if self._text is not None:
            return self._text(snap, args)
        from ..core.aggregate import timestamp_line
        if self.kind == HISTOGRAM:
            parts = []
            for s in snap.series:
                title = "".join(f"{k} = {v}\n" for k, v in s.labels)
                parts.append(title + s.hist.render())
            return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")
        from .text import table
        return timestamp_line(snap, args) + table(self.columns, self.rows(snap), args)

    def replay_intro(self, args: Any, snap: Snapshot) -> str:
        return ""
