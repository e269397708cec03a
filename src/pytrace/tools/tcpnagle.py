"""tcpnagle: TCP Nagle usage on the transmit path and transmit delays.

Library:

    from pytrace.tools.tcpnagle import TcpNagle
    with TcpNagle() as t:
        time.sleep(10)
        print(t.approximation)            # True on kernels without kprobes
        print(t.counts())                 # {"ON": 12, "OFF": 3, ...}
        for name, hist in t.histograms().items():
            print(name); print(hist.render())

With kprobes (the book's tcpnagle.bt, exact): the nonagle argument of every
tcp_write_xmit() call is counted, and "blocked" is the time a socket spent
between tcp_write_xmit returning that it sent nothing although data was
queued and the next return that it did send.

Without kprobes, an APPROXIMATION through BPF TX timestamping (sockops,
Linux 6.15+): the socket's Nagle setting is counted at each sendmsg, and
"blocked" is the time from sendmsg to the data reaching the device queue
(what TCP held back: Nagle, cork, cwnd, receive window), with two more
delays: device queue to driver ("xmit") and driver to ACK ("acked").  Only
the last skb of each send is timed, only connections established after the
tool started are seen, and only those in the watched cgroup (default: the
whole cgroup2 hierarchy).  Sockets established meanwhile keep the BPF
timestamping flag after exit; with no sockops program left it does nothing.
"""

from __future__ import annotations

import os

from ..core import libbpf
from ..cli.aggregate import timestamp_line
from ..core.bpfobject import BpfObject
from ..core.errors import PytraceError, UsageError, shown
from ..core.hist import Log2Histogram
from ..core.loader import Variant
from ..core.socklayer import counted, histograms
from ..core.tracer import Tracer
from ..sinks.snapshot import Series, Snapshot
from ..spec import HISTOGRAM, Option, ToolSpec, interval_flags, pid, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# include/net/tcp.h TCP_NAGLE_*: the combinations the book names
FLAG_NAMES = {0: "ON", 1: "OFF", 2: "CORK", 3: "OFF|CORK", 4: "PUSH", 5: "OFF|PUSH"}
DELAYS = ("blocked", "xmit", "acked")          # H_* in src/bpf/tcpnagle.bpf.c
APPROX_NOTE = ("APPROXIMATION (no kprobes here: sockops TX timestamping): nagle = the socket's setting at "
               "each send; blocked = send -> device queue; xmit = queue -> driver; acked = driver -> ACK; "
               "last skb of each send, connections established since start, in the watched cgroup")


def flag_name(value: int) -> str:
    return FLAG_NAMES.get(value, f"0x{value:x}")


def cgroup2_root() -> str:
    """The mount point of the cgroup2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)."""
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    raise PytraceError("no cgroup2 hierarchy is mounted (the sockops approximation needs one)")


class TcpNagle(Tracer):
    OBJECT = "tcpnagle"
    VARIANTS = (
        Variant("kprobe", ("tcpnagle_kprobe", "tcpnagle_kretprobe")),
        Variant("sockops", ("tcpnagle_sockops",), note="approximation", needs="sockops TX timestamping"),
    )

    def __init__(self, *, pid: int = 0, ms: bool = False, cgroup: str | None = None, hook: str | None = None):
        super().__init__(hook=hook)
        self.pid, self.ms, self.cgroup = pid, ms, cgroup
        self.unit = "msecs" if ms else "usecs"

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "targ_ms": self.ms}

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        if variant.hook != "sockops":
            for name in variant.programs:
                obj.attach(name)
            return
        path = self.cgroup or cgroup2_root()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UsageError(f"--cgroup {shown(path)}: {exc.strerror}") from None
        try:
            link = libbpf.lib().bpf_program__attach_cgroup(obj.program("tcpnagle_sockops"), fd)
            obj.keep_link(libbpf.check_ptr(link, f"attach sockops to cgroup {path}"))
        finally:
            os.close(fd)
        self.cgroup_path = path

    def setup(self) -> None:
        self._nagle = self.obj.map("nagle")
        self._hists = self.obj.map("hists")

    @property
    def approximation(self) -> bool:
        return self.variant is not None and self.variant.note == "approximation"

    def counts(self, clear: bool = False) -> dict[str, int]:
        """Nagle setting -> tcp_write_xmit calls (kprobe) or sends (approximation)."""
        return {flag_name(k): n for k, n in sorted(counted(self._nagle, clear))}

    def histograms(self, clear: bool = False) -> dict[str, Log2Histogram]:
        """"blocked" (and "xmit", "acked" with the approximation) -> delay histogram."""
        raw = histograms(self._hists, self.unit, lambda k: k, clear)
        return {DELAYS[k] if k < len(DELAYS) else str(k): h for k, h in sorted(raw.items())}


