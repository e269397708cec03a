"""tcpwin: TCP congestion window, ssthresh, send window and send buffer per
segment received, as CSV rows ready to plot.

Library:

    from pytrace.tools.tcpwin import TcpWin
    with TcpWin(lports=[8080]) as t:
        for w in t.events(duration=10):            # TcpWindow
            print(w.skaddr, w.snd_cwnd, w.ssthresh, w.snd_wnd, w.sndbuf, w.wmem_queued)

One row per segment an established connection receives (the top of
tcp_rcv_established, where the book's tcpwin.bt looks), with the socket's
state at that moment: snd_cwnd and ssthresh in segments (ssthresh
2147483647: still in slow start), snd_wnd (what the peer advertised) and the
send buffer's size and queued bytes.
"""

from __future__ import annotations

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..spec import EVENTS, EventType, Option, ToolSpec, family, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HEADER = "event,sock,time_us,snd_cwnd,snd_ssthresh,sk_sndbuf,sk_wmem_queued,snd_wnd,srtt_us,laddr,lport,raddr,rport"

# struct tcpwin_event of src/bpf/tcpwin.bpf.c; build.py generates TcpWindow
TCPWIN_EVENT = EventType("TcpWindow", struct="tcpwin_event", doc="A socket's windows when it received a segment.",
                         fields="""
    ts_ns                   # CLOCK_MONOTONIC of the segment
    skaddr: hex             # the socket's kernel address
    snd_cwnd                # segments
    ssthresh                # segments; 2147483647: still in slow start
    snd_wnd                 # bytes the peer lets us send
    srtt_us
    sndbuf                  # sk_sndbuf, bytes (-1: unknown, the classic tracepoint without skaddr)
    wmem_queued             # sk_wmem_queued, bytes (-1: unknown)
    family: family
    laddr: address
    lport
    raddr: address
    rport
    -pad
    cgroup_id                   # the socket's cgroup id (0 unless labels=True)
    netns                       # the socket's network namespace inode (0 unless labels=True)
""")


class TcpWin(EventTracer):
    OBJECT = "tcpwin"
    SCOPE = SOCKET_SCOPE | LABELS
    EVENT_TYPE = TCPWIN_EVENT
    VARIANTS = (
        Variant("fentry", ("tcpwin_fentry",)),
        Variant("kprobe", ("tcpwin_kprobe",)),
        Variant("tp_btf", ("tcpwin_tp_btf",)),
        Variant("tracepoint", ("tcpwin_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, lports: list[int] | None = None, rports: list[int] | None = None,
                 **kw: Any):
        super().__init__(**kw)
        self.family, self.lports, self.rports = family, lports or [], rports or []

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family, "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}


__getattr__ = public_classes(__name__, TcpWindow=TCPWIN_EVENT)


# -- the text: the book's CSV, then snd_wnd, srtt and the connection -------------------------

_CSV = ("skaddr", "ts_ns", "snd_cwnd", "ssthresh", "sndbuf", "wmem_queued", "snd_wnd", "srtt_us",
        "family", "laddr", "lport", "raddr", "rport")


def csv_text(source: Any, args: Any, out: Any):
    """HEADER, then a CSV row per record: time_us counts from the tool's start."""
    from ..cli.cliutil import Clock
    from ..core.rows import compile_rows, field_variable
    out.write(HEADER + "\n")
    source.project(set(_CSV))
    v = {n: field_variable(n) for n in _CSV}
    addr = convert.get("address").text[1]
    expr = (f"_fmt % ({v['skaddr']}, max(0, {v['ts_ns']} - _start) // 1000, {v['snd_cwnd']}, {v['ssthresh']}, "
            f"{v['sndbuf']}, {v['wmem_queued']}, {v['snd_wnd']}, {v['srtt_us']}, "
            f"{addr.format(v['laddr'], v['family'])}, {v['lport']}, {addr.format(v['raddr'], v['family'])}, "
            f"{v['rport']})")
    env = {**convert.text_env({}), "_fmt": b"rcv,0x%x,%d,%d,%d,%d,%d,%d,%d,%s,%d,%s,%d\n",
           "_start": Clock().start_ns}
    rows = compile_rows(source.raw_fields, expr, env)

    def render(batch: list[tuple]) -> bytes:
        return b"".join(rows(batch))
    return render


SPEC = ToolSpec(
    "tcpwin", "TCP cwnd, ssthresh, send window and buffer per segment, as CSV to plot", TcpWin, EVENTS,
    description=("TCP send congestion window, ssthresh, send window and send buffer for every segment "
                 "received on established connections, as CSV (the book's tcpwin.bt columns, then "
                 f"snd_wnd, srtt and the connection). {LATENCY_NOTE}"),
    event=TCPWIN_EVENT,
    options=(
        Option("-L", "--lport", type=ports("-L"), metavar="PORTS", kw="lports",
               help="only these local ports (comma list)"),
        Option("-D", "--rport", type=ports("-D"), metavar="PORTS", kw="rports",
               help="only these remote ports (comma list)"),
        family(),
    ),
    text=csv_text,
    examples=(
        ("pytrace tcpwin", "a CSV row per segment received on any TCP connection"),
        ("pytrace tcpwin -L 8080", "only connections with local port 8080"),
        ("pytrace tcpwin -D 443 -4", "only IPv4 connections to port 443"),
        ("pytrace tcpwin --json", "one JSON object per segment"),
    ),
)
