"""A stop (Ctrl-C, SIGTERM) that lands while the CLI has a batch in hand,
drained from the ring but not yet written, must not lose that batch: the
loop holds stops from the drain until the batch is written and raises them
between batches or while the ring sleeps (cliutil.stream_events).  The
signal is sent from inside the drain or the renderer, so it lands there
every time, with real records of real connections.  And the output takes
all of a batch even from a raw stdout (python -u) that takes part of it."""

from __future__ import annotations

import io
import os
import signal
import time

import pytest

from helpers import captured_output, free_port, printed_lines, tcp_roundtrip
from pytrace.core import stops
from pytrace.cli import cliutil
from pytrace.tools import tcpstates
from pytrace.tools.tcpstates import TcpStates

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
def _default_args():
    """tcpstates' arguments as its parser gives them with no flags: the default columns."""
    from pytrace.cli.argparser import ArgParser
    parser = ArgParser(prog="pytrace tcpstates")
    tcpstates.SPEC.add_arguments(parser)
    return parser.parse_args([])


TEXT = _default_args()


def three_connections_printed(out, conns) -> int:
    """The lines of three connections to one -L port, each there exactly:
    their number."""
    rows = [l.split() for l in printed_lines(out)[1:]]
    assert len(rows) == 3 * 7                       # 2 listener + 5 child transitions each
    assert sorted(int(r[6]) for r in rows if r[6] != "0") == sorted([c.client_port for c in conns] * 5)
    return len(rows)


@pytest.fixture
def cli_handlers():
    """The CLI's stop handlers in this process, as cli._run_tool installs them."""
    saved = [(s, signal.getsignal(s)) for s in STOPS]
    cliutil.install_signal_handlers()
    try:
        yield
    finally:
        stops.uninstall(saved)      # and the stop raised is forgotten: the next test stops again


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_a_batch_is_out_loses_none_of_it(cli_handlers, sig):
    port = free_port()
    out = captured_output()
    with TcpStates(lports=[port]) as tracer:
        conns = [tcp_roundtrip("127.0.0.1", port) for _ in range(3)]
        inner = tcpstates.SPEC.event_renderer(tracer, TEXT, out)
        calls = []

        def render(batch):
            calls.append(len(batch))
            if len(calls) == 1:
                os.kill(os.getpid(), sig)       # handled at the next bytecode: inside this batch
            return inner(batch)
        assert cliutil.stream_events(tracer, out, render, duration=5) == 0
    assert calls[0] == three_connections_printed(out, conns)     # all in the batch the stop hit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_inside_the_drain_loses_none_of_its_batch(cli_handlers, sig):
    """The drain has released the batch's ring space when the signal lands:
    only the loop still has those records."""
    port = free_port()
    out = captured_output()
    with TcpStates(lports=[port]) as tracer:
        conns = [tcp_roundtrip("127.0.0.1", port) for _ in range(3)]
        drain, sent = tracer.ring.drain, []

        def drain_then_stop(*a, **kw):
            batch = drain(*a, **kw)
            if batch and not sent:
                sent.append(len(batch))
                os.kill(os.getpid(), sig)       # handled at the next bytecode: the batch is out
            return batch
        tracer.ring.drain = drain_then_stop
        started = time.monotonic()
        assert cliutil.stream_events(tracer, out, tcpstates.SPEC.event_renderer(tracer, TEXT, out), duration=5) == 0
        assert time.monotonic() - started < 2              # the stop ended the loop
    assert sent == [three_connections_printed(out, conns)]      # all in the batch the stop hit


class Trickle(io.RawIOBase):
    """A raw binary file that takes at most 7 bytes a write, as a pipe takes
    part of a large write when a handled signal interrupts it."""

    def __init__(self):
        self.got = bytearray()

    def writable(self):
        return True

    def write(self, data):
        taken = bytes(data[:7])
        self.got += taken
        return len(taken)


def test_output_writes_all_of_a_batch_to_a_raw_stdout():
    raw = Trickle()
    out = cliutil.Output(False, io.TextIOWrapper(raw, write_through=True))
    data = b"".join(b"%05d line of a batch\n" % i for i in range(200))
    out.write(data)
    out.write(b"tail\n")
    assert bytes(raw.got) == data + b"tail\n"
