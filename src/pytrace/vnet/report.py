"""Each packet's path from its records, and the latency of every segment of it.

    from pytrace.vnet import report, store
    rep = report.analyze(store.read_sqlite("vnet.db"))
    print(rep.render())
    rep.bottleneck.name, rep.segments[0].stats.p50

Records are grouped by packet ID and ordered by time (each host's clock
corrected by its offset, see skew.py).  A packet that passes a point twice is
two packets that happen to share an ID (a retransmission with the same
headers, say): a repeated point starts a new packet.  A segment is a pair of
consecutive points on a path, directed; its latency is the time between the
two records.  Points are named by label, prefixed with the host when two
hosts use the same label.

The bottleneck is the segment holding the largest share of all the time
spent in segments (the sum of its latencies), i.e. where the traced packets
spent most of their time.

Gaps: a packet missing at a point that the other packets of its flow pass
(its path is part of its flow's usual path, with points left out) is
counted against each point it missed, so no record that should be there is
missing silently.  A gap is a packet lost on the way, or a hook that did
not see it: device tracepoints do not fire while tracing is blind on a CPU
(seen on VMs: perf saw nothing there either), when tc and XDP hooks did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import skew
from .tracer import flow_text


@dataclass(frozen=True)
class Stats:
    count: int
    min: int
    p25: int
    p50: int
    p75: int
    p90: int
    p99: int
    max: int
    mean: float
    total: int

    @classmethod
    def of(cls, values: list[int]) -> "Stats":
        v = sorted(values)
        n = len(v)

        def pct(q: float) -> int:       # nearest rank
            return v[max(0, min(n - 1, math.ceil(q * n) - 1))]
        total = sum(v)
        return cls(n, v[0], pct(0.25), pct(0.50), pct(0.75), pct(0.90), pct(0.99), v[-1], total / n, total)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "min_ns": self.min, "p50_ns": self.p50, "p90_ns": self.p90,
                "p99_ns": self.p99, "max_ns": self.max, "mean_ns": round(self.mean), "total_ns": self.total,
                "p25_ns": self.p25, "p75_ns": self.p75}


@dataclass
class Segment:
    src: str
    dst: str
    stats: Stats
    flows: dict[str, Stats] = field(default_factory=dict)
    share: float = 0.0          # of the total time in all segments

    @property
    def name(self) -> str:
        return f"{self.src} -> {self.dst}"

    def to_dict(self) -> dict[str, Any]:
        return {"segment": self.name, "from": self.src, "to": self.dst, **self.stats.to_dict(),
                "share": round(self.share, 4)}


@dataclass
class Report:
    records: int
    packets: int
    hosts: list[str]
    offsets: dict[str, skew.Offset]
    paths: list[tuple[tuple[str, ...], int]]
    segments: list[Segment]
    flows: list[str]
    gaps: list[tuple[str, int]] = field(default_factory=list)   # (point, packets not seen there)

    @property
    def bottleneck(self) -> Segment | None:
        return max(self.segments, key=lambda s: s.stats.total, default=None)

    def segment(self, src: str, dst: str) -> Segment | None:
        for s in self.segments:
            if s.src == src and s.dst == dst:
                return s
        return None

    def to_dict(self) -> dict[str, Any]:
        b = self.bottleneck
        return {"records": self.records, "packets": self.packets, "hosts": self.hosts,
                "offsets": [o.to_dict() for o in self.offsets.values()],
                "paths": [{"path": list(p), "count": n} for p, n in self.paths],
                "gaps": [{"point": p, "count": n} for p, n in self.gaps],
                "segments": [s.to_dict() for s in self.segments],
                "bottleneck": b.to_dict() if b else None,
                "flows": [{"flow": f, "segments": [{"segment": s.name, **s.flows[f].to_dict()}
                                                   for s in self.segments if f in s.flows]}
                          for f in self.flows]}

    # -- text ---------------------------------------------------------------------
    def render(self, per_flow: bool = False) -> str:
        out = [f"{self.records} records, {self.packets} packets, "
               f"{len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''} ({', '.join(self.hosts)})"]
        if len(self.offsets) > 1:
            ref = next((o.host for o in self.offsets.values() if o.source == "reference"), "?")
            out.append(f"Clock offsets (relative to {ref}):")
            for o in self.offsets.values():
                detail = f"  {o.detail}" if o.detail else ""
                out.append(f"  {o.host:<16} {o.ns / 1000:+12.1f} us  {o.source}{detail}")
        else:
            out.append("Clock offsets: one host, none needed")
        out.append("Paths:")
        for p, n in self.paths[:20]:
            out.append(f"  {n:>7}  {' > '.join(p)}")
        if len(self.paths) > 20:
            out.append(f"  ... {len(self.paths) - 20} more")
        if self.gaps:
            missed = ", ".join(f"{p} {n} packet{'s' if n != 1 else ''}" for p, n in self.gaps)
            out.append(f"Not seen where the rest of their flow was: {missed} (lost on the way, or a hook "
                       "that did not see them)")
        if not self.segments:
            out.append("No segments: no packet was seen at two points.")
            return "\n".join(out) + "\n"
        out.append("")
        out.extend(_table(self.segments, lambda s: s.stats, lambda s: s.name))
        b = self.bottleneck
        out.append("")
        out.append(f"Most of the latency: {b.name} ({b.share * 100:.1f}% of the time in segments; "
                   f"p50 {b.stats.p50 / 1000:.1f} us, max {b.stats.max / 1000:.1f} us over {b.stats.count} packets)")
        if per_flow:
            for f in self.flows:
                segs = [s for s in self.segments if f in s.flows]
                out.append("")
                out.append(f"Flow {f}:")
                out.extend("  " + line for line in _table(segs, lambda s: s.flows[f], lambda s: s.name))
        return "\n".join(out) + "\n"


def _table(segments: list[Segment], stats_of, name_of) -> list[str]:
    w = max(22, *(len(name_of(s)) for s in segments))
    lines = [f"{'SEGMENT (usecs)':<{w}} {'COUNT':>8} {'MIN':>10} {'P50':>10} {'P90':>10} {'P99':>10} {'MAX':>10}"]
    for s in segments:
        st = stats_of(s)
        lines.append(f"{name_of(s):<{w}} {st.count:>8} " +
                     " ".join(f"{v / 1000:>10.1f}" for v in (st.min, st.p50, st.p90, st.p99, st.max)))
    return lines


def analyze(rows: Iterable, reference: str | None = None, manual: dict[str, int] | None = None) -> Report:
    """Rows (store.Row or anything with the same attributes) -> Report."""
    rows = list(rows)
    offs = skew.offsets(rows, reference, manual)
    shift = {h: o.ns for h, o in offs.items()}
    hosts = sorted({r.host for r in rows})
    # a label used by two hosts is qualified with its host
    owners: dict[str, set[str]] = {}
    for r in rows:
        owners.setdefault(r.point, set()).add(r.host)
    shared = {lbl for lbl, hs in owners.items() if len(hs) > 1}

    by_id: dict[int, list[tuple[int, str, Any]]] = {}
    for r in rows:
        name = f"{r.host}:{r.point}" if r.point in shared else r.point
        by_id.setdefault(r.pkt_id, []).append((r.ts_ns - shift.get(r.host, 0), name, r))

    path_count: dict[tuple[str, ...], int] = {}
    seg_values: dict[tuple[str, str], list[int]] = {}
    flow_values: dict[tuple[str, str], dict[str, list[int]]] = {}
    flows_seen: dict[str, dict[tuple[str, ...], int]] = {}     # flow -> its paths -> packets
    packets = 0
    for recs in by_id.values():
        recs.sort(key=lambda x: x[0])
        start = 0
        seen: set[str] = set()
        for i, (_, name, _) in enumerate(recs):
            if name in seen:
                packets += _account(recs[start:i], path_count, seg_values, flow_values, flows_seen)
                start, seen = i, set()
            seen.add(name)
        packets += _account(recs[start:], path_count, seg_values, flow_values, flows_seen)

    paths = sorted(path_count.items(), key=lambda kv: (-kv[1], kv[0]))
    order: list[tuple[str, str]] = []
    known: set[tuple[str, str]] = set()
    for p, _ in paths:
        for key in zip(p, p[1:]):
            if key not in known:
                known.add(key)
                order.append(key)
    segments = [Segment(a, b, Stats.of(seg_values[(a, b)]),
                        {f: Stats.of(v) for f, v in flow_values[(a, b)].items()}) for a, b in order]
    total = sum(s.stats.total for s in segments)
    for s in segments:
        s.share = s.stats.total / total if total > 0 else 0.0
    return Report(len(rows), packets, hosts, offs, paths, segments, list(flows_seen),
                  _gaps(flows_seen, [p for p, _ in paths]))


def _gaps(flows: dict[str, dict[tuple[str, ...], int]], order: list[tuple[str, ...]]) -> list[tuple[str, int]]:
    """Per point, the packets that missed it while the usual path of their
    flow (its most common one, the longest of equals) passes it."""
    missed: dict[str, int] = {}
    for paths in flows.values():
        usual = max(paths, key=lambda p: (paths[p], len(p)))
        for path, n in paths.items():
            if len(path) < len(usual) and _within(path, usual):
                for point in usual:
                    if point not in path:
                        missed[point] = missed.get(point, 0) + n
    # in the order the points appear on the paths
    rank = {point: i for i, point in enumerate(dict.fromkeys(pt for p in order for pt in p))}
    return sorted(missed.items(), key=lambda kv: rank.get(kv[0], len(rank)))


def _within(part: tuple[str, ...], whole: tuple[str, ...]) -> bool:
    """Is part whole with some points left out (the rest in the same order)?"""
    rest = iter(whole)
    return all(point in rest for point in part)


def _account(recs: list, path_count: dict, seg_values: dict, flow_values: dict, flows_seen: dict) -> int:
    """One packet: its path, and the latency of each of its segments."""
    if not recs:
        return 0
    path = tuple(name for _, name, _ in recs)
    path_count[path] = path_count.get(path, 0) + 1
    r = recs[0][2]
    flow = flow_text(r.proto, str(r.saddr), r.sport, str(r.daddr), r.dport)
    per_path = flows_seen.setdefault(flow, {})
    per_path[path] = per_path.get(path, 0) + 1
    for (t0, a, _), (t1, b, _) in zip(recs, recs[1:]):
        key = (a, b)
        seg_values.setdefault(key, []).append(t1 - t0)
        flow_values.setdefault(key, {}).setdefault(flow, []).append(t1 - t0)
    return 1
