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

from ..cli.aggregate import timestamp_line
from ..core.errors import PytraceError
from ..core.hist import Log2Histogram
from ..core.ksyms import kernel_symbols
from ..core.loader import Variant
from ..core.socklayer import histograms
from ..core.tracer import Tracer
from ..spec import HISTOGRAM, Option, ToolSpec, interval_flags, pid, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def text(snap: Any, args: Any) -> str:
    h = snap.series[0].hist if snap.series else None
    body = h.render() if h is not None and h.count else ""
    avg = f" (average {h.average:.0f} {h.unit})" if h is not None and h.count else ""
    return f"{timestamp_line(snap, args)}@skb_residency_{'usecs' if args.microseconds else 'nsecs'}: " \
           f"{h.count if h else 0} skbs{avg}\n{body}\n"


SPEC = ToolSpec(
    "skblife", "skb lifespan histogram (slab allocation to free)", SkbLife, HISTOGRAM,
    description=("Histogram of skb lifespans: slab allocation (kmem_cache_alloc from the skbuff caches) "
                 "to free (kmem_cache_free), as the book's skblife.bt. skbs recycled through the per-CPU "
                 "NAPI cache (bulk alloc/free) are not seen."),
    options=(
        pid("only skbs allocated while this process runs (its sends, receive work in its context)"),
        Option("-u", "--microseconds", action="store_true", kw="us", help="histogram in microseconds"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: {None: tracer.histogram(clear=bool(args.interval))},
    text=text,
    intro="Tracing skb lifespans (alloc to free). Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace skblife", "one histogram, at Ctrl-C"),
        ("pytrace skblife -u -i 1", "in microseconds, every second"),
        ("pytrace skblife -p 181", "only skbs allocated while process 181 runs"),
        ("pytrace skblife --json", "the histogram as JSON"),
    ),
)