# -- one interval: the Nagle settings' counts (rows without a histogram), then the delays --

def snapshot(tracer: TcpNagle, args: Any) -> Snapshot:
    clear = bool(args.interval)
    mode = "approximation" if tracer.approximation else "exact"
    series = [Series.of({"mode": mode, "nagle": name}, {"count": n}) for name, n in tracer.counts(clear).items()]
    series += [Series.of({"mode": mode, "delay": name}, hist=h) for name, h in tracer.histograms(clear).items()]
    if not series:
        series = [Series.of({"mode": mode})]
    return Snapshot.now("tcpnagle", series, args.interval)


def text(snap: Snapshot, args: Any) -> str:
    mode = snap.series[0].label("mode") if snap.series else "exact"
    parts = [timestamp_line(snap, args)]
    if mode == "approximation":
        parts.append(f"({APPROX_NOTE})\n")
    for s in snap.series:
        if s.label("nagle"):
            parts.append(f"@nagle[{s.label('nagle')}]: {dict(s.values)['count']}\n")
    for s in snap.series:
        if s.hist is not None:
            parts.append(f"\n@{s.label('delay')}_{'ms' if s.hist.unit == 'msecs' else 'us'}:\n{s.hist.render()}")
    return "".join(parts) + "\n"


def cgroup_path(args: Any) -> str | None:
    """--cgroup must be a cgroup v2 directory (checked before anything loads)."""
    if args.cgroup is None:
        return None
    root = cgroup2_root()
    real = os.path.realpath(args.cgroup)
    if not os.path.isdir(real) or os.path.commonpath((real, root)) != root:
        raise UsageError(f"--cgroup {shown(args.cgroup)}: not a cgroup v2 directory (under {root})")
    return args.cgroup


SPEC = ToolSpec(
    "tcpnagle", "TCP Nagle usage and transmit delays (exact with kprobes; approximation via sockops)", TcpNagle,
    HISTOGRAM,
    description=(
        "Summarize TCP Nagle usage and transmit delays. With kprobes (the book's tcpnagle.bt): tcp_write_xmit's "
        "nonagle argument and how long sockets were blocked. WITHOUT kprobes this is an APPROXIMATION "
        "(sockops BPF TX timestamping, Linux 6.15+): the socket's Nagle setting at each send, and the "
        "delays send -> device queue (blocked), queue -> driver (xmit) and driver -> ACK (acked) of the last "
        "skb of each send; only connections established after the start, in the watched cgroup."),
    options=(
        pid("only sends (kprobe: tcp_write_xmit calls) made in this process's context"),
        Option("-m", "--milliseconds", action="store_true", kw="ms", help="histograms in milliseconds"),
        Option("--cgroup", metavar="PATH", kw="cgroup", value=cgroup_path,
               help="approximation: the cgroup (v2) to watch (default: the whole hierarchy)"),
        *interval_flags(),
        timestamp(),
    ),
    labels=("mode", "delay"),
    snapshot=snapshot, text=text,
    intro="Tracing TCP nagle and xmit delays. Hit Ctrl-C to end.\n",
    examples=(
        ("pytrace tcpnagle", "Nagle settings and delays, at Ctrl-C"),
        ("pytrace tcpnagle -m -i 5", "in milliseconds, every 5 seconds"),
        ("pytrace tcpnagle -p 181", "only process 181's sends"),
        ("pytrace tcpnagle --cgroup /sys/fs/cgroup/system.slice", "approximation: only that cgroup's sockets"),
        ("pytrace tcpnagle --json", "one JSON object per setting and per delay histogram"),
    ),
)
