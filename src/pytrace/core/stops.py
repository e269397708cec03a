"""How a tool is stopped: SIGINT, SIGTERM and SIGHUP turned into exceptions
that unwind every `with` block, so that everything held in the kernel is
released on the way out.

Ctrl-C raises KeyboardInterrupt, SIGTERM and SIGHUP raise Terminate.  Both
derive from BaseException only, so no `except Exception` (an ELF file that
cannot be parsed, a type hint that does not resolve) can swallow a stop.

Three rules decide where a stop lands:
  - held (the CLI while a tool starts, and while its loop holds a batch): the
    stop is remembered and raised by release_stops(); a second one while the
    first is held is raised at once (the user insists);
  - inside releasing() (closing a tracer): remembered, and raised when the
    release is complete, never in the middle of it;
  - the CLI's handlers are final: once a stop has been raised the process is
    on its way out, and later stops are absorbed.  A second Ctrl-C or a
    service manager's repeated SIGTERM then neither cuts the final drain or
    a release short nor ends the process by the default disposition (which
    Python restores for its own last moments: see ignore_stops()).  Every
    step of the way out is bounded (one ring's worth of records, sinks that
    give up after a second), but a write can block on a pipe no one reads:
    a stop that comes INSIST_AFTER seconds or more after the last one raised
    is raised too, and cuts that short.

Kept apart from cliutil, and importing only the built-in _signal (not
signal, whose enums cost ~3 ms), so that cli.main can install the handlers
first thing, before the prefetch thread loads anything a stop must release.
"""

from __future__ import annotations

from _signal import (SIG_BLOCK, SIG_DFL, SIG_IGN, SIG_SETMASK, SIGHUP, SIGINT, SIGTERM, default_int_handler, getsignal,
                     pthread_sigmask, signal)
from time import monotonic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Terminate(BaseException):
    """SIGTERM or SIGHUP, raised so that every context manager runs.

    A BaseException, like KeyboardInterrupt: `except Exception` must not
    catch a stop."""


STOPS = (SIGINT, SIGTERM, SIGHUP)

# The stop (KeyboardInterrupt or Terminate) asked for while held, in a list
# that is empty until then; None when stops are not held.  A flag, not a
# handler swap, so that holding costs next to nothing (stream_events
# releases and holds stops again at every batch and every sleep).
_held: list | None = None
_installed = False
_final = False          # the CLI's handlers: a raised stop is the end of the process
_stopping = 0.0         # when a final stop was last raised (monotonic); 0.0: never
INSIST_AFTER = 2.0      # seconds: the way out takes less unless something blocks
_releasing = 0          # depth of releasing() blocks now running
_deferred: type | None = None   # the stop that landed inside them


def install_signal_handlers(hold: bool = False, final: bool = True) -> None:
    """Ctrl-C raises KeyboardInterrupt, SIGTERM and SIGHUP Terminate.

    hold (the CLI, cli.main): until release_stops(), a stop is only
    remembered.  Raised while the tool loads, attaches and sets up, it would
    unwind out of the tracer before the loop whose except clause prints the
    final snapshot or drains the ring, and the command would end, status 0,
    having printed nothing of what it traced; release_stops() raises it inside
    that try block instead.  Load, attach and set-up are bounded, so a stop
    waits at most that long; a second stop meanwhile is raised at once.

    final (the CLI's commands): the first stop raised ends the process, and
    later ones are absorbed (see the module's docstring).  stop_on_signals()
    installs them not final, for a program that may go on after a stop."""
    global _held, _installed, _final
    _held = [] if hold else None
    _installed = True
    _final = final
    # Explicitly, like the C tools: a shell starts background jobs with SIGINT
    # ignored, and Python would keep it ignored.
    for sig in STOPS:
        signal(sig, _on_stop)


def absorb_repeated_interrupts() -> None:
    """The CLI's commands other than tools (replay, list, doctor; the
    exporter installs the tools' handlers once its config is read): Ctrl-C
    raises KeyboardInterrupt once, as Python's own handler does (main ends
    the command with status 130), and further Ctrl-Cs while it exits are
    absorbed, as a tool's are.  With Python's handler a second one that
    landed in main's last steps (after its except clause, before
    ignore_stops) ended the command with a traceback and status -2.

    SIGTERM and SIGHUP keep their default disposition: these commands hold
    nothing in the kernel.  A SIGINT ignored since the start (a shell's
    background job) stays ignored."""
    global _final
    if getsignal(SIGINT) is default_int_handler:
        _final = True
        signal(SIGINT, _on_stop)


