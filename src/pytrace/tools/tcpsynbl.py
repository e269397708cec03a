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
kernels without kprobes) it is the length after, i.e. one more.
"""

from __future__ import annotations

from typing import Any

from ..core.aggregate import add_interval_args, check_interval_args, json_lines, print_loop, timestamp_line
from ..core.cliutil import add_common, add_container_args, add_family_args, container_filters, family_of, ports
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.socklayer import histograms
from ..core.tracer import SOCKET_SCOPE, Tracer
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpsynbl"
SUMMARY = "histograms of TCP SYN backlog length, per backlog limit"

AFTER_ENQUEUE = ("tp_btf", "raw_tp")    # variants that sample after the connection is queued


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

    def histograms(self, clear: bool = False) -> dict[int, Log2Histogram]:
        """{backlog limit: histogram of the backlog length}; clear=True resets them."""
        return histograms(self._hists, "backlog", lambda k: k["backlog_max"], clear)

    def snapshot(self, clear: bool = False, interval: float | None = None) -> Snapshot:
        return Snapshot.now(NAME, [Series.of({"backlog_max": limit}, {"after_enqueue": int(self.after_enqueue)}, h)
                                   for limit, h in sorted(self.histograms(clear).items())], interval)


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Summarize TCP SYN backlog (accept queue) length as histograms, one per backlog limit. "
        "Where fentry/kprobe are unavailable (tp_btf/raw_tp sk_data_ready), the length is "
        "sampled after the new connection was queued: every value is +1 versus libbpf-tools' "
        "tcpsynbl, and connections refused because the queue was full are not seen (see "
        "pytrace nstat TcpExtListenOverflows).")
    add_family_args(p, "listeners")
    p.add_argument("-L", "--lport", type=ports("-L"), metavar="PORTS", help="only these listening ports (comma list)")
    add_interval_args(p, positional=True)
    add_container_args(p, TcpSynBl)
    add_common(p, [v.hook for v in TcpSynBl.VARIANTS])


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing SYN backlog size. Ctrl-C to end.\n"


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    if args.json:
        return json_lines(snap)
    parts = [timestamp_line(snap, args)]
    for s in snap.series:
        note = " (sampled after enqueue: +1)" if dict(s.values).get("after_enqueue") else ""
        parts.append(f"backlog_max = {s.label('backlog_max')}{note}\n{s.hist.render()}\n")
    return "".join(parts)


def run(args: argparse.Namespace) -> int:
    check_interval_args(args)
    tracer = TcpSynBl(family=family_of(args), lports=args.lport,
                      hook=args.hook, **container_filters(args))
    with tracer:
        return print_loop(args, lambda: tracer.snapshot(clear=bool(args.interval), interval=args.interval),
                          render_snapshot, intro)
