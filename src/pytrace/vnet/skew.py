"""Clock offsets between hosts, estimated from the packets themselves (as NTP does).

Take two hosts A and B and a packet seen on both.  If it went A -> B, the
gap from its last record on A to its first on B is  fwd = d + theta,  where d
is the one-way delay between those points and theta = clock(B) - clock(A).
A packet going B -> A gives  rev = d' - theta.  With a symmetric path (d = d')
theta = (fwd - rev) / 2  and  d = (fwd + rev) / 2.  As NTP does, each direction
uses its smallest gap: the least queued packet is the best estimate of d.

Which way a packet went is not known before the clocks are: but every
packet of one flow goes the same way, and its reply flow the other.  For a
flow F and its reverse F', either F goes A -> B (theta from fwd(F), rev(F'))
or the other way round (from fwd(F'), rev(F)); the wrong guess gives a
negative delay, since it measures from a packet's last record on one host
back to its first record on the other.  Each (F, F') pair gives one
estimate; the median over pairs is the pair of hosts' theta.

With more than two hosts the offsets follow the pairs from the reference
host outward (breadth first).  A manual offset overrides the estimate of its
host and anchors its neighbours; a host no packet crossed to and from keeps
offset 0 and is reported as unknown.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable

from ..core.errors import UsageError, shown


@dataclass(frozen=True)
class Offset:
    host: str
    ns: int          # this host's clock minus the reference host's clock
    source: str      # reference | estimated | manual | unknown
    detail: str = ""

    def to_dict(self) -> dict:
        return {"host": self.host, "offset_ns": self.ns, "source": self.source, "detail": self.detail}


@dataclass(frozen=True)
class PairEstimate:
    a: str
    b: str
    theta_ns: int     # clock(b) - clock(a)
    delay_ns: int     # smallest one-way delay between the two hosts' points
    flow_pairs: int
    packets: int


def pair_estimates(rows: Iterable) -> list[PairEstimate]:
    """theta for every pair of hosts that exchanged packets both ways."""
    per: dict[int, dict[str, list]] = {}      # pkt_id -> host -> [first, last, points]
    flows: dict[int, tuple] = {}
    ambiguous: set[int] = set()
    for r in rows:
        hosts = per.get(r.pkt_id)
        if hosts is None:
            hosts = per[r.pkt_id] = {}
            flows[r.pkt_id] = (r.proto, r.saddr, r.sport, r.daddr, r.dport)
        e = hosts.get(r.host)
        if e is None:
            hosts[r.host] = [r.ts_ns, r.ts_ns, {r.point}]
            continue
        if r.point in e[2]:          # two packets share this ID: skip it
            ambiguous.add(r.pkt_id)
        e[2].add(r.point)
        if r.ts_ns < e[0]:
            e[0] = r.ts_ns
        if r.ts_ns > e[1]:
            e[1] = r.ts_ns
    gaps: dict[tuple[str, str], dict[tuple, list]] = {}
    for pid, hosts in per.items():
        if len(hosts) < 2 or pid in ambiguous:
            continue
        flow = flows[pid]
        names = sorted(hosts)
        for i, a in enumerate(names):
            fa, la, _ = hosts[a]
            for b in names[i + 1:]:
                fb, lb, _ = hosts[b]
                g = gaps.setdefault((a, b), {}).setdefault(flow, [None, None, 0])
                fwd, rev = fb - la, fa - lb
                g[0] = fwd if g[0] is None or fwd < g[0] else g[0]
                g[1] = rev if g[1] is None or rev < g[1] else g[1]
                g[2] += 1
    out = []
    for (a, b), fl in sorted(gaps.items()):
        thetas, delays, packets = [], [], 0
        for f, (fwd, rev, n) in fl.items():
            rf = (f[0], f[3], f[4], f[1], f[2])
            if rf not in fl or not f < rf:
                continue
            fwd2, rev2, n2 = fl[rf]
            d1, t1 = (fwd + rev2) / 2, (fwd - rev2) / 2     # f went a -> b
            d2, t2 = (fwd2 + rev) / 2, (fwd2 - rev) / 2     # rf went a -> b
            theta, delay = (t1, d1) if d1 >= d2 else (t2, d2)
            thetas.append(theta)
            delays.append(delay)
            packets += n + n2
        if thetas:
            out.append(PairEstimate(a, b, round(statistics.median(thetas)), round(statistics.median(delays)),
                                    len(thetas), packets))
    return out


def offsets(rows: Iterable, reference: str | None = None,
            manual: dict[str, int] | None = None) -> dict[str, Offset]:
    """Each host's offset from the reference (default: the first host by name)."""
    rows = list(rows)
    hosts = sorted({r.host for r in rows} | set(manual or {}))
    if not hosts:
        return {}
    ref = reference or hosts[0]
    if reference is not None and reference not in hosts:
        raise UsageError(f"--reference {shown(reference)}: no records from that host (hosts: {', '.join(hosts)})")
    manual = dict(manual or {})
    if manual.get(ref, 0) != 0:
        raise UsageError(f"host {ref} is the reference: its offset is 0 by definition")
    result: dict[str, Offset] = {ref: Offset(ref, 0, "reference")}
    for h, v in manual.items():
        if h != ref:
            result[h] = Offset(h, v, "manual", "given on the command line")
    if len(hosts) == 1:
        return result
    adj: dict[str, list[tuple[str, int, PairEstimate]]] = {}
    for e in pair_estimates(rows):
        adj.setdefault(e.a, []).append((e.b, e.theta_ns, e))
        adj.setdefault(e.b, []).append((e.a, -e.theta_ns, e))
    queue = [ref] + [h for h in manual if h != ref]
    while queue:
        h = queue.pop(0)
        for nb, theta, e in adj.get(h, ()):
            if nb in result:
                continue
            result[nb] = Offset(nb, result[h].ns + theta, "estimated",
                                f"from {e.packets} packets in {e.flow_pairs} flow pair(s) exchanged with {h}; "
                                f"smallest one-way delay {e.delay_ns / 1000:.1f} us")
            queue.append(nb)
    for h in hosts:
        if h not in result:
            result[h] = Offset(h, 0, "unknown", "no packets went both ways between it and a host with a "
                                                "known offset; 0 assumed")
    return result