def _on_stop(signum: int, frame: Any) -> None:
    global _held, _deferred
    if _stopping and monotonic() - _stopping < INSIST_AFTER:
        return                  # on the way out already: absorbed
    stop = KeyboardInterrupt if signum == SIGINT else Terminate
    if _releasing:
        if _deferred is None:
            _deferred = stop    # raised when the release is complete
        return
    if _held == []:
        _held.append(stop)
        return
    # Not held, or a second stop while held (the user insists): raise it now.
    _held = None
    _raise(stop)


def _raise(stop: type) -> None:
    global _stopping
    if _final:
        _stopping = monotonic()
    raise stop()


def hold_stops() -> None:
    """From now until release_stops(), a stop is remembered, not raised (a
    no-op unless handlers were installed)."""
    global _held
    if _installed and _held is None:
        _held = []


def release_stops() -> None:
    """Stops raise from now on, and one held since
    install_signal_handlers(hold=True) or hold_stops() is raised here.

    Called by every CLI loop first thing in the try block whose except
    clause prints the final output on Ctrl-C or SIGTERM (stream_events,
    periodic.ticks, sockrmem's loop), by stream_events between batches and
    before each sleep, and by cli._run_tool when the tool returns or fails.
    Does nothing when stops are not held (library use)."""
    global _held
    held, _held = _held, None
    if held:
        _raise(held[0])


class releasing:
    """with releasing(): ...  A stop that lands inside the block waits until
    the block is done: closing a tracer (links, tc filters, mounts, each a
    separate step) is never cut short half way.  Nests; costs nothing
    without handlers (KeyboardInterrupt from Python's own SIGINT handler
    cannot be deferred: stop_on_signals() is what makes library use safe)."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _releasing
        _releasing += 1

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        global _releasing, _deferred
        _releasing -= 1
        if _releasing or _deferred is None:
            return
        stop, _deferred = _deferred, None
        if kind is not None and issubclass(kind, (KeyboardInterrupt, Terminate)):
            return              # already stopping: the one that landed meanwhile adds nothing
        if _held is not None:   # an outer hold: it raises the stop when it ends
            if not _held:
                _held.append(stop)
            return
        _raise(stop)


def ignore_stops() -> None:
    """From now on stops are ignored: the CLI's last step, when main() has
    returned and everything is released.  Python's finalization puts its
    own handlers back to the default disposition, and a stop in those last
    milliseconds would end the process by signal (status -2/-15 instead of
    the status main() returned); an ignored signal stays ignored.  Ours or
    a command's own (vnet record sets flags): any handler set from Python.

    The stops are blocked while their handlers change: a stop that landed
    between two changes would otherwise be run by CPython at the next
    change, find its handler gone and say so on stderr ("Signal 2 ignored
    due to race condition").  One pending meanwhile is discarded by SIG_IGN."""
    sigs = [sig for sig in STOPS if callable(getsignal(sig))]
    if not sigs:
        return
    before = pthread_sigmask(SIG_BLOCK, sigs)
    try:
        for sig in sigs:
            signal(sig, SIG_IGN)
    finally:
        pthread_sigmask(SIG_SETMASK, before)


class stop_on_signals:
    """For programs that use the tool classes: SIGTERM and SIGHUP raise
    Terminate, Ctrl-C KeyboardInterrupt, so that every `with` block of a
    tracer unwinds and releases what it holds in the kernel.  Without it,
    SIGTERM ends a Python program at once, and what the kernel does not
    free with the process (a tc filter, a mounted tracefs) stays.  Call it
    from the main thread, once, before opening tracers:

        pytrace.stop_on_signals()               # stops raise from now on

    or around the work, which then ends quietly on a stop and puts the
    previous handlers back:

        with pytrace.stop_on_signals():
            with TcpStates() as tracer:
                for ev in tracer.events():
                    ...
    """

    __slots__ = ("previous",)

    def __init__(self) -> None:
        self.previous = [(sig, getsignal(sig)) for sig in STOPS]
        install_signal_handlers(final=False)

    def __enter__(self) -> "stop_on_signals":
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        uninstall(self.previous)
        return kind is not None and issubclass(kind, (KeyboardInterrupt, Terminate))


def uninstall(previous: list[tuple[int, Any]]) -> None:
    """Put back the handlers that were there before (sig, handler pairs, as
    signal.getsignal returned them) and forget every stop held or absorbed."""
    global _held, _installed, _final, _stopping, _deferred
    for sig, handler in previous:
        if handler is None:         # not set from Python: leave ours
            continue
        if isinstance(handler, int):    # signal.getsignal's enums: _signal takes its own constants
            handler = SIG_IGN if handler == SIG_IGN else SIG_DFL
        signal(sig, handler)
    _held, _installed, _final, _stopping, _deferred = None, False, False, 0.0, None
