"""Each packet's path from its records, and the latency of every segment of it.

    from pytrace.vnet import report, store
    rep = report.analyze(store.read_sqlite("vnet.db"), points=store.read_points("vnet.db"))
    print(rep.render())
    rep.bottleneck.name, rep.segments[0].stats.p50

Records are grouped by packet ID and ordered by time (each host's clock
corrected by its offset, see skew.py).  A packet that passes a point twice is
two packets that happen to share an ID (a retransmission with the same
headers, say): a repeated point starts a new packet.  A segment is a pair of
consecutive points on a path, directed; its latency is the time between the
two records.  Points are named by label, prefixed with the host when two
hosts use the same label.

Clocks.  A segment within one host is measured on one clock.  A segment
from one host to another depends on the offset between their clocks: one
given with --offset (manual), estimated from packets that went both ways
(skew.py: exact only if the two ways take equally long), or unknown (no
packets went both ways: 0 is assumed).  Such a segment carries that
`clock`, and one that depends on an estimated or assumed offset is marked
and left out of the bottleneck: a skew of milliseconds would otherwise be
the headline.  So is one whose offset the packets contradict: a flow and
its reply flow that both appear to cross the same hosts in the same order
(one of them would be received before it was sent), which a wrong
--offset gives; the report warns about them (`impossible`).  The
end-to-end figure per direction (first to last point of each path) depends
on the offset of its first and last hosts only; the two directions of a
round trip together do not depend on it at all.

The bottleneck is the segment, among those measured on one clock or with a
given offset, holding the largest share of their time (the sum of its
latencies), i.e. where the traced packets spent most of their time.

Egress points (tc egress, net_dev_queue) fire before the device's qdisc:
the time a packet waits in a qdisc (a tbf, a full fq) is counted in the
segment that starts at that egress point, usually the link to the next
host, not before it.  With the points' directions (the store's points
table) the report says so for such segments (`qdisc`); without them (records
read from InfluxDB) it says so in general.

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

SAME_HOST = "same host"
# how much a measurement across hosts can be trusted, best first; a segment
# takes the worst clock of its two ends (the reference host's is exact)
CLOCKS = (SAME_HOST, "manual", "estimated", "unknown", "contradicted")
TRUSTED = (SAME_HOST, "manual")
MARKS = {"estimated": "*", "unknown": "?", "contradicted": "!"}
MARK_WORDS = {"estimated": "estimated", "unknown": "unknown, 0 assumed",
              "contradicted": "contradicted by the packets' order"}


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


class _Span:
    """From point src to point dst, timed across hosts under a clock (CLOCKS)."""
    src: str
    dst: str
    clock: str

    @property
    def name(self) -> str:
        return f"{self.src} -> {self.dst}"

    @property
    def mark(self) -> str:
        return MARKS.get(self.clock, "")


@dataclass
class Segment(_Span):
    src: str
    dst: str
    stats: Stats
    flows: dict[str, Stats] = field(default_factory=dict)
    share: float | None = None  # of the time in every trusted segment (None: not trusted)
    hosts: tuple[str, str] = ("", "")
    clock: str = SAME_HOST      # CLOCKS: what the latency across hosts depends on
    qdisc: str | None = None    # src is an egress point: the device whose qdisc time is in here

    @property
    def trusted(self) -> bool:
        return self.clock in TRUSTED

    def to_dict(self) -> dict[str, Any]:
        return {"segment": self.name, "from": self.src, "to": self.dst, **self.stats.to_dict(),
                "share": None if self.share is None else round(self.share, 4), "hosts": list(self.hosts),
                "clock": self.clock, "qdisc": self.qdisc}


@dataclass
class EndToEnd(_Span):
    """One direction: from the first point of the packets' paths to their last."""
    src: str
    dst: str
    stats: Stats
    hosts: tuple[str, str] = ("", "")
    clock: str = SAME_HOST

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.name, "from": self.src, "to": self.dst, **self.stats.to_dict(),
                "hosts": list(self.hosts), "clock": self.clock}


