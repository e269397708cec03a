"""tcpsynbl: histograms of TCP SYN backlog (accept queue) length, per backlog limit.

Library:

    from pytrace.tools.tcpsynbl import TcpSynBl
    with TcpSynBl(lports=[8080]) as t:
        time.sleep(10)
        for limit, hist in t.histograms().items():     # {backlog_max: Log2Histogram}
            print("backlog_max =", limit)
            print(hist.render())

Each completed handshake adds the listener's accept-queue length to the
histogram of its limit (listen()'s backlog, capped by net.core.somaxconn).
On the fentry/kprobe variants this is the length before the connection is
queued, as in libbpf-tools and BCC; on tp_btf/raw_tp (sk_data_ready, for
kernels without kprobes) it is the length after, i.e. one more: the
histogram's key says which (after_enqueue).
"""

from __future__ import annotations

from ..cli.aggregate import timestamp_line
from ..cli.cliutil import ports
from ..core.loader import Variant
from ..core.socklayer import keyed_histograms
from ..core.tracer import SOCKET_SCOPE, Tracer
from ..spec import HISTOGRAM, EventType, Option, ToolSpec, family, interval_positionals, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AFTER_ENQUEUE = ("tp_btf", "raw_tp")    # variants that sample after the connection is queued

# The hists map's key (struct tcpsynbl_key)
TCPSYNBL_KEY = EventType("SynBacklogKey", struct="tcpsynbl_key", doc="The listeners a histogram is for.", fields="""
    backlog_max                 # the backlog limit (listen()'s, capped by net.core.somaxconn)
    after_enqueue               # 1: sampled after the connection was queued (every value +1)
    -pad
""")


class TcpSynBl(Tracer):
    OBJECT = "tcpsynbl"
    SCOPE = SOCKET_SCOPE
    VARIANTS = (
        Variant("fentry", ("tcpsynbl_fentry_v4", "tcpsynbl_fentry_v6"), needs="trampolines for tcp_v*_syn_recv_sock"),
        Variant("kprobe", ("tcpsynbl_kprobe_v4", "tcpsynbl_kprobe_v6")),
        Variant("tp_btf", ("tcpsynbl_tp_btf",), note="backlog +1", needs="tracepoint sk_data_ready"),
        Variant("raw_tp", ("tcpsynbl_raw_tp",), note="backlog +1", needs="tracepoint sk_data_ready"),
    )

    def __init__(self, *, family: int = 0, lports: list[int] | None = None, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.family, self.lports = family, lports or []

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family, "lports": self.lports, "n_lports": len(self.lports)}

    def setup(self) -> None:
        self._hists = self.obj.map("hists")

    @property
    def after_enqueue(self) -> bool:
        """True when values include the connection just queued (+1 versus the original)."""
        return self.variant is not None and self.variant.hook in AFTER_ENQUEUE

    def keyed(self, clear: bool = False) -> dict:
        """{SynBacklogKey: histogram of the backlog length}, by limit."""
        hists = keyed_histograms(self._hists, "backlog", TCPSYNBL_KEY.cls, clear)
        return dict(sorted(hists.items(), key=lambda kh: kh[0].backlog_max))

    def histograms(self, clear: bool = False) -> dict:
        """{backlog limit: histogram of the backlog length}; clear=True resets them."""
        return {k.backlog_max: h for k, h in self.keyed(clear).items()}


__getattr__ = public_classes(__name__, SynBacklogKey=TCPSYNBL_KEY)


def text(snap: Any, args: Any) -> str:
    parts = [timestamp_line(snap, args)]
    for k, h in SPEC.histograms(snap):
        note = " (sampled after enqueue: +1)" if k.after_enqueue else ""
        parts.append(f"backlog_max = {k.backlog_max}{note}\n{h.render()}\n")
    return "".join(parts)


SPEC = ToolSpec(
    "tcpsynbl", "histograms of TCP SYN backlog length, per backlog limit", TcpSynBl, HISTOGRAM,
    description=(
        "Summarize TCP SYN backlog (accept queue) length as histograms, one per backlog limit. "
        "Where fentry/kprobe are unavailable (tp_btf/raw_tp sk_data_ready), the length is "
        "sampled after the new connection was queued: every value is +1 versus BCC's "
        "tcpsynbl, and connections refused because the queue was full are not seen (see "
        "pytrace nstat TcpExtListenOverflows)."),
    event=TCPSYNBL_KEY,
    options=(
        family("listeners"),
        Option("-L", "--lport", type=ports("-L"), metavar="PORTS", kw="lports",
               help="only these listening ports (comma list)"),
        timestamp(),
        *interval_positionals(),
    ),
    read=lambda tracer, args: tracer.keyed(clear=bool(args.interval)),
    text=text,
    intro="Tracing SYN backlog size. Ctrl-C to end.\n",
    examples=(
        ("pytrace tcpsynbl", "a histogram per backlog limit, at Ctrl-C"),
        ("pytrace tcpsynbl -4", "IPv4 listeners only"),
        ("pytrace tcpsynbl -L 80,443 1 10", "listeners on port 80 or 443, every second, 10 times"),
        ("pytrace tcpsynbl --json", "one JSON object per backlog limit"),
    ),
)
