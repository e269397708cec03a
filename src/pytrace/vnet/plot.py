"""The per-segment latency distributions as an SVG picture (no plotting library).

One row per segment, in path order, on a logarithmic time axis: a line from
min to max, a box from p25 to p75, a bar at the median and ticks at p90 and
p99.  The bottleneck's box is drawn in another colour; a segment that
depends on a clock offset the report does not trust (report.py: estimated,
unknown or contradicted) is drawn hatched, its name marked as in the text.

The picture is as wide as what it holds: every text's width is reckoned
from its length (a monospace font's advance is about 0.6 em; CHAR_W is
taken a little wider) and the canvas is sized to the widest line, so no
label or legend is cut at an edge (tests/test_vnet.py measures the rendered
picture in Chromium).
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from .report import MARK_WORDS, MARKS, Report

ROW, TOP, PLOT_W, MARGIN, GAP = 30, 60, 560, 12, 12
FONT = 12
CHAR_W = 7.5          # a 12px monospace character's advance (0.6 em), rounded up
LEGEND = ("line: min..max   box: p25..p75   thick bar: p50   ticks: p90, p99",
          "% : share of the time in the unmarked segments")


def _fmt(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:g} us"
    return f"{ns:g} ns"


def text_width(text: str, size: int = FONT) -> float:
    return len(text) * CHAR_W * size / FONT


def svg(report: Report, title: str = "") -> str:
    segs = report.segments
    names = [f"{s.name} {s.mark}" if s.mark else s.name for s in segs]
    left = MARGIN + max([text_width(n) for n in names] + [text_width("x" * 10)]) + GAP
    b = report.bottleneck
    right_texts = [f"p50 {_fmt(s.stats.p50)}  n={s.stats.count}  "
                   + (f"{s.share * 100:.0f}%" if s.share is not None else "-") for s in segs]
    legend = list(LEGEND)
    if b is not None:
        legend.append("orange: the bottleneck")
    marks = [c for c in MARK_WORDS if any(s.clock == c for s in segs)]
    if marks:
        legend.append("hatched, " + ", ".join(f"{MARKS[c]}: clock offset {MARK_WORDS[c]}" for c in marks)
                      + ": not in %")
    title = title or f"vnet: latency per segment ({report.packets} packets, {report.records} records)"
    right_x = left + PLOT_W + GAP
    width = math.ceil(max([right_x + text_width(t) for t in right_texts] + [right_x]
                          + [MARGIN + text_width(line) for line in legend]
                          + [MARGIN + text_width(title, 15)]) + MARGIN)
    axis_y = TOP + ROW * len(segs) + 8
    legend_y = axis_y + 40
    height = legend_y + 18 * len(legend) + MARGIN

    lo_v = max(100.0, min((s.stats.min for s in segs if s.stats.min > 0), default=1000))
    hi_v = max([s.stats.max for s in segs] + [lo_v * 10])
    lo = 10 ** math.floor(math.log10(lo_v))
    hi = 10 ** math.ceil(math.log10(hi_v))
    span = math.log10(hi) - math.log10(lo)

    def x(ns: float) -> float:
        ns = min(max(ns, lo), hi)
        return left + (math.log10(ns) - math.log10(lo)) / span * PLOT_W

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="{FONT}">',
           '<defs><pattern id="untrusted" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)">'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{MARGIN}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>']
    decade = lo
    while decade <= hi * 1.0001:
        xx = x(decade)
        out.append(f'<line x1="{xx:.1f}" y1="{TOP - 10}" x2="{xx:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        out.append(f'<text x="{xx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#444">{_fmt(decade)}</text>')
        decade *= 10
    for i, (s, name, right) in enumerate(zip(segs, names, right_texts)):
        cy = TOP + ROW * i + ROW / 2
        st = s.stats
        if b is not None and s is b:
            fill, edge = "#f4a261", "#b5541c"
        elif not s.trusted:
            fill, edge = "url(#untrusted)", "#777"
        else:
            fill, edge = "#a8c8e8", "#2f6690"
        out.append(f'<text x="{left - GAP}" y="{cy + 4:.1f}" text-anchor="end">{escape(name)}</text>')
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
        out.append(f'<text x="{right_x:.1f}" y="{cy + 4:.1f}" fill="#333">{escape(right)}</text>')
    for i, line in enumerate(legend):
        out.append(f'<text x="{MARGIN}" y="{legend_y + 18 * i}" fill="#444">{escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
