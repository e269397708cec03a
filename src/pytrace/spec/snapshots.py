"""The interval tools' snapshots, derived from their SPEC.

Every interval's output goes through a sinks.Snapshot (what --record and
--influx store, what `pytrace replay` renders again): a table or top tool's
rows become one Series each, the SPEC's `labels` fields as text labels (the
JSON value's text: InfluxDB tags, replay --where) and its `values` fields as
numbers; a histogram tool's histograms one Series each, labelled by what
`label(args)` names (tcprtt -B: raddr).  rows() turns a snapshot back into
the row type (its generated from_dict(): labels are parsed back by their
conversions), so text and JSON are printed from the snapshot only, live and
on replay alike.
"""

from __future__ import annotations

from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from . import ToolSpec


def rows_snapshot(spec: ToolSpec, rows: list[Any], args: Any, values: dict | None = None) -> Snapshot:
    """A table or top tool's rows: the spec's labels and values, and a labelled
    row's core/containers.Labels (cgroup, container, pod...) as labels too."""
    series = []
    for row in rows:
        d = row.to_dict()
        labels = {n: label_text(d[n]) for n in spec.labels if d[n] is not None}
        if getattr(row, "labels", None) is not None:
            labels.update((n, str(v)) for n, v in row.labels.to_dict().items()
                          if v is not None and n not in spec.values)     # the ids are values already
        series.append(Series.of(labels, {n: d[n] for n in spec.values}))
    return Snapshot.now(spec.name, series, getattr(args, "interval", None), values)


def label_text(value: Any) -> str:
    """A JSON value as a snapshot label (text): a list (a stack's frames) one
    item a line, as the conversions' parse() takes it back.  (A None value is
    no label: from_dict() gives None back for a label that is not there.)"""
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value)
    if isinstance(value, dict):
        import json
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def rows(spec: ToolSpec, snap: Snapshot) -> list[Any]:
    make = spec.event.cls.from_dict
    labels_of = None
    out = []
    for s in snap.series:
        fields = {**dict(s.labels), **dict(s.values)}
        row = make(fields)
        # a labelled row (rows_snapshot): its cgroup known, or its cgroup id (filled only with labels)
        if "cgroup" in fields or "runtime" in fields or fields.get("cgroup_id") not in (None, 0, "0"):
            if labels_of is None:
                from ..core.containers import Labels
                labels_of = Labels.from_text
            row = row.labelled(labels_of(fields))
        out.append(row)
    return out


def histograms_snapshot(spec: ToolSpec, hists: dict, args: Any, values: dict | None = None) -> Snapshot:
    """hists: {label value (None: not labelled): Log2Histogram}, where label(args)
    may name several labels (a tuple), whose values are then tuples too; with
    the spec's event type, {row: Log2Histogram}; with its labels,
    {(value, ...): Log2Histogram}."""
    if spec.event is not None and spec.kind == "histogram":
        names = spec.label_names(args)
        series = []
        for row, h in hists.items():
            d = row.to_dict()
            series.append(Series.of({n: label_text(d[n]) for n in names if d[n] is not None}, hist=h))
    elif spec.labels:
        names = spec.labels
        series = [Series.of(dict(zip(names, (key,) if len(names) == 1 else key)), hist=h) for key, h in hists.items()]
    else:
        name = spec.label(args) if spec.label is not None else None

        def labels(v: Any) -> dict:
            if not name or v is None:
                return {}
            if isinstance(name, tuple):
                return {n: _label_text(x) for n, x in zip(name, v)}
            return {name: _label_text(v)}
        series = [Series.of(labels(v), hist=h) for v, h in hists.items()]
    return Snapshot.now(spec.name, series, getattr(args, "interval", None), values)


def histograms(spec: ToolSpec, snap: Snapshot) -> list[tuple[Any, Any]]:
    if spec.event is None or spec.kind != "histogram":
        return [(dict(s.labels), s.hist) for s in snap.series]
    make = spec.event.cls.from_dict
    return [(make(dict(s.labels)), s.hist) for s in snap.series]


def _label_text(value: Any) -> str:
    from ..core.convert import address_json
    return address_json(value) if hasattr(value, "packed") else str(value)
