"""softirqs: time spent in soft IRQs, per vector, aggregated in the kernel.

Library:

    from pytrace.tools.softirqs import SoftIrqs
    with SoftIrqs(dist=True) as s:
        time.sleep(1)
        rows, hists = s.period()             # what happened since the last period
        for st in rows:                      # SoftIrqStat
            print(st.softirq, st.count, st.total_ns, hists[st.softirq].average)

Vector names come from the running kernel's own enum (HI_SOFTIRQ,
NET_RX_SOFTIRQ, ...) in its BTF, printed lower case like BCC and
libbpf-tools; the fixed list of softirq_to_name() is only the fallback for a
kernel BTF without that enum.  cpu=N (-c) times the runs of that CPU only.

This tool is benchmarked for start-up time (`softirqs 1 1`): keep module-level
imports to what every run needs.
"""

from __future__ import annotations

import struct

from ..core import convert
from ..cli.cliutil import bad_value, checking_host
from ..core.errors import UsageError
from ..core.loader import Variant
from ..core.tracer import Tracer
from ..spec import HISTOGRAM, TABLE, EventType, Option, ToolSpec, interval_positionals, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..core.hist import Log2Histogram
    from ..sinks.snapshot import Snapshot

MAX_VECS = 16        # as in softirqs.bpf.c
# kernel/softirq.c softirq_to_name[], for kernels whose BTF lacks the enum
FALLBACK_NAMES = ("hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched",
                  "hrtimer", "rcu")
_KEYS = tuple(struct.pack("<I", v) for v in range(MAX_VECS))
_names: list = []


def vec_names() -> tuple[str, ...]:
    """softirq vector number -> name ("net_rx"), from the kernel's enum in BTF."""
    from ..core.errors import PytraceError
    from ..core.kernel_btf import enum_with_member
    try:
        enum = enum_with_member("NET_RX_SOFTIRQ")
    except PytraceError:
        enum = {}
    names = {v: n[:-len("_SOFTIRQ")].lower() for v, n in enum.items()
             if n.endswith("_SOFTIRQ") and 0 <= v < MAX_VECS}
    if not names:
        return FALLBACK_NAMES
    return tuple(names.get(v, str(v)) for v in range(max(names) + 1))


def softirq_name(vec: int) -> str:
    """A vector's name, as this kernel names it (read once per process)."""
    if not _names:
        _names.append(vec_names())
    names = _names[0]
    return names[vec] if vec < len(names) else str(vec)


convert.register(convert.Conversion("softirq_name", softirq_name, None, convert.text_parse, kind="str"))

# A row of the per-CPU stats map (key: the vector, value struct softirq_stat),
# summed over the CPUs and taken as a difference over the period
SOFTIRQ_STAT = EventType("SoftIrqStat", map="stats", doc="One soft IRQ vector's runs in a period.", fields="""
    vec <- key                  # the vector number
    softirq <- key: softirq_name    # its name, lower case (net_rx)
    count                       # runs that ended in the period
    total_ns                    # their total time
    -slots
""")


class SoftIrqs(Tracer):
    OBJECT = "softirqs"
    VARIANTS = (
        Variant("tp_btf", ("softirqs_tp_btf_entry", "softirqs_tp_btf_exit")),
        Variant("raw_tp", ("softirqs_raw_tp_entry", "softirqs_raw_tp_exit")),
        Variant("tracepoint", ("softirqs_tracepoint_entry", "softirqs_tracepoint_exit")),
    )

    def __init__(self, *, dist: bool = False, ns: bool = False, cpu: int | None = None, events: bool = False,
                 hook: str | None = None):
        """events: BCC's -C (counts are what is shown; time options do not go with it)."""
        super().__init__(hook=hook)
        if events and (dist or ns):
            raise UsageError("-C/--events can't be used with time-based options (-d, -N)")
        self.dist, self.ns, self.cpu = dist, ns, cpu
        self.unit = "nsecs" if ns else "usecs"
        self._base: dict[int, dict] = {}

    def rodata(self) -> dict[str, Any]:
        return {"targ_dist": self.dist, "targ_ns": self.ns, "targ_cpu": -1 if self.cpu is None else self.cpu}

    def setup(self) -> None:
        self._stats = self.obj.map("stats")
        self._decode = SOFTIRQ_STAT.cls.decoder(("key", "count", "total_ns"))

    def period(self, reset: bool = True) -> tuple[list, dict[str, Log2Histogram]]:
        """(a SoftIrqStat per vector with runs, in vector order; with dist, its
        Log2Histogram by name) since the last period(reset=True), or the start.
        The kernel's per-CPU sums are never cleared; periods are differences,
        so no run is lost between reads."""
        rows, hists = [], {}
        decode = self._decode
        for vec, key in enumerate(_KEYS):
            cur = self._stats.percpu_sum(key)
            if cur is None:
                continue
            base = self._base.get(vec)
            if reset:
                self._base[vec] = cur
            count = cur["count"] - (base["count"] if base else 0)
            if not count:
                continue
            row = decode((vec, count, cur["total_ns"] - (base["total_ns"] if base else 0)))
            rows.append(row)
            if self.dist:
                from ..core.hist import Log2Histogram
                slots = cur["slots"] if base is None else tuple(a - b for a, b in zip(cur["slots"], base["slots"]))
                hists[row.softirq] = Log2Histogram(slots, self.unit, sum(slots))
        return rows, hists

    def read(self, reset: bool = True) -> list:
        """The period's SoftIrqStat rows (period()[0])."""
        return self.period(reset)[0]

    def histograms(self, reset: bool = True) -> dict[str, Log2Histogram]:
        """With dist: the period's histograms by vector name (period()[1])."""
        return self.period(reset)[1]


