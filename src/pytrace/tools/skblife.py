"""skblife: lifespan of socket buffers (struct sk_buff), from allocation to free.

Library:

    from pytrace.tools.skblife import SkbLife
    with SkbLife() as t:
        time.sleep(10)
        h = t.histogram()                 # Log2Histogram, nanoseconds
        print(h.count, h.average)
        print(h.render())

Every skb the slab allocator hands out from skbuff_head_cache or (in
__alloc_skb) from the fclone cache, timed until it goes back (kmem:
kmem_cache_alloc -> kmem_cache_free, as the book's skblife.bt).  With pid
set, only skbs allocated while that process was running (its sends, and
receive processing done in its context).  skbs recycled through the
per-CPU NAPI skb cache use bulk alloc/free, which has no per-object
tracepoint: they are not seen.
"""

from __future__ import annotations

from typing import Any

from ..core.aggregate import add_interval_args, check_interval_args, json_lines, print_loop, timestamp_line
from ..core.cliutil import add_common, process_id
from ..core.errors import PytraceError
from ..core.hist import Log2Histogram
from ..core.ksyms import kernel_symbols
from ..core.loader import Variant
from ..core.socklayer import histograms
from ..core.tracer import Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "skblife"
SUMMARY = "skb lifespan histogram (slab allocation to free)"

# kmem_cache_alloc/kmem_cache_free carry their cache since 6.1 (features.NEEDS)
WITH_CACHE = "kmem tracepoints with the cache"


class SkbLife(Tracer):
    OBJECT = "skblife"
    VARIANTS = (
        # no tp_btf: it reads the same arguments, and verifiers before 6.18 refuse
        # its read of kmem_cache_alloc's `const void *ptr` ("is not a struct")
        Variant("raw_tp", ("skblife_raw_tp_alloc", "skblife_raw_tp_free"), needs=WITH_CACHE),
    )

    def __init__(self, *, pid: int = 0, us: bool = False, hook: str | None = None):
        super().__init__(hook=hook)
        self.pid, self.us = pid, us
        self.unit = "usecs" if us else "nsecs"

    def rodata(self) -> dict[str, Any]:
        span = kernel_symbols().span("__alloc_skb")
        if span is None:
            raise PytraceError("__alloc_skb is not in /proc/kallsyms: cannot tell skb allocations apart")
        return {"alloc_skb_lo": span[0], "alloc_skb_hi": span[1], "targ_tgid": self.pid, "targ_us": self.us}

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    def histogram(self, clear: bool = False) -> Log2Histogram:
        """Lifespans of the skbs freed since the start (or the last clear)."""
        got = histograms(self._hists, self.unit, lambda k: None, clear)
        return got.get(None) or Log2Histogram((0,) * 32, self.unit, 0, 0)

    def snapshot(self, clear: bool = False, interval: float | None = None) -> Snapshot:
        return Snapshot.now(NAME, [Series.of({}, hist=self.histogram(clear))], interval)


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Histogram of skb lifespans: slab allocation (kmem_cache_alloc from the skbuff caches) "
                     "to free (kmem_cache_free), as the book's skblife.bt. skbs recycled through the per-CPU "
                     "NAPI cache (bulk alloc/free) are not seen.")
    p.add_argument("-p", "--pid", type=process_id, default=0,
                   help="only skbs allocated while this process runs (its sends, receive work in its context)")
    p.add_argument("-u", "--microseconds", action="store_true", help="histogram in microseconds")
    add_interval_args(p)
    add_common(p, [v.hook for v in SkbLife.VARIANTS])


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing skb lifespans (alloc to free). Hit Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    if args.json:
        return json_lines(snap)
    h = snap.series[0].hist if snap.series else None
    body = h.render() if h is not None and h.count else ""
    avg = f" (average {h.average:.0f} {h.unit})" if h is not None and h.count else ""
    return f"{timestamp_line(snap, args)}@skb_residency_{'usecs' if args.microseconds else 'nsecs'}: " \
           f"{h.count if h else 0} skbs{avg}\n{body}\n"


def run(args: argparse.Namespace) -> int:
    check_interval_args(args)
    tracer = SkbLife(pid=args.pid, us=args.microseconds, hook=args.hook)
    with tracer:
        return print_loop(args, lambda: tracer.snapshot(clear=bool(args.interval), interval=args.interval),
                          render_snapshot, intro)
