"""`pytrace <tool> [flags]`: dispatch, the flags every tool shares, and one-line errors.

Only the chosen tool's module is imported (start-up time is part of the
product: see bench/).  Every error a person can act on is one line on stderr
with status 1 (2 for usage errors); tracebacks only with -v.
"""

from __future__ import annotations

import sys

from .. import __version__

USAGE = """usage: pytrace <tool> [options]      (pytrace <tool> -h for a tool's options)
       pytrace list | doctor | --version
       pytrace replay FILE [--since TIME] [--until TIME] [--where FIELD=VALUE] [--json]
       pytrace exporter --config FILE [--listen HOST:PORT]
"""


def _help() -> str:
    from .. import tools as registry
    return USAGE + "\ntools: " + ", ".join(registry.names()) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from ..core import stops     # built-ins only: ~0.1 ms
    tool = bool(argv) and argv[0] not in _COMMANDS
    if tool:
        # Before anything is loaded (the prefetch thread below loads and
        # attaches): a stop from here on is held until the tool's loop can
        # print what was traced (cliutil.release_stops), and never meets
        # Python's default handlers (KeyboardInterrupt out of an import:
        # status 130; SIGTERM: killed with nothing released).
        stops.install_signal_handlers(hold=True)
    else:
        stops.absorb_repeated_interrupts()     # one Ctrl-C: status 130, never a traceback
    try:
        rc = _dispatch(argv, tool)
    except (KeyboardInterrupt, stops.Terminate):
        # How a tool is stopped, even when the stop lands before or after its
        # loop (everything it held was released on the way out).  A command
        # other than a tool interrupted by Ctrl-C: the shell's 128 + SIGINT.
        rc = 0 if tool else 130
    except BrokenPipeError:
        # reader went away (e.g. `| head`): quiet exit, and no flush error at shutdown
        from .stdout import drop_stdout
        drop_stdout()
        return 0
    except BaseException:
        from .stdout import settle_stdout
        settle_stdout()         # the exception is the message; the output's failure would add a traceback
        raise
    from .stdout import settle_stdout
    failure = settle_stdout()
    if failure is not None:     # what was printed last did not reach the file: say so
        sys.stderr.write(f"pytrace {argv[0] if argv else ''}: cannot write the output: {failure}\n")
        return rc or 1
    return rc


def _dispatch(argv: list[str], tool: bool) -> int:
    if tool and not _NO_SPECULATION.intersection(a.split("=")[0] for a in argv[1:]):
        # First of all, so that the load overlaps every import (cli/prefetch)
        from . import prefetch
        prefetch.start(argv[0], argv[1:])
    from .. import tools as registry
    from ..core.errors import PytraceError
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_help())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "--version":
        print(f"pytrace {__version__}")
        return 0
    verbose = "--libbpf-log" in rest or "-v" in rest or "--verbose" in rest
    try:
        if cmd == "list":
            from ..commands import listing
            return listing.run(rest)
        if cmd == "doctor":
            from ..commands import doctor
            return doctor.run(rest)
        if cmd == "replay":
            from ..commands import replay
            return replay.run(rest)
        if cmd == "exporter":
            from ..commands import exporter
            return exporter.run(rest)
        if not registry.exists(cmd):
            sys.stderr.write(f"pytrace: unknown tool or command '{cmd}' (pytrace list shows the tools)\n")
            return 2
        return _run_tool(cmd, rest)
    except PytraceError as exc:
        if verbose:
            _show_traceback()
        sys.stderr.write(f"pytrace {cmd}: {exc}\n")
        return exc.exit_code
    except BrokenPipeError:
        raise                   # not an error to report: main ends quietly
    except OSError as exc:
        if verbose:
            _show_traceback()
        from .stdout import output_failure
        why = output_failure(exc)
        sys.stderr.write(f"pytrace {cmd}: {f'cannot write the output: {why}' if why else exc}\n")
        return 1


# Flags with which a speculative load would be wasted (help, --ebpf) or
# wrong (libbpf's log for -v, another kernel BTF for --btf): see cli/prefetch.
_NO_SPECULATION = frozenset(("-h", "--help", "-v", "--verbose", "--libbpf-log", "--ebpf", "--btf"))
# What is not a tool (a tool's name is checked once the registry is imported)
_COMMANDS = frozenset(("-h", "--help", "help", "--version", "list", "doctor", "replay", "exporter"))


def _show_traceback() -> None:
    import traceback
    traceback.print_exc()


def _run_tool(name: str, argv: list[str]) -> int:
    from .. import tools as registry
    from ..core import objects
    from ..core.tracer import Tracer
    from . import cliutil, prefetch
    Tracer.preloads = prefetch      # this run's loads may take the speculative one, and are remembered

    tool = registry.command(name)       # its SPEC (pytrace.spec)
    values = prefetch.parsed_args()
    if values is not None:
        from types import SimpleNamespace
        args = SimpleNamespace(**values)
    else:
        from .argparser import ArgParser
        parser = ArgParser(prog=f"pytrace {name}")
        tool.add_arguments(parser)
        args = parser.parse_args(argv)
        # --record checks that its file is new, and other arguments check this
        # host's state (a PID limit, a namespace): those are parsed again at every run
        if getattr(args, "record", None) is None and not cliutil.parsed_on_host():
            prefetch.note_args(vars(args))      # keyed by every module the parse imported
    if getattr(args, "ebpf", False):
        sys.stdout.write(objects.source(tool.object))
        return 0
    if getattr(args, "libbpf_log", False):    # logging costs start-up time: only when asked for
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    if getattr(args, "btf", None):
        objects.set_custom_btf(args.btf)
    # Stops are held (since main) until the tool's loop starts, so that one
    # landing while the tool starts up is raised where the loop prints what
    # was traced (cliutil.release_stops); a tool that ends before its loop
    # ends the hold.
    sinks = None
    failed = True
    try:
        try:
            if getattr(args, "record", None) or getattr(args, "influx", None):
                from .. import sinks as sinkmod
                from ..core.stream import EventTracer
                cliutil.share_epoch()       # so a recording replays -T/-t columns exactly
                EventTracer.projection_allowed = False     # sinks store and decode whole records
                sinks = sinkmod.from_args(name, argv, args)
                cliutil.set_sinks(sinks)
            rc = tool.run(args)
        finally:
            cliutil.release_stops()      # a stop still held: status 0, as below
        failed = False
        return rc
    except (KeyboardInterrupt, cliutil.Terminate):
        # Ctrl-C / SIGTERM is how a tracer is stopped, even while it starts
        # up; everything it held was released on the way out.
        failed = False
        return 0
    finally:
        if sinks is not None:
            cliutil.set_sinks(None)
            try:
                sinks.close(failed)
            except (KeyboardInterrupt, cliutil.Terminate):
                pass    # a second Ctrl-C cuts the final flush short (sinks count what was left)


def entry() -> None:
    try:
        rc = main()
    finally:
        from ..core import stops
        stops.ignore_stops()    # Python's finalization must not die of a late stop
    sys.exit(rc)
