"""Prometheus metrics from the tools' library objects (for `pytrace exporter`).

Two kinds of collector, both registered with a prometheus_client registry:

- map collectors read a tool's in-kernel aggregate when Prometheus scrapes,
  never on a timer (tcprtt: its log2 srtt histograms, as native Prometheus
  histograms: slot i of a log2 histogram holds the integers up to 2^(i+1)-1,
  which becomes the bucket le=(2^(i+1)-1) in the metric's base unit; the
  kernel's last slot also takes every larger value, so it is only +Inf);
- EventCounter, a Sink like the recorder and InfluxDB, counts an
  event-streaming tool's events by chosen event fields as they stream (fed
  by an EventPump thread), plus the events the kernel lost.

MAP_COLLECTORS names the tools with a collector of their own (tcprtt,
softirqs, tcpsubnet, tcptop); every other table, top or histogram tool is
served from its SPEC by a SpecCollector (spec_collector()); every other
event-streaming tool is counted, and one numeric event field can be observed
as a histogram (tcplife's ms, tcpconnlat's delta_ns...).
"""

from __future__ import annotations

import enum
import math
import re
import threading
from typing import Any, Callable, ClassVar, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ..core.hist import Log2Histogram
from . import EventSource, Sink


def log2_buckets(hist: Log2Histogram, divisor: float) -> tuple[list[tuple[str, int]], int]:
    """Cumulative Prometheus buckets of a kernel log2 histogram (values divided
    by divisor to reach the base unit), and the count they add up to.

    Every slot but the last gets its finite upper bound, empty or not, so the
    bucket set stays the same from scrape to scrape (rate() needs that)."""
    out, acc = [], 0
    slots = hist.slots
    for i in range(len(slots) - 1):
        acc += slots[i]
        out.append((floatToGoString(Log2Histogram.bounds(i)[1] / divisor), acc))
    acc += slots[-1] if slots else 0
    out.append(("+Inf", acc))
    return out, acc


def label_text(value: Any) -> str:
    """An event attribute as a label value (enums by name)."""
    if isinstance(value, enum.Enum):
        return value.name
    return "" if value is None else str(value)


class MapCollector:
    """Base of the scrape-time collectors: one tool object, one metric family."""
    TOOL: ClassVar[str]
    NAME: ClassVar[str]
    HELP: ClassVar[str]

    GROUP_FIELDS: ClassVar[tuple[str, ...]] = ()     # what count_by may name (tcptop's flow fields)

    def __init__(self, tracer: Any, name: str | None, help_text: str | None, labels: dict[str, str],
                 count_by: Sequence[str] = ()):
        self.tracer = tracer
        self.name = name or self.NAME
        self.help = help_text or self.HELP
        self.const = labels
        self.count_by = list(count_by)

    @classmethod
    def dynamic_labels(cls, options: dict[str, Any], count_by: Sequence[str] = ()) -> list[str]:
        """Labels the collector adds itself, given the tool's options."""
        return list(count_by)

    def describe(self) -> list:
        return []   # nothing to collect at registration: the tool may not be open yet

    def collect(self) -> Iterator[Any]:
        raise NotImplementedError


class TcpRttCollector(MapCollector):
    TOOL = "tcprtt"
    NAME = "pytrace_tcp_rtt_seconds"
    HELP = ("TCP smoothed RTT (srtt) of every segment received on an established connection, "
            "from tcprtt's in-kernel log2 histogram")

    @classmethod
    def dynamic_labels(cls, options: dict[str, Any], count_by: Sequence[str] = ()) -> list[str]:
        return ["laddr"] * bool(options.get("by_laddr")) + ["raddr"] * bool(options.get("by_raddr"))

    def collect(self) -> Iterator[Any]:
        from ..core.convert import address_json     # ::ffff:192.0.2.1, as the CLI prints it
        t = self.tracer
        dyn = ["laddr"] * bool(t.by_laddr) + ["raddr"] * bool(t.by_raddr)
        fam = HistogramMetricFamily(self.name, self.help, labels=[*self.const, *dyn])
        divisor = 1e3 if t.ms else 1e6
        hists = t.histograms()
        for key, h in sorted(hists.items(), key=lambda kv: str(kv[0])):
            buckets, _count = log2_buckets(h, divisor)
            addrs = key if len(dyn) == 2 else (key,) if dyn else ()
            values = [*self.const.values(), *(address_json(a) for a in addrs)]
            fam.add_metric(values, buckets, (h.sum or 0) / divisor)
        yield fam


