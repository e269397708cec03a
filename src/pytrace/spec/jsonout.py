"""--json of every tool with a SPEC: one object per line, one convention.

    {"time": "2026-12-07T10:04:05.123456+01:00", "ts_ns": 81234567890123, ...fields}

- the names after "time" are the library's field names (the event's or
  row's to_dict(), spec/gentypes.py), with their JSON values: enums by
  name, addresses as the CLI prints them (::ffff:192.0.2.1 for IPv4-mapped);
- "time" is the wall clock, RFC 3339 with the local zone's offset, and
  "ts_ns" the kernel's CLOCK_MONOTONIC ns: an event's own timestamp (the
  wall clock computed from it with the run's clock offset, which a
  recording keeps, so replay prints the same), or an interval's end;
- an interval tool prints one object per row (per histogram: its labels and
  core/hist.Log2Histogram.to_dict()).

Imported only with --json (json imports re: ~4 ms of start-up).
"""

from __future__ import annotations

import json

from ..cli.cliutil import Clock, rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..sinks.snapshot import Snapshot
    from .eventtype import EventType

_encode = json.JSONEncoder(separators=(",", ":")).encode


def event_json(et: EventType, source: Any) -> Callable[[list[tuple]], str]:
    """render(batch) of an event tool's --json (source: the tracer or replay's stand-in)."""
    cls = et.cls
    when = cls.TIME
    clock = Clock()
    stamp = clock.rfc3339

    def render(batch: list[tuple]) -> str:
        decode = source.decoder()
        if when is None:
            return "".join([_encode(decode(raw).to_dict()) + "\n" for raw in batch])
        out = []
        for raw in batch:
            d = decode(raw).to_dict()
            out.append(_encode({"time": stamp(d[when]), **d}) + "\n")
        return "".join(out)

    def render_labelled(batch: list[tuple]) -> str:
        decode = source.decoder()
        out = []
        for raw in batch:
            ev = decode(raw)
            d = ev.to_dict()
            if ev.labels is not None:
                d.update(ev.labels.to_dict())
            out.append(_encode({"time": stamp(d[when]), **d} if when is not None else d) + "\n")
        return "".join(out)
    return render_labelled if getattr(source, "labeler", None) is not None else render


def snapshot_head(snap: Snapshot) -> dict[str, Any]:
    return {"time": rfc3339(snap.time_ns), "ts_ns": snap.mono_ns}


def rows_json(snap: Snapshot, rows: list[Any]) -> str:
    """A row per line; a labelled row's labels after its fields, as an event's."""
    head = snapshot_head(snap)
    return "".join(_encode({**head, **r.to_dict(), **(r.labels.to_dict() if getattr(r, "labels", None) is not None else {})}) + "\n"
                   for r in rows)


def histograms_json(snap: Snapshot, spec: Any = None) -> str:
    """A histogram per line: its labels (typed, through the spec's event type
    when it declares one), then the histogram's; a series of counts without
    a histogram, its labels then its values."""
    head = snapshot_head(snap)
    if spec is not None and spec.event is not None and spec.kind == "histogram":
        return "".join(_encode({**head, **row.to_dict(), **h.to_dict()}) + "\n"
                       for row, h in spec.histograms(snap) if h is not None)
    # a histogram tool's counts (tcpnagle's Nagle settings): a row of labels and values
    return "".join(_encode({**head, **dict(s.labels), **(s.hist.to_dict() if s.hist is not None else dict(s.values))})
                   + "\n" for s in snap.series if s.hist is not None or s.values)
