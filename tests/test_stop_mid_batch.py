"""A stop (Ctrl-C, SIGTERM) that lands while the CLI has a batch in hand,
drained from the ring but not yet written, must not lose that batch: the
loop holds stops while a batch is out and raises them between batches
(cliutil.stream_events).  The signal is sent from inside the renderer, so it
lands there every time, with real records of real connections."""

from __future__ import annotations

import io
import os
import signal
from types import SimpleNamespace

import pytest

from helpers import free_port, tcp_roundtrip
from pytrace.core import cliutil
from pytrace.tools import tcpstates
from pytrace.tools.tcpstates import TcpStates

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def cli_handlers():
    """The CLI's stop handlers in this process, as cli._run_tool installs them."""
    saved = {s: signal.getsignal(s) for s in STOPS}
    cliutil.install_signal_handlers()
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        cliutil._held, cliutil._installed = None, False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_a_batch_is_out_loses_none_of_it(cli_handlers, sig):
    port = free_port()
    stream = io.TextIOWrapper(io.BytesIO(), write_through=True)
    out = cliutil.Output(False, stream)
    args = SimpleNamespace(json=False, timestamp=False, time=False, wide=False, ipv6=False)
    with TcpStates(lports=[port]) as tracer:
        conns = [tcp_roundtrip("127.0.0.1", port) for _ in range(3)]
        inner = tcpstates.renderer(tracer, args, out)
        calls = []

        def render(batch):
            calls.append(len(batch))
            if len(calls) == 1:
                os.kill(os.getpid(), sig)       # handled at the next bytecode: inside this batch
            return inner(batch)
        assert cliutil.stream_events(tracer, out, render, duration=5) == 0
    lines = stream.buffer.getvalue().decode().splitlines()
    rows = [l.split() for l in lines[1:]]
    assert calls[0] == len(rows) == 3 * 7                # 2 listener + 5 child transitions each
    assert sorted(int(r[6]) for r in rows if r[6] != "0") == sorted([c.client_port for c in conns] * 5)