class SoftIrqsCollector(MapCollector):
    """softirqs: runs and time per vector (counters); with dist, time per run (histogram)."""
    TOOL = "softirqs"
    NAME = "pytrace_softirq"
    HELP = "soft IRQ handling per vector, from softirqs' per-CPU in-kernel sums"

    @classmethod
    def dynamic_labels(cls, options: dict[str, Any], count_by: Sequence[str] = ()) -> list[str]:
        return ["softirq"]

    def collect(self) -> Iterator[Any]:
        t, labels, const = self.tracer, [*self.const, "softirq"], list(self.const.values())
        stats, hists = t.period(reset=False)
        runs = CounterMetricFamily(f"{self.name}_runs", f"{self.help}: handler runs", labels=labels)
        secs = CounterMetricFamily(f"{self.name}_time_seconds", f"{self.help}: time in the handlers",
                                   labels=labels)
        for st in stats:
            runs.add_metric([*const, st.softirq], st.count)
            secs.add_metric([*const, st.softirq], st.total_ns / 1e9)
        yield runs
        yield secs
        if t.dist:
            hist = HistogramMetricFamily(f"{self.name}_duration_seconds", f"{self.help}: time per run",
                                         labels=labels)
            divisor = 1e9 if t.ns else 1e6
            for st in stats:
                if st.softirq in hists:
                    buckets, _ = log2_buckets(hists[st.softirq], divisor)
                    hist.add_metric([*const, st.softirq], buckets, st.total_ns / 1e9)
            yield hist


class TcpSubnetCollector(MapCollector):
    """tcpsubnet: bytes sent per destination subnet (a counter per subnet, zero included)."""
    TOOL = "tcpsubnet"
    NAME = "pytrace_tcp_subnet_sent_bytes"
    HELP = "TCP payload bytes accepted by send calls, by destination subnet (first match), from tcpsubnet"

    @classmethod
    def dynamic_labels(cls, options: dict[str, Any], count_by: Sequence[str] = ()) -> list[str]:
        return ["subnet"]

    def collect(self) -> Iterator[Any]:
        t = self.tracer
        got = {r.index: r.bytes for r in t.read(reset=False)}
        fam = CounterMetricFamily(self.name, self.help, labels=[*self.const, "subnet"])
        for i, sub in enumerate(t.subnets):
            fam.add_metric([*self.const.values(), sub.text], got.get(i, 0))
        yield fam


def _labels_of(tool: str) -> tuple[str, ...]:
    """The fields that say which row a tool's table row is (its SPEC's labels)."""
    from ..tools import spec
    return spec(tool).labels


class TcpTopCollector(MapCollector):
    """tcptop: bytes sent and received, summed by the flow fields in count_by.

    The kernel's flow table is emptied as it is read, so each scrape adds what
    it takes out to the running totals kept here (one per label set)."""
    TOOL = "tcptop"
    NAME = "pytrace_tcp"
    HELP = "TCP payload bytes per process and connection, from tcptop's in-kernel flow table"
    GROUP_FIELDS = _labels_of("tcptop")       # pid, comm, family, laddr, lport, raddr, rport

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, ...], list[int]] = {}

    def collect(self) -> Iterator[Any]:
        names = self.count_by
        with self._lock:
            for f in self.tracer.read():
                key = tuple(label_text(getattr(f, n)) for n in names)
                acc = self._totals.setdefault(key, [0, 0])
                acc[0] += f.tx_bytes
                acc[1] += f.rx_bytes
            items = sorted(self._totals.items())
            missed = self.tracer.missed
        labels, const = [*self.const, *names], list(self.const.values())
        sent = CounterMetricFamily(f"{self.name}_sent_bytes", f"{self.help}: sent", labels=labels)
        recv = CounterMetricFamily(f"{self.name}_received_bytes", f"{self.help}: received", labels=labels)
        for key, (tx, rx) in items:
            sent.add_metric([*const, *key], tx)
            recv.add_metric([*const, *key], rx)
        yield sent
        yield recv
        m = CounterMetricFamily(f"{self.name}_missed_calls", "sends/receives not counted: the flow table was full",
                                labels=list(self.const))
        m.add_metric(const, missed)
        yield m


# -- any table, top or histogram tool, from its SPEC ---------------------------------------

_UNITS = {"usecs": ("seconds", 1e6), "msecs": ("seconds", 1e3), "nsecs": ("seconds", 1e9), "bytes": ("bytes", 1.0)}


def label_name(name: str) -> str:
    """A snapshot label as a Prometheus label name (count's key.ret -> key_ret)."""
    out = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return out if not out[:1].isdigit() else "_" + out


