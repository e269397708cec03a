"""Tools whose command line has subcommands: vnet record|report|demo|ctl, tunnelmon [simulate].

A CommandSpec is a ToolSpec (name, summary, tracer, kind, options, examples:
the registry, `pytrace list`, README's table and the contract test read it
alike) whose command line also has Commands, each declared once:

    SPEC = CommandSpec(
        "vnet", "per-hop packet latency ...", VnetTracer, EVENTS,
        records=Records("ts_ns", "wall_ns", "host", ...),     # what --json prints
        commands=(
            Command("record", "trace the points of a config file", run=_record, streams=True,
                    options=(Option("-c", "--config", ...), ...), common=True, examples=(...)),
            Command("report", "per-segment latency from stored records", run=_report,
                    instead="reads the stores record wrote and prints a report", options=(...)),
            ...),
        required=True)

What a Command declares:

  options    its flags (spec/options.Option), as a ToolSpec's
  common     the shared pytrace options (--json, --ebpf, --hook, --record ...;
             --hook offers the spec's `hooks`)
  examples   the end of its -h; the tool's own -h ends with the spec's examples
  streams    it runs the tool's tracer until stopped and prints the spec's
             records: the contract test's running cases (--json, SIGINT and
             SIGTERM, --record and replay, a forced --hook) run this command
  instead    for a command that does not stream: what it does instead, the
             reason the contract test gives for not running those cases
  commands   its own subcommands (stored under dest; vnet ctl add|remove|...)
  dash_values a regular expression of values that start with '-' and are not
             flags (vnet record --clock-offset -3ms)

Without a command, a tool that is not `required` runs itself (tunnelmon:
run= of the spec, which also streams); a required one has no run of its
own: argparse refuses the command line with one line, status 2, except
--ebpf, which prints the object's source at once (every tool has --ebpf).

A tool whose records need more than one generated type to print (vnet: the
point's label and the host come from its tracer, tunnelmon: one record per
flow and one for the frames it could not count) declares `records=`
(Records: the names of its --json records) and its own `renderer`/`text`:
ToolSpec's generated-type machinery is left alone.
"""

from __future__ import annotations

import argparse
import re

from . import EVENTS, ToolSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ..sinks.snapshot import Snapshot
    from .options import Exclusive, Option


class Records:
    """The names of a subcommand tool's --json records, in order, where the
    generated event classes have FIELDS/KINDS/TIME: `time` names the field
    from which --json's wall-clock "time" comes first (None: an interval
    tool's records start with the interval's "time" and "ts_ns"); `notes`
    are the "type"s of other records the stream may hold (tunnelmon's
    "anomalies"), which start with "time", "ts_ns", "type"."""

    def __init__(self, *fields: str, time: str | None = None, kinds: dict[str, str] | None = None,
                 notes: Sequence[str] = ()):
        self.FIELDS, self.TIME = tuple(fields), time
        self.KINDS = dict(kinds or {})
        self.notes = tuple(notes)

    @property
    def cls(self) -> Records:
        """ToolSpec reads a type's names from .cls (an EventType's generated class)."""
        return self

    def bind(self, object_name: str) -> None:
        """An EventType's: nothing to bind (nothing is generated)."""

    def __repr__(self) -> str:
        return f"Records({', '.join(self.FIELDS)})"


class Command:
    """One subcommand (see the module docstring)."""

    __slots__ = ("name", "summary", "run", "description", "options", "examples", "common", "streams", "instead",
                 "commands", "dest", "dash_values")

    def __init__(self, name: str, summary: str, *, run: Callable[[Any], int] | None = None,
                 description: str | None = None, options: Sequence[Option | Exclusive] = (),
                 examples: Sequence[tuple[str, str]] = (), common: bool = False, streams: bool = False,
                 instead: str = "", commands: Sequence[Command] = (), dest: str | None = None,
                 dash_values: str | None = None):
        if streams == bool(instead):
            raise ValueError(f"command {name}: streams=True, or instead= says what it does instead of streaming")
        if commands and dest is None:
            raise ValueError(f"command {name}: its subcommands need a dest= to be stored under")
        self.name, self.summary, self.run = name, summary, run
        self.description = description or summary[:1].upper() + summary[1:] + "."
        self.options, self.examples, self.common = tuple(options), tuple(examples), common
        self.streams, self.instead = streams, instead
        self.commands, self.dest = tuple(commands), dest
        self.dash_values = dash_values

    def __repr__(self) -> str:
        return f"Command({self.name})"

    def add_to(self, subparsers: Any, hooks: Sequence[str], top: bool = True) -> Any:
        from ..cli.cliutil import add_common
        parser = subparsers.add_parser(self.name, help=self.summary, description=self.description)
        parser.examples = self.examples
        for opt in self.options:
            opt.add_to(parser)
        if self.common:
            add_common(parser, hooks)
        elif top:   # what cli.py reads of every tool's arguments (not again below: a
            # subcommand's defaults would replace what its parent parsed, ctl's --json)
            parser.set_defaults(verbose=False, ebpf=False, btf=None, json=False, hook=None)
        if self.dash_values is not None:
            # argparse takes a word that starts with '-' for a flag unless it matches its
            # negative-number pattern: these values are added to that pattern
            numbers = parser._negative_number_matcher
            parser._negative_number_matcher = re.compile(f"(?:{numbers.pattern})|(?:{self.dash_values})")
        if self.commands:
            names = ",".join(c.name for c in self.commands)
            subs = parser.add_subparsers(dest=self.dest, metavar=f"{{{names}}}", required=True)
            for c in self.commands:
                c.add_to(subs, hooks, top=False)
        return parser


