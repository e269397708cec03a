"""The timing of every tool that prints on an interval (tcprtt, tcptop, softirqs...);
cli/aggregate.print_loop is the loop they run on it.

    for last in ticks(interval=1, count=5, duration=None):
        print_snapshot()

yields once per interval (and once at the end of a duration); Ctrl-C or
SIGTERM ends the sleep early and yields a final tick, so the last partial
interval is printed like the C tools do.  `last` is True on the final tick.

stop_when: a check made at least every WATCH_STEP seconds while sleeping
(e.g. "is the traced device still there?"); when it returns True the sleep
ends with a final tick, as a stop does.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from .cliutil import Terminate, release_stops

WATCH_STEP = 0.5


def _sleep_until(wake: float | None, stop_when: Callable[[], bool] | None) -> bool:
    """Sleep until wake (monotonic; None: for ever); True if stop_when ended it first."""
    while True:
        left = None if wake is None else wake - time.monotonic()
        if left is not None and left <= 0:
            return False
        if stop_when is None:
            time.sleep(3600 if left is None else left)
            continue
        time.sleep(WATCH_STEP if left is None else min(left, WATCH_STEP))
        if stop_when():
            return True


def ticks(interval: float | None = None, count: int | None = None,
          duration: float | None = None, stop_when: Callable[[], bool] | None = None) -> Iterator[bool]:
    start = time.monotonic()
    end = start + duration if duration else None
    n = 0
    while True:
        targets = [t for t in ((start + (n + 1) * interval) if interval else None, end) if t is not None]
        wake = min(targets) if targets else None
        try:
            # A stop the CLI held while the tool started (cliutil.release_stops)
            # ends the first sleep: the final tick prints what was traced.
            release_stops()
            stopped = _sleep_until(wake, stop_when)
        except (KeyboardInterrupt, Terminate):
            yield True
            return
        if stopped:
            yield True
            return
        n += 1
        last = bool((count and n >= count) or (end is not None and time.monotonic() >= end - 1e-3))
        yield last
        if last:
            return


def each_tick(emit: Callable[[bool], None], interval: float | None = None, count: int | None = None,
              duration: float | None = None, start: Callable[[], None] | None = None,
              stop_when: Callable[[], bool] | None = None) -> None:
    """start() once (e.g. print a header), then emit(last) on every tick of
    ticks().  A Ctrl-C or SIGTERM that lands outside the sleep, while start or
    emit runs, still ends with one final emit(True): the data of the last
    interval is printed, not lost."""
    try:
        if start is not None:
            start()
        for last in ticks(interval, count, duration, stop_when):
            emit(last)
    except (KeyboardInterrupt, Terminate):
        try:
            emit(True)
        except (KeyboardInterrupt, Terminate):
            pass