class SpecCollector(MapCollector):
    """A tool's interval snapshot (its SPEC's read/snapshot), taken at scrape
    time from the tracer as the CLI takes it, but never clearing: the kernel's
    sums since the exporter started.

      a row's values (TABLE/TOP; a histogram tool's count rows) -> counters
          <name>_<value>_total, labelled by the row's labels (or, with
          count_by, summed over the rest);
      a histogram -> a Prometheus histogram <name>_seconds (usecs, msecs,
          nsecs), _bytes, or _<unit>, labelled by the histogram's labels
    (<name>: the config's name, default pytrace_<tool>)."""

    SPEC: ClassVar[Any] = None

    @classmethod
    def dynamic_labels(cls, options: dict[str, Any], count_by: Sequence[str] = ()) -> list[str]:
        if count_by:
            return list(count_by)
        names = cls.SPEC.labels or (cls.SPEC.label_names(None) if cls.SPEC.kind == "histogram" else ())
        return [label_name(n) for n in names]

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.args = _spec_args(self.SPEC, self.tracer)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        spec = self.SPEC
        with self._lock:
            snap = spec.snapshot(self.tracer, self.args)
        exported = getattr(spec, "exported", None)
        const_names, const_values = list(self.const), list(self.const.values())
        counters: dict[str, dict[tuple, float]] = {}
        counter_labels: dict[str, list[str]] = {}
        hists: dict[str, list] = {}
        for series in snap.series:
            labels = {label_name(k): v for k, v in series.labels}
            if series.hist is not None:
                hists.setdefault(series.hist.unit, []).append((labels, series.hist))
                continue
            for value, number in series.values:
                if exported is not None and value not in exported:
                    continue
                names = [label_name(n) for n in self.count_by] if self.count_by else sorted(labels)
                known = counter_labels.setdefault(value, names)
                key = tuple(labels.get(n, "") for n in known)
                acc = counters.setdefault(value, {})
                acc[key] = acc.get(key, 0) + number
        for value, acc in counters.items():
            fam = CounterMetricFamily(f"{self.name}_{value}", f"{self.help}: {value}",
                                      labels=[*const_names, *counter_labels[value]])
            for key, number in sorted(acc.items()):
                fam.add_metric([*const_values, *key], number)
            yield fam
        for unit, items in hists.items():
            suffix, divisor = _UNITS.get(unit, (label_name(unit), 1.0))
            names = sorted({n for labels, _ in items for n in labels})
            fam = HistogramMetricFamily(f"{self.name}_{suffix}", f"{self.help} ({suffix})",
                                        labels=[*const_names, *names])
            for labels, h in sorted(items, key=lambda lh: sorted(lh[0].items())):
                buckets, _count = log2_buckets(h, divisor)
                fam.add_metric([*const_values, *(labels.get(n, "") for n in names)], buckets,
                               (h.sum or 0) / divisor)
            yield fam


def _spec_args(spec: Any, tracer: Any) -> Any:
    """The arguments a SPEC's read/snapshot get: the command line's defaults,
    with the options the tracer was made with, and no interval (nothing is
    cleared: each scrape sees the sums since the start)."""
    from ..cli.argparser import ArgParser
    parser = ArgParser(prog=f"pytrace {spec.name}")
    spec.add_arguments(parser)
    args = parser.parse_args([])
    for opt in spec.options:
        for one in getattr(opt, "options", (opt,)):
            if one.kw is not None and one.value is None and hasattr(tracer, one.kw):
                setattr(args, one.dest, getattr(tracer, one.kw))
    for name in ("interval", "count", "duration"):
        setattr(args, name, None)
    args.json = False
    return args


def spec_collector(spec: Any) -> type[SpecCollector]:
    """The collector of a table, top or histogram tool (or a mixed one's histograms)."""
    return type(f"{spec.name}SpecCollector", (SpecCollector,), {
        "SPEC": spec, "TOOL": spec.name, "NAME": f"pytrace_{spec.name}",
        "HELP": f"{spec.summary} (pytrace {spec.name})",
        "GROUP_FIELDS": tuple(spec.labels) if spec.kind in ("interval table", "top") else ()})


MAP_COLLECTORS: dict[str, type[MapCollector]] = {
    c.TOOL: c for c in (TcpRttCollector, SoftIrqsCollector, TcpSubnetCollector, TcpTopCollector)}


OBSERVE_SLOTS = 41      # power-of-two buckets 2^0 .. 2^40 of the field's own unit


def pow2_slot(v: float) -> int:
    """Smallest i with v <= 2^i (0 for v <= 1); OBSERVE_SLOTS for larger than 2^40."""
    if v <= 1:
        return 0
    m, e = math.frexp(v)           # v = m * 2^e, 0.5 <= m < 1
    i = e - 1 if m == 0.5 else e
    return min(i, OBSERVE_SLOTS)


def event_value(name: str) -> Callable[[Any], Any]:
    """getter of an event's field, or of its labels' (core/containers.Labels:
    container, pod, namespace... with labels=True) when it has no such field."""
    def value(ev: Any) -> Any:
        try:
            return getattr(ev, name)
        except AttributeError:
            labels = ev.labels
            return getattr(labels, name) if labels is not None else None
    return value


