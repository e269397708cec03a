"""A tool's command-line options, each declared once: its flags, its argparse
settings, and the keyword of the tracer class it sets.

    Option("-L", "--localport", type=ports("-L"), metavar="PORTS",
           help="only these local ports (comma list)", kw="lports")

ToolSpec adds each to the parser (add_to) and builds the tracer from the
parsed arguments (tracer_kwargs): kw names the tracer's keyword argument,
value (optional) computes it from the whole argparse namespace.  An option
with no kw changes only the output (-T, -w).  Exclusive groups options of
which at most one may be given (-4/-6), and may set one keyword from them.

The options many tools share are made by the functions below, so that the
same flag means the same thing everywhere (issue 19 item 3).

One rule for the letters (issue 20): a flag means what the BCC namesake's
flag means, and pytrace's own flags give way.  So -v is the namesake's -v
where it has one (tcptracer: verbose lines; tcpconnlat, tcpsubnet: print the
program, see print_program(); stackcount: raw addresses), and libbpf's log is
--libbpf-log on every tool; where the namesake has no -v, -v/--verbose stays
an alias of --libbpf-log (cli/cliutil.add_common gives it to every tool
that has not taken -v itself).
"""

from __future__ import annotations

from ..cli.cliutil import _allow_host, family_of, intervals, process_id, seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Option:
    """One flag (or positional): argparse's add_argument(*flags, **settings),
    plus kw (the tracer keyword it sets) and value(args) (how, when not the
    option's own parsed value)."""

    __slots__ = ("flags", "settings", "kw", "value")

    def __init__(self, *flags: str, kw: str | None = None, value: Callable[[Any], Any] | None = None,
                 **settings: Any):
        if not flags:
            raise ValueError("an Option needs a flag or a positional name")
        self.flags, self.settings, self.kw, self.value = flags, settings, kw, value

    @property
    def dest(self) -> str:
        """The attribute argparse stores it under (its own rule)."""
        if "dest" in self.settings:
            return self.settings["dest"]
        if not self.flags[0].startswith("-"):
            return self.flags[0]
        longs = [f for f in self.flags if f.startswith("--")]
        return (longs[0] if longs else self.flags[0]).lstrip("-").replace("-", "_")

    def add_to(self, parser: Any) -> None:
        parser.add_argument(*self.flags, **self.settings)

    def tracer_kwargs(self, args: Any) -> dict[str, Any]:
        if self.kw is None:
            return {}
        return {self.kw: self.value(args) if self.value is not None else getattr(args, self.dest)}

    def but(self, **changes: Any) -> Option:
        """The same option with some settings (or kw/value) changed: a shared
        option with a tool's own help text."""
        kw, value = changes.pop("kw", self.kw), changes.pop("value", self.value)
        return Option(*changes.pop("flags", self.flags), kw=kw, value=value, **{**self.settings, **changes})

    def __repr__(self) -> str:
        return f"Option({', '.join(self.flags)}{f' -> {self.kw}' if self.kw else ''})"


class Exclusive:
    """Options of which at most one may be given; kw/value set one tracer
    keyword from them (family from -4/-6)."""

    __slots__ = ("options", "kw", "value", "required")

    def __init__(self, *options: Option, kw: str | None = None, value: Callable[[Any], Any] | None = None,
                 required: bool = False):
        self.options, self.kw, self.value, self.required = options, kw, value, required

    def add_to(self, parser: Any) -> None:
        group = parser.add_mutually_exclusive_group(required=self.required)
        for opt in self.options:
            opt.add_to(group)

    def tracer_kwargs(self, args: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for opt in self.options:
            out.update(opt.tracer_kwargs(args))
        if self.kw is not None:
            out[self.kw] = self.value(args) if self.value is not None else None
        return out

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(f for opt in self.options for f in opt.flags)

    def __repr__(self) -> str:
        return f"Exclusive({', '.join(self.flags)}{f' -> {self.kw}' if self.kw else ''})"


# -- options many tools share ------------------------------------------------------------

def family(what: str = "", kw: str = "family") -> Exclusive:
    """-4/--ipv4 and -6/--ipv6 (one or neither): the tracer's family keyword
    (socket.AF_INET, AF_INET6, or 0 for both)."""
    what = f" {what}" if what else ""
    return Exclusive(Option("-4", "--ipv4", action="store_true", help=f"IPv4{what} only"),
                     Option("-6", "--ipv6", action="store_true", help=f"IPv6{what} only"),
                     kw=kw, value=family_of)


def pid(help: str = "trace this PID only", kw: str = "pid") -> Option:
    """-p/--pid PID (0: every process)."""
    return Option("-p", "--pid", type=process_id, default=0, help=help, kw=kw)


def timestamp(help: str = "print a timestamp with each output") -> Option:
    return Option("-T", "--timestamp", action="store_true", help=help)


def interval_flags(every: str = "print (and reset) every SEC seconds") -> tuple[Option, ...]:
    """-i SEC, -c N, -d SEC: an interval tool's output period, how many, for how long."""
    return (Option("-i", "--interval", type=seconds, metavar="SEC", help=every),
            Option("-c", "--count", type=intervals, metavar="N", help="stop after N intervals"),
            Option("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds"))


def interval_positionals(default: int | None = None) -> tuple[Option, ...]:
    """BCC's positional [interval [count]], for the tools whose BCC namesake has it."""
    when = f" (default {default})" if default is not None else ""
    return (Option("interval", nargs="?", type=seconds, default=default,
                   help=f"output interval, in seconds{when}"),
            Option("count", nargs="?", type=intervals, help="number of outputs"))


def print_program(*flags: str, help: str = "print the BPF program before tracing (BCC's debugging aid)",
                  stream: str = "stdout") -> Option:
    """BCC's "print the program" flag (tcpconnlat -v, tcprtt -D, stackcount
    --debug): ToolSpec.run prints the C source the object was built from
    (what --ebpf prints) on stream ("stdout", or "stderr" where the namesake
    logs it there; stderr anyway with --json), then traces.  Its dest is
    always print_program."""
    return Option(*flags, action="store_const", const=stream, default=None, dest="print_program", help=help)
def allow_host() -> Option:
    """--allow-host of a command that serves HTTP (core/httpserve; cliutil.add_allow_host)."""
    return Option("--allow-host", type=_allow_host, action="append", default=[], metavar="NAME",
                  help="also answer HTTP requests addressed to NAME (repeatable; '*': any).  By default "
                       "only requests to this server's own address are (and localhost on loopback): "
                       "a page elsewhere cannot read it by DNS rebinding")
