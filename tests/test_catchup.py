"""The CLI reader's priority (cli/cliutil.CatchUp) follows a real ring's backlog:
raised to nice -10 while half the ring is unread and to -20 at three quarters,
back once it is drained."""

from __future__ import annotations

import os

from helpers import free_port, tcp_roundtrip
from pytrace.cli.cliutil import CatchUp
from pytrace.tools.tcpstates import TcpStates

RECORDS_PER_CONN = 7      # with -L: 2 listener + 5 child state changes


def nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def fill(tracer: TcpStates, port: int, records: int) -> None:
    for _ in range(-(-records // RECORDS_PER_CONN)):
        tcp_roundtrip("127.0.0.1", port)


def test_boosted_while_behind_and_relaxed_once_drained():
    before = nice()
    os.setpriority(os.PRIO_PROCESS, 0, 0)
    port = free_port()
    try:
        with TcpStates(lports=[port], ring_bytes=16384) as tracer:   # 170 records of 96 bytes
            ring = tracer.ring
            catch_up = CatchUp(ring)
            fill(tracer, port, 40)                                   # 40 records: well under half
            catch_up.update()
            assert (catch_up.boosted, nice()) == (False, 0)
            fill(tracer, port, 70)                                   # now over half the ring unread
            assert ring.unread() >= ring.size // 2
            catch_up.update()
            assert (catch_up.boosted, nice(), catch_up.boosts) == (True, -10, 1)
            fill(tracer, port, 30)                                   # 140 records: over three quarters
            assert ring.unread() >= ring.size * 3 // 4
            catch_up.update()
            assert (catch_up.boosted, nice(), catch_up.boosts) == (True, -20, 2)
            got = tracer.drain()
            assert tracer.lost == 0 and len(got) == ring.records
            catch_up.update()
            assert (catch_up.boosted, nice()) == (False, 0)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def test_a_reader_already_raised_is_raised_no_further_than_its_level():
    """Started at -15: only the -20 level is above it, at three quarters."""
    before = nice()
    os.setpriority(os.PRIO_PROCESS, 0, -15)
    port = free_port()
    try:
        with TcpStates(lports=[port], ring_bytes=16384) as tracer:
            ring = tracer.ring
            catch_up = CatchUp(ring)
            fill(tracer, port, 110)                                  # over half, under three quarters
            catch_up.update()
            assert (catch_up.boosted, nice()) == (False, -15)
            fill(tracer, port, 30)
            catch_up.update()
            assert (catch_up.boosted, nice()) == (True, -20)
            tracer.drain()
            catch_up.update()
            assert (catch_up.boosted, nice()) == (False, -15)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def test_a_reader_started_nice_is_never_boosted():
    before = nice()
    os.setpriority(os.PRIO_PROCESS, 0, 5)
    port = free_port()
    try:
        with TcpStates(lports=[port], ring_bytes=16384) as tracer:
            catch_up = CatchUp(tracer.ring)
            fill(tracer, port, 130)
            assert tracer.ring.unread() >= tracer.ring.size // 2
            catch_up.update()
            assert (catch_up.boosted, nice()) == (False, 5)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)