class EventCounter(Sink):
    """Events counted by the values of some of their fields (count_by); with
    observe, one numeric field of each event goes into a histogram instead
    (buckets le = 2^i of the field's unit, times scale: e.g. tcplife's ms with
    scale 0.001 gives seconds)."""

    def __init__(self, tool: str, name: str, help_text: str, count_by: Sequence[str], labels: dict[str, str],
                 observe: str | None = None, scale: float = 1.0):
        self.tool, self.name, self.help = tool, name, help_text
        self.count_by = list(count_by)
        self.const = labels
        self.observe, self.scale = observe, scale
        self.counts: dict[tuple[str, ...], int] = {}
        self.hists: dict[tuple[str, ...], list] = {}     # key -> [slot counts..., sum]
        self.lost_total = 0
        self._lock = threading.Lock()
        self._key: Callable[[tuple], tuple[str, ...]] = lambda raw: ()
        self._make: Callable[[tuple], Any] | None = None

    def begin(self, source: EventSource) -> None:
        make, names = source.make_event, self.count_by
        self._make = make
        if not names:
            return

        get = [event_value(n) for n in names]

        def from_event(raw: tuple) -> tuple[str, ...]:
            ev = make(raw)
            return tuple(label_text(g(ev)) for g in get)
        self._key = from_event
        idx = [source.fields.index(n) for n in names if n in source.fields]
        if len(idx) == len(names) and source.labeler is None:
            # every label is a raw field of the same name: decode each distinct raw value once
            memo: dict[tuple, tuple[str, ...]] = {}

            def memoised(raw: tuple) -> tuple[str, ...]:
                rk = tuple(raw[i] for i in idx)
                key = memo.get(rk)
                if key is None:
                    if len(memo) > 65536:
                        memo.clear()
                    key = memo[rk] = from_event(raw)
                return key
            self._key = memoised

    def events(self, batch: list[tuple]) -> None:
        key = self._key
        if self.observe is not None:
            self._observe(batch)
            return
        local: dict[tuple[str, ...], int] = {}
        for raw in batch:
            k = key(raw)
            local[k] = local.get(k, 0) + 1
        with self._lock:
            counts = self.counts
            for k, n in local.items():
                counts[k] = counts.get(k, 0) + n

    def _observe(self, batch: list[tuple]) -> None:
        key, make, field = self._key, self._make, self.observe
        rows = []
        for raw in batch:
            v = getattr(make(raw), field)
            rows.append((key(raw), v))
        with self._lock:
            for k, v in rows:
                h = self.hists.get(k)
                if h is None:
                    h = self.hists[k] = [0] * (OBSERVE_SLOTS + 2)
                h[pow2_slot(v)] += 1
                h[-1] += v

    def lost(self, total: int) -> None:
        self.lost_total = total

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        labels = [*self.const, *self.count_by]
        if self.observe is not None:
            with self._lock:
                items = sorted((k, list(h)) for k, h in self.hists.items())
            fam = HistogramMetricFamily(self.name, self.help, labels=labels)
            for key, h in items:
                buckets, acc = [], 0
                for i in range(OBSERVE_SLOTS):
                    acc += h[i]
                    buckets.append((floatToGoString((1 << i) * self.scale), acc))
                buckets.append(("+Inf", acc + h[OBSERVE_SLOTS]))
                fam.add_metric([*self.const.values(), *key], buckets, h[-1] * self.scale)
            yield fam
        else:
            with self._lock:
                items = sorted(self.counts.items())
            fam = CounterMetricFamily(self.name, self.help, labels=labels)
            for key, n in items:
                fam.add_metric([*self.const.values(), *key], n)
            yield fam
        lost = CounterMetricFamily(self.lost_name, f"{self.tool} events the kernel could not queue (ring "
                                   "buffer full): not in the count above", labels=list(self.const))
        lost.add_metric(list(self.const.values()), self.lost_total)
        yield lost

    @property
    def lost_name(self) -> str:
        base = self.name[:-6] if self.name.endswith("_total") else self.name
        return base + "_lost"


class EventPump:
    """A thread that streams an opened event tracer into a sink until stopped."""

    def __init__(self, tracer: Any, sink: Sink, tool: str, on_error: Callable[[str], None]):
        self.tracer, self.sink, self.tool, self.on_error = tracer, sink, tool, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pump-{tool}", daemon=True)

    def start(self) -> None:
        self.sink.begin(EventSource.of(self.tracer, self.tool))
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self.tracer.batches():
                if batch:
                    self.sink.events(batch)
                self.sink.lost(self.tracer.lost)
                if self._stop.is_set():
                    return
        except Exception as exc:  # reported once; the other metrics keep being served
            self.on_error(f"{self.tool}: event stream stopped: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
