"""What an aggregating tool hands to the sinks once per interval.

A Snapshot is the interval's table: one Series per row (tcprtt: one per
address; tcptop: one per connection; softirqs: one per vector), each with
string labels, numeric values and/or a log2 histogram.  It is plain data, so
every sink can use it: InfluxDB writes one point per series, a recording
stores it as JSON and `pytrace replay` rebuilds it for the tool's renderer.

    snap = Snapshot.now("tcprtt", [Series.of({"raddr": "192.0.2.1"}, hist=h)])
    cliutil.publish(snap)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..core.hist import Log2Histogram

Number = int | float


@dataclass(frozen=True, slots=True)
class Series:
    labels: tuple[tuple[str, str], ...] = ()
    values: tuple[tuple[str, Number], ...] = ()
    hist: Log2Histogram | None = None

    @classmethod
    def of(cls, labels: Mapping[str, Any] | None = None, values: Mapping[str, Number] | None = None,
           hist: Log2Histogram | None = None) -> "Series":
        return cls(tuple((k, str(v)) for k, v in (labels or {}).items()),
                   tuple((values or {}).items()), hist)

    def label(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.labels:
            if k == name:
                return v
        return default

    def to_json(self) -> dict:
        out: dict[str, Any] = {"labels": dict(self.labels), "values": dict(self.values)}
        if self.hist is not None:
            h = self.hist
            out["hist"] = {"unit": h.unit, "slots": list(h.slots), "total": h.total, "sum": h.sum}
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Series":
        h = d.get("hist")
        hist = Log2Histogram(tuple(h["slots"]), h["unit"], h["total"], h["sum"]) if h else None
        return cls(tuple(d.get("labels", {}).items()), tuple(d.get("values", {}).items()), hist)


@dataclass(frozen=True, slots=True)
class Snapshot:
    tool: str
    time_ns: int                       # wall clock (time.time_ns()) of the interval's end
    series: tuple[Series, ...] = ()
    interval: float | None = None      # seconds covered, when the tool prints on an interval
    values: tuple[tuple[str, Number], ...] = ()   # about the whole interval, no row's (tcptop: load average)
    mono_ns: int | None = None         # CLOCK_MONOTONIC of the same moment (the kernel's clock)

    @classmethod
    def now(cls, tool: str, series: Iterable[Series], interval: float | None = None,
            values: Mapping[str, Number] | None = None) -> "Snapshot":
        return cls(tool, time.time_ns(), tuple(series), interval, tuple((values or {}).items()),
                   time.monotonic_ns())

    def value(self, name: str, default: Number | None = None) -> Number | None:
        for k, v in self.values:
            if k == name:
                return v
        return default

    def to_json(self) -> dict:
        out = {"tool": self.tool, "time_ns": self.time_ns, "interval": self.interval,
               "series": [s.to_json() for s in self.series]}
        if self.values:
            out["values"] = dict(self.values)
        if self.mono_ns is not None:
            out["mono_ns"] = self.mono_ns
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Snapshot":
        return cls(d["tool"], d["time_ns"], tuple(Series.from_json(s) for s in d["series"]), d.get("interval"),
                   tuple(d.get("values", {}).items()), d.get("mono_ns"))
