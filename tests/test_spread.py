"""The CLI reader (cli/cliutil.SpreadReader) moves to the next allowed CPU after
each large batch and is let go once it has caught up, on a real tracer's ring."""

from __future__ import annotations

import os

import pytest

from pytrace.cli.cliutil import SpreadReader
from pytrace.tools.tcpstates import TcpStates

ALLOWED = sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(len(ALLOWED) < 2, reason="spreading needs at least 2 allowed CPUs")
def test_large_batches_rotate_over_the_allowed_cpus_and_a_small_one_releases():
    with TcpStates() as tracer:
        spread = SpreadReader(tracer.ring)
        try:
            seen = []
            for _ in range(len(ALLOWED)):
                spread.after(SpreadReader.MIN_BATCH)
                seen.append(sorted(os.sched_getaffinity(0)))
            assert all(len(cpus) == 1 for cpus in seen)
            assert sorted(c[0] for c in seen) == ALLOWED          # each allowed CPU once
            spread.after(SpreadReader.MIN_BATCH - 1)               # caught up
            assert sorted(os.sched_getaffinity(0)) == ALLOWED
            spread.after(0)                                        # idle ticks leave it alone
            assert sorted(os.sched_getaffinity(0)) == ALLOWED
            spread.after(SpreadReader.MIN_BATCH)
            spread.close()
            assert sorted(os.sched_getaffinity(0)) == ALLOWED
        finally:
            os.sched_setaffinity(0, ALLOWED)


def test_a_reader_restricted_to_one_cpu_stays_there():
    """taskset -c N: nothing to spread over, and the user's choice is kept."""
    one = (ALLOWED[-1],)
    os.sched_setaffinity(0, one)
    try:
        with TcpStates() as tracer:
            spread = SpreadReader(tracer.ring)
            spread.after(10 * SpreadReader.MIN_BATCH)
            spread.close()
            assert (spread.enabled, tuple(os.sched_getaffinity(0))) == (False, one)
    finally:
        os.sched_setaffinity(0, ALLOWED)
