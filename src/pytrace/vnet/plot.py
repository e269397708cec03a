"""The per-segment latency distributions as an SVG picture (no plotting library).

One row per segment, in path order, on a logarithmic time axis: a line from
min to max, a box from p25 to p75, a bar at the median and ticks at p90 and
p99.  The bottleneck's box is drawn in another colour.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from .report import Report

ROW, TOP, BOTTOM, RIGHT_TEXT, PLOT_W = 30, 60, 70, 190, 560
CHAR_W = 7.2          # width of a 12px monospace character, roughly


def _fmt(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:g} us"
    return f"{ns:g} ns"


def svg(report: Report, title: str = "") -> str:
    segs = report.segments
    left = int(max([len(s.name) for s in segs] + [10]) * CHAR_W) + 20
    width = left + PLOT_W + RIGHT_TEXT
    height = TOP + ROW * max(1, len(segs)) + BOTTOM
    lo_v = max(100.0, min((s.stats.min for s in segs if s.stats.min > 0), default=1000))
    hi_v = max([s.stats.max for s in segs] + [lo_v * 10])
    lo = 10 ** math.floor(math.log10(lo_v))
    hi = 10 ** math.ceil(math.log10(hi_v))
    span = math.log10(hi) - math.log10(lo)

    def x(ns: float) -> float:
        ns = min(max(ns, lo), hi)
        return left + (math.log10(ns) - math.log10(lo)) / span * PLOT_W

    b = report.bottleneck
    title = title or f"vnet: latency per segment ({report.packets} packets, {report.records} records)"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>']
    axis_y = TOP + ROW * len(segs) + 8
    decade = lo
    while decade <= hi * 1.0001:
        xx = x(decade)
        out.append(f'<line x1="{xx:.1f}" y1="{TOP - 10}" x2="{xx:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        out.append(f'<text x="{xx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#444">{_fmt(decade)}</text>')
        decade *= 10
    for i, s in enumerate(segs):
        cy = TOP + ROW * i + ROW / 2
        st = s.stats
        hot = b is not None and s is b
        fill, edge = ("#f4a261", "#b5541c") if hot else ("#a8c8e8", "#2f6690")
        out.append(f'<text x="{left - 10}" y="{cy + 4:.1f}" text-anchor="end">{escape(s.name)}</text>')
        out.append(f'<line x1="{x(st.min):.1f}" y1="{cy:.1f}" x2="{x(st.max):.1f}" y2="{cy:.1f}" '
                   f'stroke="#777"/>')
        x0, x1 = x(st.p25), x(st.p75)
        out.append(f'<rect x="{x0:.1f}" y="{cy - 8:.1f}" width="{max(1.5, x1 - x0):.1f}" height="16" '
                   f'fill="{fill}" stroke="{edge}"/>')
        out.append(f'<line x1="{x(st.p50):.1f}" y1="{cy - 10:.1f}" x2="{x(st.p50):.1f}" y2="{cy + 10:.1f}" '
                   f'stroke="{edge}" stroke-width="3"/>')
        for v in (st.p90, st.p99):
            out.append(f'<line x1="{x(v):.1f}" y1="{cy - 5:.1f}" x2="{x(v):.1f}" y2="{cy + 5:.1f}" '
                       f'stroke="#333"/>')
        out.append(f'<text x="{left + PLOT_W + 12}" y="{cy + 4:.1f}" fill="#333">p50 {_fmt(st.p50)}  '
                   f'n={st.count}  {s.share * 100:.0f}%</text>')
    ly = axis_y + 40
    out.append(f'<text x="{left}" y="{ly}" fill="#444">line: min..max   box: p25..p75   thick bar: p50   '
               f'ticks: p90, p99   % : share of all segment time'
               f'{"   orange: bottleneck" if b is not None else ""}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