@dataclass
class Impossible:
    """A flow and its reply flow that appear to cross the same hosts in the
    same order: with these clock offsets one of them is received before it is sent."""
    flow: str
    reverse: str
    hosts: tuple[str, ...]
    packets: int
    reverse_packets: int

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "reverse": self.reverse, "hosts": list(self.hosts), "packets": self.packets,
                "reverse_packets": self.reverse_packets}


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
    end_to_end: list[EndToEnd] = field(default_factory=list)
    impossible: list[Impossible] = field(default_factory=list)
    revisits: int = 0           # packets whose path left a host and came back to it
    directions_known: bool = True   # the points' directions were given (analyze's points=)

    @property
    def bottleneck(self) -> Segment | None:
        """The trusted segment holding most of the trusted segments' time."""
        return max((s for s in self.segments if s.trusted), key=lambda s: s.stats.total, default=None)

    @property
    def excluded(self) -> list[Segment]:
        """Segments left out of the bottleneck: their clock is not trusted."""
        return [s for s in self.segments if not s.trusted]

    def segment(self, src: str, dst: str) -> Segment | None:
        for s in self.segments:
            if s.src == src and s.dst == dst:
                return s
        return None

    def both_ways(self) -> list[tuple[EndToEnd, EndToEnd]]:
        """Pairs of opposite directions across hosts (a -> b and b -> a, a first
        by report order): their sum does not depend on the clock offset."""
        out, seen = [], set()
        for e in self.end_to_end:
            if e.hosts[0] == e.hosts[1] or id(e) in seen:
                continue
            back = next((o for o in self.end_to_end if id(o) not in seen and o is not e
                         and o.hosts == (e.hosts[1], e.hosts[0])), None)
            if back is not None:
                seen.update((id(e), id(back)))
                out.append((e, back))
        return out

    def to_dict(self) -> dict[str, Any]:
        b = self.bottleneck
        return {"records": self.records, "packets": self.packets, "hosts": self.hosts,
                "offsets": [o.to_dict() for o in self.offsets.values()],
                "paths": [{"path": list(p), "count": n} for p, n in self.paths],
                "gaps": [{"point": p, "count": n} for p, n in self.gaps],
                "segments": [s.to_dict() for s in self.segments],
                "bottleneck": b.to_dict() if b else None,
                "excluded": [s.name for s in self.excluded],
                "end_to_end": [e.to_dict() for e in self.end_to_end],
                "both_ways": [{"directions": [a.name, b2.name], "p50_sum_ns": a.stats.p50 + b2.stats.p50}
                              for a, b2 in self.both_ways()],
                "impossible": [i.to_dict() for i in self.impossible],
                "revisits": self.revisits,
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
        for i in self.impossible:
            out.append(f"Impossible order: {i.flow} ({i.packets} packets) and its reply {i.reverse} "
                       f"({i.reverse_packets}) both cross {' then '.join(i.hosts)}: with these clock offsets "
                       "one of them is received before it is sent. An offset between these hosts is wrong; "
                       "their segments are marked ! and left out of the bottleneck.")
        if self.revisits:
            out.append(f"{self.revisits} packet{'s' if self.revisits != 1 else ''} left a host and came back "
                       "to it: a wrong clock offset interleaves two hosts' records so (or a route that does).")
        if not self.segments:
            out.append("No segments: no packet was seen at two points.")
            return "\n".join(out) + "\n"
        out.append("")
        out.extend(_table("SEGMENT", self.segments, lambda s: s.stats, _marked))
        if self.end_to_end:
            out.append("")
            out.extend(_table("END TO END", self.end_to_end, lambda e: e.stats, _marked))
            for a, back in self.both_ways():
                out.append(f"  both ways ({a.name}, and back): the p50s add up to "
                           f"{(a.stats.p50 + back.stats.p50) / 1000:.1f} us, whatever the clock offset")
        out.append("")
        b = self.bottleneck
        if b is None:
            out.append("Most of the latency: no segment is measured on one clock or with a given offset "
                       "(see the marks below).")
        else:
            out.append(f"Most of the latency: {b.name} ({b.share * 100:.1f}% of the time in the unmarked "
                       f"segments; p50 {b.stats.p50 / 1000:.1f} us, max {b.stats.max / 1000:.1f} us over "
                       f"{b.stats.count} packets)")
            if b.clock == "manual":
                given = ", ".join(f"{h} {self.offsets[h].ns / 1000:+.1f} us" for h in b.hosts
                                  if self.offsets[h].source == "manual")
                out.append(f"  from {b.hosts[0]} to {b.hosts[1]}: as measured with the given offset ({given})")
            if b.qdisc:
                out.append(f"  {b.src} is an egress point, before {b.qdisc}'s qdisc: the time packets waited "
                           f"in that qdisc is in this segment")
        marks = [c for c in ("estimated", "unknown", "contradicted") if any(s.clock == c for s in self.segments)]
        if marks:
            words = ", ".join(f"{MARKS[c]} {MARK_WORDS[c]}" for c in marks)
            out.append(f"Marked segments cross hosts whose clock offset is not known ({words}): left out of the "
                       "line above.")
        queued = [s for s in self.segments if s.qdisc]
        if queued:
            where = ", ".join(dict.fromkeys(f"{s.src} ({s.qdisc})" for s in queued))
            out.append(f"Egress points fire before the device's qdisc: a packet's wait in a qdisc is counted in "
                       f"the segment after the egress point ({where}), not before it.")
        elif not self.directions_known:
            out.append("Egress points (tc egress, net_dev_queue) fire before the device's qdisc: a packet's wait "
                       "in a qdisc is counted in the segment after such a point (these records do not say which "
                       "points are egress ones).")
        if per_flow:
            for f in self.flows:
                segs = [s for s in self.segments if f in s.flows]
                out.append("")
                out.append(f"Flow {f}:")
                out.extend("  " + line for line in _table("SEGMENT", segs, lambda s: s.flows[f], _marked))
        return "\n".join(out) + "\n"


def _marked(s: Segment | EndToEnd) -> str:
    return f"{s.name} {s.mark}" if s.mark else s.name


def _table(title: str, items: list, stats_of, name_of) -> list[str]:
    w = max(22, *(len(name_of(s)) for s in items))
    lines = [f"{title + ' (usecs)':<{w}} {'COUNT':>8} {'MIN':>10} {'P50':>10} {'P90':>10} {'P99':>10} {'MAX':>10}"]
    for s in items:
        st = stats_of(s)
        lines.append(f"{name_of(s):<{w}} {st.count:>8} " +
                     " ".join(f"{v / 1000:>10.1f}" for v in (st.min, st.p50, st.p90, st.p99, st.max)))
    return lines


def _worst(*clocks: str) -> str:
    return max(clocks, key=CLOCKS.index)


def analyze(rows: Iterable, reference: str | None = None, manual: dict[str, int] | None = None,
            points: Iterable[dict] | None = None) -> Report:
    """Rows (store.Row or anything with the same attributes) -> Report.
    points: the points' descriptions (store.read_points: host, label,
    direction, device), for what the report says about egress points."""
    rows = list(rows)
    offs = skew.offsets(rows, reference, manual)
    shift = {h: o.ns for h, o in offs.items()}
    hosts = sorted({r.host for r in rows})
    # a label used by two hosts is qualified with its host
    owners: dict[str, set[str]] = {}
    for r in rows:
        owners.setdefault(r.point, set()).add(r.host)
    shared = {lbl for lbl, hs in owners.items() if len(hs) > 1}
    host_of: dict[str, str] = {}
    qdisc_of: dict[str, str] = {}       # egress point name -> its device
    for p in points or ():
        name = f"{p['host']}:{p['label']}" if p["label"] in shared else p["label"]
        if p.get("direction") == "egress":
            qdisc_of[name] = p.get("device") or "its device"

    by_id: dict[int, list[tuple[int, str, Any]]] = {}
    for r in rows:
        name = f"{r.host}:{r.point}" if r.point in shared else r.point
        host_of[name] = r.host
        by_id.setdefault(r.pkt_id, []).append((r.ts_ns - shift.get(r.host, 0), name, r))

    acc = _Acc(host_of)
    for recs in by_id.values():
        recs.sort(key=lambda x: x[0])
        start = 0
        seen: set[str] = set()
        for i, (_, name, _) in enumerate(recs):
            if name in seen:
                acc.packet(recs[start:i])
                start, seen = i, set()
            seen.add(name)
        acc.packet(recs[start:])

    impossible, contradicted = _impossible(acc.orders)

    def clock(a: str, b: str) -> str:
        if a == b:
            return SAME_HOST
        if frozenset((a, b)) in contradicted:
            return "contradicted"
        return _worst(*(offs[h].source for h in (a, b) if offs[h].source != "reference"))

    paths = sorted(acc.path_count.items(), key=lambda kv: (-kv[1], kv[0]))
    order: list[tuple[str, str]] = []
    known: set[tuple[str, str]] = set()
    for p, _ in paths:
        for key in zip(p, p[1:]):
            if key not in known:
                known.add(key)
                order.append(key)
    segments = []
    for a, b in order:
        hs = (host_of[a], host_of[b])
        segments.append(Segment(a, b, Stats.of(acc.seg_values[(a, b)]),
                                {f: Stats.of(v) for f, v in acc.flow_values[(a, b)].items()},
                                hosts=hs, clock=clock(*hs), qdisc=qdisc_of.get(a)))
    total = sum(s.stats.total for s in segments if s.trusted)
    for s in segments:
        if s.trusted:
            s.share = s.stats.total / total if total > 0 else 0.0
    ends = []
    for (a, b), values in sorted(acc.ends.items(), key=lambda kv: _first_seen(kv[0], [p for p, _ in paths])):
        hs = (host_of[a], host_of[b])
        ends.append(EndToEnd(a, b, Stats.of(values), hs, clock(*hs)))
    return Report(len(rows), acc.packets, hosts, offs, paths, segments, list(acc.flows_seen),
                  _gaps(acc.flows_seen, [p for p, _ in paths]), ends, impossible, acc.revisits,
                  directions_known=points is not None)


def _first_seen(ends: tuple[str, str], paths: list[tuple[str, ...]]) -> int:
    """Where a direction's path first appears among the paths (most common first)."""
    for i, p in enumerate(paths):
        if (p[0], p[-1]) == ends:
            return i
    return len(paths)


class _Acc:
    """What analyze() gathers from the packets, one at a time."""

    def __init__(self, host_of: dict[str, str]):
        self.host_of = host_of
        self.path_count: dict[tuple[str, ...], int] = {}
        self.seg_values: dict[tuple[str, str], list[int]] = {}
        self.flow_values: dict[tuple[str, str], dict[str, list[int]]] = {}
        self.flows_seen: dict[str, dict[tuple[str, ...], int]] = {}     # flow -> its paths -> packets
        self.ends: dict[tuple[str, str], list[int]] = {}                # (first, last point) -> latencies
        self.orders: dict[tuple, dict[tuple[str, ...], int]] = {}       # flow key -> host orders -> packets
        self.packets = 0
        self.revisits = 0

    def packet(self, recs: list) -> None:
        """One packet: its path, the latency of each of its segments, end to end."""
        if not recs:
            return
        self.packets += 1
        path = tuple(name for _, name, _ in recs)
        self.path_count[path] = self.path_count.get(path, 0) + 1
        r = recs[0][2]
        flow = flow_text(r.proto, str(r.saddr), r.sport, str(r.daddr), r.dport)
        per_path = self.flows_seen.setdefault(flow, {})
        per_path[path] = per_path.get(path, 0) + 1
        for (t0, a, _), (t1, b, _) in zip(recs, recs[1:]):
            key = (a, b)
            self.seg_values.setdefault(key, []).append(t1 - t0)
            self.flow_values.setdefault(key, {}).setdefault(flow, []).append(t1 - t0)
        if len(recs) > 1:
            self.ends.setdefault((path[0], path[-1]), []).append(recs[-1][0] - recs[0][0])
        blocks: list[str] = []
        for name in path:
            h = self.host_of[name]
            if not blocks or blocks[-1] != h:
                blocks.append(h)
        if len(blocks) != len(set(blocks)):
            self.revisits += 1
        key = (r.proto, str(r.saddr), r.sport, str(r.daddr), r.dport)
        per = self.orders.setdefault(key, {})
        per[tuple(blocks)] = per.get(tuple(blocks), 0) + 1


def _impossible(orders: dict[tuple, dict[tuple[str, ...], int]]) -> tuple[list[Impossible], set[frozenset]]:
    """Flows whose reply flow crosses the same hosts in the same order (each
    flow by its most common order of hosts), and the pairs of hosts concerned."""
    out: list[Impossible] = []
    pairs: set[frozenset] = set()
    for key, per in orders.items():
        rkey = (key[0], key[3], key[4], key[1], key[2])
        if rkey not in orders or not key < rkey:
            continue
        mine = max(per, key=lambda o: (per[o], o))
        theirs_all = orders[rkey]
        theirs = max(theirs_all, key=lambda o: (theirs_all[o], o))
        if len(mine) > 1 and mine == theirs:
            out.append(Impossible(flow_text(*key), flow_text(*rkey), mine, per[mine], theirs_all[theirs]))
            pairs.update(frozenset(p) for p in zip(mine, mine[1:]))
    return out, pairs


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
