"""The timing of every tool that prints on an interval (tcprtt, tcptop, softirqs...);
core/aggregate.print_loop is the loop they run on it.

    for last in ticks(interval=1, count=5, duration=None):
        print_snapshot()

yields once per interval (and once at the end of a duration); Ctrl-C or
SIGTERM ends the sleep early and yields a final tick, so the last partial
interval is printed like the C tools do.  `last` is True on the final tick.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from .cliutil import Terminate, release_stops


def ticks(interval: float | None = None, count: int | None = None,
          duration: float | None = None) -> Iterator[bool]:
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
            if wake is None:
                while True:
                    time.sleep(3600)
            time.sleep(max(0.0, wake - time.monotonic()))
        except (KeyboardInterrupt, Terminate):
            yield True
            return
        n += 1
        last = bool((count and n >= count) or (end is not None and time.monotonic() >= end - 1e-3))
        yield last
        if last:
            return


def each_tick(emit: Callable[[bool], None], interval: float | None = None, count: int | None = None,
              duration: float | None = None, start: Callable[[], None] | None = None) -> None:
    """start() once (e.g. print a header), then emit(last) on every tick of
    ticks().  A Ctrl-C or SIGTERM that lands outside the sleep, while start or
    emit runs, still ends with one final emit(True): the data of the last
    interval is printed, not lost."""
    try:
        if start is not None:
            start()
        for last in ticks(interval, count, duration):
            emit(last)
    except (KeyboardInterrupt, Terminate):
        try:
            emit(True)
        except (KeyboardInterrupt, Terminate):
            pass
