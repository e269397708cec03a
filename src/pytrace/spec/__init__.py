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
                 other kinds: one snapshot per interval (cli/aggregate.print_loop)
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
(log2 histograms, `label(args)` names what each one is for; or, for
histograms kept per key, `event` is the key's row type (a map key struct's
EventType) and read() returns {row: Log2Histogram}, or `labels` names the
parts of a plain tuple key {(v1, v2): Log2Histogram}).  An EVENTS tool that
also says how to read an interval (read= with labels=, or snapshot=) is a
mixed tool (sockrmem): its events stream as they come and its histograms
print every interval (-i) and at the end, in one recording, in that order;
interval_text= is then the text of an interval.  An interval
tool says how to read one interval: read(tracer, args) -> rows (or
{label value: Log2Histogram}), extra(tracer, args) -> the interval's own
numbers (tcptop's load average), or snapshot(tracer, args) -> Snapshot for
all of it.  missed= names what the snapshot value "missed" counts, reported
on stderr as it grows.

Modes (additive): csv="csv" names the flag that prints an event tool's
columns comma separated (BCC's -s); alternate=("count", OTHER) makes the
tool the ToolSpec OTHER (its kind, event type, columns, read) whenever
args.count is set, with this spec's options and tracer (tcpconnect -c,
tcpretrans -c: an event tool with a counting mode); once=True reads a table
once, at Ctrl-C (or the end), whatever the interval arguments hold;
between(tracer, args) runs every second while an interval tool prints only at
the end; replay_intro(args, snap) rebuilds from the first snapshot an intro
that depended on the live system (stackcount's resolved tracepoints); tee(source, args) returns
what an event tool also does with each batch besides printing it (tcpstates
-Y: the systemd journal), or None.  An
option made by options.print_program() prints the object's C source before
tracing (BCC's -v of tcpconnlat, -D of tcprtt).

What the registry, cli.py, replay, listing and the exporter call on a tool:

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

from .eventtype import EventType, public_classes
from .options import Exclusive, Option, family, interval_flags, interval_positionals, pid, print_program, timestamp
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

__all__ = ["ToolSpec", "EventType", "public_classes", "Option", "Exclusive", "Column", "family", "pid", "timestamp",
           "interval_flags", "interval_positionals", "print_program", "EVENTS", "TABLE", "TOP", "HISTOGRAM", "KINDS"]


def add_run_length(parser: Any, interval: bool) -> None:
    """One convention for how long a tool runs, on every tool that did not
    declare it: -d/--duration SEC (event streams stop after it, interval
    tools print their last interval), and for an interval tool -c/--count N
    intervals.  The long name alone where the tool's BCC namesake gives the
    letter another meaning (tcpconnect's -d DNS, softirqs' -d histograms,
    stackcount's -c CPU)."""
    from ..cli.cliutil import intervals, seconds
    dests = {a.dest for a in parser._actions}
    taken = parser._option_string_actions
    wanted = [("duration", "-d", dict(type=seconds, metavar="SEC", help="total run time in seconds"))]
    if interval:
        wanted.append(("count", "-c", dict(type=intervals, metavar="N", help="stop after N intervals")))
    for dest, letter, settings in wanted:
        if dest not in dests:
            flags = (f"--{dest}",) if letter in taken else (letter, f"--{dest}")
            parser.add_argument(*flags, **settings)


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
                 missed: str | None = None, csv: str | None = None,
                 alternate: tuple[str, ToolSpec] | None = None, once: bool = False,
                 between: Callable[[Any, Any], None] | None = None,
                 replay_intro: Callable[[Any, Snapshot], str] | None = None,
                 tee: Callable[[Any, Any], Callable[[list[tuple]], None] | None] | None = None,
                 interval_text: Callable[[Any, Any], str] | None = None,
                 rows: Callable[[Snapshot], list] | None = None,
                 immediate: Callable[[Any], bool] | None = None,
                 exported: Sequence[str] | None = None,
                 netns_flags: Sequence[str] = ("--netns",), cgroup_flags: Sequence[str] = ("--cgroup",)):
        if kind not in KINDS:
            raise ValueError(f"{name}: kind must be one of {', '.join(KINDS)}")
        if event is None and kind in (EVENTS, TABLE, TOP):
            raise ValueError(f"{name}: a {kind} tool declares its event= (an EventType)")
        if kind != EVENTS and read is None and snapshot is None:
            raise ValueError(f"{name}: an interval tool says how to read an interval: read= or snapshot=")
        if kind in (TABLE, TOP) and not labels:
            raise ValueError(f"{name}: a {kind} tool names the fields that say which row is which: labels=")
        if kind == HISTOGRAM and label is not None and (labels or event is not None):
            raise ValueError(f"{name}: a histogram's labels come from label(args), or labels=/event=, not both")
        for example, _what in examples:
            if not example.startswith(f"pytrace {name}"):
                raise ValueError(f"{name}: example {example!r} is not a pytrace {name} command line")
        self.name, self.summary, self.tracer, self.kind = name, summary, tracer, kind
        self.description = description or summary[:1].upper() + summary[1:] + "."
        self.options, self.columns, self.examples = tuple(options), tuple(columns), tuple(examples)
        self.event, self.labels, self.values, self.label = event, tuple(labels), tuple(values), label
        self.missed, self.csv, self.alternate, self.once = missed, csv, alternate, once
        self._between, self._replay_intro, self._tee = between, replay_intro, tee
        # the SCOPE's options as the tool spells them (BCC's -N for --netns, libbpf-tools' -c for --cgroup)
        self.netns_flags, self.cgroup_flags = tuple(netns_flags), tuple(cgroup_flags)
        self._read, self._extra, self._snapshot, self._text, self._intro = read, extra, snapshot, text, intro
        self._interval_text, self._rows, self._replay_intro = interval_text, rows, replay_intro
        self._immediate = immediate
        # the values `pytrace exporter` serves as counters (default: every one of values=)
        self.exported = tuple(exported) if exported is not None else None
        self.mixed = kind == EVENTS and (read is not None or snapshot is not None)
        if event is not None:
            event.bind(tracer.OBJECT)       # a tool without BPF: its name, for gen/<name>.py
        if alternate is not None:
            other = alternate[1]
            if other.tracer is not tracer or other.name != name or other.alternate is not None:
                raise ValueError(f"{name}: an alternate mode is the same tool (name, tracer), with no mode of its own")
        # the replay protocol's "no snapshots" for an event tool (one with a
        # mode that is an interval tool, or mixed, has them)
        self.render_snapshot = None if kind == EVENTS and alternate is None and not self.mixed \
            else self._render_snapshot

    def __repr__(self) -> str:
        return f"ToolSpec({self.name}, {self.kind})"

    # -- what the registry and the commands read ---------------------------------------------
    @property
    def spec(self) -> ToolSpec:
        return self

    @property
    def object(self) -> str | None:
        """The BPF object whose source --ebpf prints (None: a tool without BPF, nstat)."""
        return self.tracer.OBJECT if self.tracer.VARIANTS else None

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

    def types(self) -> tuple[EventType, ...]:
        """The record types to generate at build time (spec/gentypes.py)."""
        own = (self.event,) if self.event is not None else ()
        return own + (self.alternate[1].types() if self.alternate is not None else ())

    def mode(self, args: Any) -> ToolSpec:
        """The spec that serves these arguments: this one, or its alternate mode."""
        if self.alternate is not None and getattr(args, self.alternate[0], False):
            return self.alternate[1]
        return self

    def event_fields(self) -> set[str] | None:
        return set(self.event.cls.FIELDS) if self.event is not None else None

    def numeric_field(self, name: str) -> bool:
        return self.event is not None and self.event.cls.KINDS.get(name) in ("int", "float")

    # -- the command line --------------------------------------------------------------------
    def add_arguments(self, parser: Any) -> None:
        from ..cli.cliutil import add_common, add_container_args
        parser.description = self.description
        parser.examples = self.examples         # cli/argparser.ArgParser prints them last
        for opt in self.options:
            opt.add_to(parser)
        add_run_length(parser, interval=self.kind != EVENTS or self.mixed or self.alternate is not None)
        if self.variants:
            add_container_args(parser, self.tracer, self.netns_flags, self.cgroup_flags)
            add_common(parser, list(self.hooks))
            if self.kind == EVENTS and not self.mixed:     # cli/cliutil.stream_events' reader
                parser.add_argument("--no-reader-sched", action="store_true",
                                    help="leave the reader's priority and CPU alone: no renice while the ring "
                                         "backs up, no CPU rotation under a storm (see bench/README.md)")
            return
        # a tool without BPF: no --ebpf, --hook, --btf, and no kernel filters
        from ..cli.cliutil import add_sink_args
        g = parser.add_argument_group("pytrace options")
        g.add_argument("--json", action="store_true", help="one JSON object per line")
        g.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
        add_sink_args(g)

    def tracer_kwargs(self, args: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for opt in self.options:
            kwargs.update(opt.tracer_kwargs(args))
        kwargs["hook"] = getattr(args, "hook", None)
        from ..cli.cliutil import container_filters
        scope = getattr(self.tracer, "SCOPE", frozenset())   # its filters (core/tracer.py)
        scoped = {k: v for k, v in container_filters(args).items() if k in scope}
        both = [k for k in scoped if kwargs.get(k)]
        if both:        # tcpdrop's --netns-id and --netns: one namespace
            from ..core.errors import UsageError
            raise UsageError(f"--{both[0]} and another option that sets the {both[0]}: give one of them")
        kwargs.update(scoped)
        return kwargs

    def make_tracer(self, args: Any) -> Any:
        return self.tracer(**self.tracer_kwargs(args))

    def intro(self, args: Any, tracer: Any = None) -> str:
        """What the tool prints once, before anything else (never with --json).
        An intro(args, tracer) needs the opened tracer (count: how many
        tracepoints its patterns matched): on replay it is "" and the spec's
        replay_intro(args, first snapshot) says it instead."""
        mode = self.mode(args)
        if mode is not self:
            return mode.intro(args, tracer)
        if self._intro is None or getattr(args, "json", False):
            return ""
        if not callable(self._intro):
            return self._intro.format(**vars(args))
        if self._intro.__code__.co_argcount == 2:
            return self._intro(args, tracer) if tracer is not None else ""
        return self._intro(args)

    def run(self, args: Any) -> int:
        if getattr(args, "print_program", False):
            self.print_program(args)
        if self.mixed:
            return self._run_mixed(args)
        spec = self.mode(args)
        if spec.kind == EVENTS:
            from ..cli.cliutil import run_stream
            tracer = self.make_tracer(args)
            return run_stream(tracer, args, self.event_renderer, lambda a: self.intro(a, tracer))
        from ..cli.aggregate import print_loop
        with self.make_tracer(args) as tracer:
            if spec._immediate is not None and spec._immediate(args):     # one output now (nstat -a)
                from ..cli.cliutil import publish
                snap = spec.snapshot(tracer, args)
                publish(snap)
                sys.stdout.write(self.intro(args, tracer) + self.render_snapshot(snap, args))
                return 0
            between = (lambda: spec._between(tracer, args)) if spec._between is not None else None
            return print_loop(args, spec._interval_reader(tracer, args), self.render_snapshot,
                              lambda a: self.intro(a, tracer), once=spec.once, between=between)

    def print_program(self, args: Any) -> None:
        """BCC's -v/-D/--debug: the program's source, before tracing (to stderr
        with --json, which keeps stdout for JSON lines)."""
        from ..core import objects
        where = getattr(args, "print_program", None)
        stream = sys.stderr if getattr(args, "json", False) or where == "stderr" else sys.stdout
        stream.write(objects.source(self.object))
        stream.flush()

    # -- event tools ------------------------------------------------------------------------------
    def event_renderer(self, source: Any, args: Any, out: Any) -> Callable[[list[tuple]], str | bytes]:
        """render(batch of raw tuples) for the live tracer or replay's stand-in."""
        also = self._tee(source, args) if self._tee is not None else None     # before the header
        render = self._renderer(source, args, out)
        if also is None:
            return render

        def both(batch: list[tuple]) -> str | bytes:
            also(batch)
            return render(batch)
        return both

    def _renderer(self, source: Any, args: Any, out: Any) -> Callable[[list[tuple]], str | bytes]:
        if getattr(args, "json", False):
            from .jsonout import event_json
            return event_json(self.event, source)
        if self._text is not None:
            return self._text(source, args, out)
        from .text import event_text
        return event_text(self.columns, self.event, source, args, out,
                          csv=bool(self.csv and getattr(args, self.csv, False)))

    # -- interval tools ---------------------------------------------------------------------------
    def snapshot(self, tracer: Any, args: Any) -> Snapshot:
        """One interval of an opened tracer, as the sinks and the renderer get it."""
        if self._snapshot is not None:
            return self._snapshot(tracer, args)
        from . import snapshots
        extra = self._extra(tracer, args) if self._extra is not None else None
        data = self._read(tracer, args)
        if self.kind == HISTOGRAM or self.mixed:
            return snapshots.histograms_snapshot(self, data, args, extra)
        return snapshots.rows_snapshot(self, data, args, extra)

    def rows(self, snap: Snapshot) -> list[Any]:
        """A TABLE or TOP snapshot's rows again (the event type's instances;
        rows= says how for a tool that makes its own snapshot=)."""
        if self._rows is not None:
            return self._rows(snap)
        from . import snapshots
        return snapshots.rows(self, snap)

    def histograms(self, snap: Snapshot) -> list[tuple[Any, Any]]:
        """A HISTOGRAM snapshot's (labels, Log2Histogram) again: labels are the
        event type's instance when it declares one, else a dict of label text."""
        from . import snapshots
        return snapshots.histograms(self, snap)

    def label_names(self, args: Any) -> tuple[str, ...]:
        """The labels of each histogram of a HISTOGRAM tool (or rows of a table)."""
        if self.labels:
            return self.labels
        if self.event is not None and self.kind == HISTOGRAM:
            return tuple(self.event.cls.FIELDS)
        name = self.label(args) if self.label is not None else None
        return (name,) if name else ()

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
        if self.mode(args) is not self:
            return self.mode(args)._render_snapshot(snap, args)
        if getattr(args, "json", False):
            from . import jsonout
            if self.kind == HISTOGRAM or self.mixed:
                return jsonout.histograms_json(snap, self)
            return jsonout.rows_json(snap, self.rows(snap))
        if self.mixed and self._interval_text is not None:
            return self._interval_text(snap, args)
        if self._text is not None and not self.mixed:
            return self._text(snap, args)
        from ..cli.aggregate import timestamp_line
        if self.kind == HISTOGRAM or self.mixed:
            parts = []
            for s in snap.series:
                title = "".join(f"{k} = {v}\n" for k, v in s.labels)
                parts.append(title + s.hist.render())
            return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")
        from .text import table
        return timestamp_line(snap, args) + table(self.columns, self.rows(snap), args)

    def replay_intro(self, args: Any, snap: Snapshot) -> str:
        """What replay prints before the first snapshot: an intro made from the
        opened tracer (what it resolved live), again, from what the snapshot kept."""
        spec = self.mode(args)
        if spec._replay_intro is None or getattr(args, "json", False):
            return ""
        return spec._replay_intro(args, snap)

    def _run_mixed(self, args: Any) -> int:
        """A mixed tool's run: events printed as they come, an interval's
        histograms every args.interval seconds (args.count times at most) and
        at the end; the sinks get both, in the order they are printed (a
        'mixed' recording replays them so)."""
        import time

        from ..cli.aggregate import check_interval_args
        from ..cli.cliutil import Output, Terminate, active_sinks, emit_batch, release_stops
        check_interval_args(args)
        every, count = getattr(args, "interval", None), getattr(args, "count", None)
        tracer = self.make_tracer(args)
        out = Output(getattr(args, "json", False))
        sinks = active_sinks()
        printed = 0

        def events(batch: list[tuple]) -> None:
            with _signals_held():
                emit_batch(tracer, out, render, batch, sinks)

        def interval() -> None:
            nonlocal printed
            with _signals_held():
                snap = self.snapshot(tracer, args)
                if sinks is not None:
                    sinks.snapshot(snap)
                out.write(self.render_snapshot(snap, args))
            printed += 1

        with tracer:
            out.write(self.intro(args, tracer))
            render = self.event_renderer(tracer, args, out)
            if sinks is not None:
                sinks.begin(tracer)
            next_print = time.monotonic() + every if every else None
            try:
                release_stops()      # a stop held while the tool started lands here: drained below
                for batch in tracer.batches(getattr(args, "duration", None)):
                    events(batch)
                    if next_print is not None and time.monotonic() >= next_print:
                        interval()
                        next_print += every
                        if count and printed >= count:
                            break
            except (KeyboardInterrupt, Terminate):
                pass
            try:
                events(tracer.drain())
                if not (count and printed >= count):
                    interval()
            except (KeyboardInterrupt, Terminate):
                pass
        return 0


class _signals_held:
    """Ctrl-C/SIGTERM wait until what was recorded is also printed (so replay equals the output)."""

    def __enter__(self) -> None:
        import signal
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

    def __exit__(self, *exc: Any) -> None:
        import signal
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