class CommandSpec(ToolSpec):
    """A ToolSpec with subcommands (see the module docstring).

    run          the tool run without a command (None: `required`)
    required     a command must be named (vnet)
    hooks        what --hook may force (default: every variant's hook)
    records      the names of its --json records (Records)
    renderer     (source, args, out) -> render(batch), text and --json, for an
                 event tool (its records need the tracer to print)
    text         (snap, args) -> str for an interval tool's snapshots, or for an
                 event tool (snap, args, source) -> str: the snapshots it
                 publishes among its events (vnet: which point is which), handed
                 back in their place on replay with the source of the events
    """

    def __init__(self, name: str, summary: str, tracer: type, kind: str, *,
                 commands: Sequence[Command], records: Records, run: Callable[[Any], int] | None = None,
                 required: bool = False, hooks: Sequence[str] | None = None,
                 renderer: Callable[[Any, Any, Any], Callable[[list[tuple]], str | bytes]] | None = None,
                 text: Callable[..., Any] | None = None, **kw: Any):
        if required == (run is not None):
            raise ValueError(f"{name}: a tool runs itself (run=) or requires a command (required=True)")
        if kind != EVENTS and text is None:
            raise ValueError(f"{name}: an interval tool with commands renders its snapshots itself: text=")
        if kind == EVENTS and renderer is None:
            raise ValueError(f"{name}: an event tool with commands renders its records itself: renderer=")
        if kind != EVENTS:
            # what ToolSpec asks of an interval tool, whose loop this one runs itself (run=)
            kw.setdefault("snapshot", _own_loop(name))
            kw.setdefault("labels", ("-",))
        super().__init__(name, summary, tracer, kind, text=text, event=records, **kw)
        for c in _walk(commands):
            for example, _what in c.examples:
                if not example.startswith(f"pytrace {name} "):
                    raise ValueError(f"{name}: example {example!r} is not a pytrace {name} command line")
        self.commands, self.required, self._run = tuple(commands), required, run
        self.renderer = renderer
        self._hooks = tuple(hooks) if hooks is not None else None
        self._source: Any = None
        if text is not None:
            self.render_snapshot = text if kind != EVENTS else self._context

    @property
    def hooks(self) -> tuple[str, ...]:
        return self._hooks if self._hooks is not None else super().hooks

    @property
    def streams(self) -> bool:
        """The tool itself (no command named) runs its tracer until stopped."""
        return not self.required

    def types(self) -> tuple:
        return ()       # build.py generates nothing for Records

    def command(self, words: Sequence[str]) -> Command:
        """The Command these words name (('ctl', 'add'))."""
        found: Command | None = None
        for word in words:
            found = next(c for c in (found.commands if found else self.commands) if c.name == word)
        if found is None:
            raise KeyError(words)
        return found

    def command_words(self) -> list[tuple[str, ...]]:
        """Every command the tool has, as the words that name it: () for the
        tool itself, ('record',), ('ctl', 'add')..."""
        out: list[tuple[str, ...]] = [()]

        def walk(cs: Sequence[Command], above: tuple[str, ...]) -> None:
            for c in cs:
                out.append((*above, c.name))
                walk(c.commands, (*above, c.name))
        walk(self.commands, ())
        return out

    def streaming(self) -> tuple[str, ...]:
        """The words of the command the contract's running cases run (() for
        the tool itself)."""
        if self.streams:
            return ()
        return next(w for w in self.command_words()[1:] if self.command(w).streams)

    # -- the command line --------------------------------------------------------------------
    def add_arguments(self, parser: Any) -> None:
        from ..cli.cliutil import add_common
        parser.description = self.description
        parser.examples = self.examples
        for opt in self.options:
            opt.add_to(parser)
        if self.required:
            parser.set_defaults(verbose=False, ebpf=False, btf=None, json=False, hook=None)
            g = parser.add_argument_group("pytrace options")
            g.add_argument("--ebpf", action=_PrintSource, object=self.object,
                           help="print the BPF C source and exit")
        else:
            add_common(parser, self.hooks)
        names = ",".join(c.name for c in self.commands)
        subs = parser.add_subparsers(dest="command", metavar=f"{{{names}}}", required=self.required)
        for c in self.commands:
            c.add_to(subs, self.hooks)

    def run(self, args: Any) -> int:
        word = getattr(args, "command", None)
        if word is None:
            return self._run(args)
        return self.command((word,)).run(args)

    def event_renderer(self, source: Any, args: Any, out: Any) -> Callable[[list[tuple]], str | bytes]:
        if self.renderer is None:
            from ..core.errors import PytraceError
            raise PytraceError(f"{self.name} streams no events")
        self._source = source     # what the snapshots among its events (text=) update
        return self.renderer(source, args, out)

    def _context(self, snap: Snapshot, args: Any) -> str:
        return self._text(snap, args, self._source)


class _PrintSource(argparse.Action):
    """--ebpf where a command is required: the source at once (as --help is)."""

    def __init__(self, option_strings: Sequence[str], dest: str, object: str, help: str | None = None,
                 default: Any = False, **_unused: Any):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)
        self.object = object

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        import sys

        from ..core import objects
        sys.stdout.write(objects.source(self.object))
        parser.exit(0)


def _own_loop(name: str) -> Callable[[Any, Any], Any]:
    def snapshot(tracer: Any, args: Any) -> Any:
        raise NotImplementedError(f"{name} reads its intervals in its own run()")
    return snapshot


def _walk(commands: Sequence[Command]) -> list[Command]:
    return [x for c in commands for x in (c, *_walk(c.commands))]