__getattr__ = public_classes(__name__, SoftIrqStat=SOFTIRQ_STAT)


# -- command line ---------------------------------------------------------------

def cpu_number(text: str) -> int:
    """An argparse type for -c: a CPU this machine can have."""
    from ..core.bpfobject import ncpus_possible
    if not text.isdigit():
        raise bad_value(f"'{text}' is not a CPU number")
    cpu = int(text)
    if checking_host() and cpu >= ncpus_possible():
        raise bad_value(f"'{text}': this machine has CPUs 0-{ncpus_possible() - 1}")
    return cpu


cpu_number.range_text = "0-the last CPU"    # type: ignore[attr-defined]


def intro(args: Any) -> str:
    if args.events:
        return "Tracing soft irq events... Hit Ctrl-C to end.\n"
    return "Tracing soft irq event time... Hit Ctrl-C to end.\n"


def text(snap: Snapshot, args: Any) -> str:
    """BCC's table: SOFTIRQ and TOTAL_usecs (nsecs with -N, count with -C),
    smallest first, so the busiest vector ends up last."""
    from ..cli.aggregate import local_time
    lines = [""]
    if args.timestamp:
        lines.append(f"{local_time(snap):<8}")
    label = "count" if args.events else "nsecs" if args.nanoseconds else "usecs"
    lines.append(f"{'SOFTIRQ':<16} {'TOTAL_' + label:>11}")
    div = 1 if args.nanoseconds else 1000
    rows = SPEC.rows(snap)
    for st in sorted(rows, key=lambda s: ((s.count if args.events else s.total_ns), s.vec)):
        lines.append(f"{st.softirq:<16} {(st.count if args.events else st.total_ns // div):>11}")
    return "\n".join(lines) + "\n"


def dist_text(snap: Snapshot, args: Any) -> str:
    """-d: BCC's histogram per vector, under "softirq = NAME"."""
    from ..cli.aggregate import local_time
    lines = [""]
    if args.timestamp:
        lines.append(f"{local_time(snap):<8}")
    for s in snap.series:
        if s.hist is not None and s.hist.count:
            lines.append(f"softirq = {dict(s.labels)['softirq']}")
            lines.append(s.hist.render())
    return "\n".join(lines) + "\n"


OPTIONS = (
    timestamp(help="include timestamp on output"),
    Option("-N", "--nanoseconds", action="store_true", kw="ns", help="output in nanoseconds"),
    Option("-C", "--events", action="store_true", kw="events", help="show the number of soft irq events"),
    Option("-d", "--dist", action="store_true", kw="dist", help="show distributions as histograms"),
    Option("-c", "--cpu", type=cpu_number, kw="cpu", help="trace this CPU only"),
    *interval_positionals(),
)

DIST = ToolSpec(
    "softirqs", "soft IRQ time per vector, as histograms (softirqs -d)", SoftIrqs, HISTOGRAM,
    read=lambda tracer, args: tracer.histograms(), label=lambda args: "softirq",
    text=dist_text, intro=intro,
)

SPEC = ToolSpec(
    "softirqs", "soft IRQ time per vector, as totals or histograms", SoftIrqs, TABLE,
    description="Summarize soft IRQ event time as totals or histograms (or the number of events, -C).",
    event=SOFTIRQ_STAT,
    labels=("softirq", "vec"), values=("count", "total_ns"),
    options=OPTIONS,
    read=lambda tracer, args: tracer.read(),
    alternate=("dist", DIST),
    text=text, intro=intro,
    examples=(
        ("pytrace softirqs", "sum soft irq event time"),
        ("pytrace softirqs -C", "show the number of soft irq events"),
        ("pytrace softirqs -d", "show soft irq event time as histograms"),
        ("pytrace softirqs 1 10", "print 1 second summaries, 10 times"),
        ("pytrace softirqs -NT 1", "1s summaries, nanoseconds, and timestamps"),
        ("pytrace softirqs -c 1", "sum soft irq event time on CPU 1 only"),
    ),
)

