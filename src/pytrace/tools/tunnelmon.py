"""tunnelmon: VXLAN traffic on an underlay device, per tunnel and overlay pair.

BCC's tunnel_monitor as a tool.  A tc program on the underlay device (clsact
ingress and egress), or an XDP program (ingress only), parses every frame
across the encapsulation boundary and counts packets and bytes per (outer
src/dst IP, VNI, inner src/dst IP), from this host's point of view: SRC is
the local side, TX what it sent, RX what it received.

Library:

    from pytrace.tools.tunnelmon import TunnelMon
    with TunnelMon("eth0", netns="host0") as mon:
        for total, delta in mon.deltas(interval=1, count=5):
            for f in delta.flows:
                print(f.outer_src, f.outer_dst, f.vni, f.inner_src, f.inner_dst, f.tx_bytes, f.rx_bytes)
        print(total.malformed)

Counts: one frame is one packet (a GSO frame counts its segments), bytes are
the frame's length on the device, Ethernet header included.

The tc programs come after every filter already on the device's hooks and
let the filters after them run (core/netattach.py): several monitors, and
an administrator's own filters, see the same traffic.  A filter that ends
the chain before ours hides what it passes from the monitor.  If the device
is deleted under the monitor, gone() says so and deltas() raises
PytraceError; the command prints that line and exits with status 1.

`pytrace tunnelmon simulate` builds a multi-host VXLAN overlay in network
namespaces and sends traffic through it (pytrace/tunnelmon/simulate.py);
`--web [ADDR:]PORT` serves a live chord diagram of the hosts
(pytrace/tunnelmon/web.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..core import netattach, privileges
from ..core.bpfobject import BpfObject, ncpus_possible
from ..cli.aggregate import print_loop
from ..cli.cliutil import (bad_value, intervals, map_size, netns_ref, nonneg_int, port,
                            release_stops, rfc3339, seconds)
from ..core.errors import PytraceError, UsageError
from ..core.loader import Variant
from ..core.net import addr_obj
from ..cli.periodic import ticks
from ..core.tracer import Tracer
from ..sinks.snapshot import Series, Snapshot as SinkSnapshot
from ..spec import TABLE, Option
from ..spec.commands import Command, CommandSpec, Records
from ..spec.options import allow_host

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see cli/argparser.py)
    import argparse

NAME = "tunnelmon"
SUMMARY = "VXLAN traffic per tunnel, VNI and overlay pair (tc/XDP), with a web view"

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
COLUMNS = ("OUTER_SRC", "OUTER_DST", "VNI", "INNER_SRC", "INNER_DST",
           "TX_PKTS", "TX_BYTES", "RX_PKTS", "RX_BYTES")
COUNTERS = ("tx_pkts", "tx_bytes", "rx_pkts", "rx_bytes")
PARSER_IP = 0       # the IP parser's slot in the program arrays (PARSER_IP in the C)


@dataclass(frozen=True, slots=True)
class TunnelFlow:
    """Traffic of one (outer pair, VNI, inner pair), seen from this host (src = local)."""
    outer_src: Addr
    outer_dst: Addr
    vni: int
    inner_src: Addr
    inner_dst: Addr
    tx_pkts: int
    tx_bytes: int
    rx_pkts: int
    rx_bytes: int

    @property
    def key(self) -> tuple[Addr, Addr, int, Addr, Addr]:
        return (self.outer_src, self.outer_dst, self.vni, self.inner_src, self.inner_dst)

    @property
    def bytes(self) -> int:
        return self.tx_bytes + self.rx_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"outer_src": str(self.outer_src), "outer_dst": str(self.outer_dst), "vni": self.vni,
                "inner_src": str(self.inner_src), "inner_dst": str(self.inner_dst),
                "tx_pkts": self.tx_pkts, "tx_bytes": self.tx_bytes,
                "rx_pkts": self.rx_pkts, "rx_bytes": self.rx_bytes}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters at one moment (or, from `later - earlier`, over an interval).

    skipped: frames that are not VXLAN on the port (by kind);
    malformed: frames whose parse stopped on a truncated or bad header (by kind).
    """
    mono_ns: int
    flows: tuple[TunnelFlow, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)

    def by_key(self) -> dict[tuple, TunnelFlow]:
        return {f.key: f for f in self.flows}

    def __sub__(self, earlier: "Snapshot") -> "Snapshot":
        """What happened between earlier and self; flows without traffic left out."""
        before = earlier.by_key()
        flows = []
        for f in self.flows:
            b = before.get(f.key)
            d = f if b is None else TunnelFlow(*f.key, f.tx_pkts - b.tx_pkts, f.tx_bytes - b.tx_bytes,
                                               f.rx_pkts - b.rx_pkts, f.rx_bytes - b.rx_bytes)
            if d.tx_pkts or d.rx_pkts:
                flows.append(d)
        sub = lambda now, then: {k: v - then.get(k, 0) for k, v in now.items()}  # noqa: E731
        return Snapshot(self.mono_ns, tuple(flows), sub(self.skipped, earlier.skipped),
                        sub(self.malformed, earlier.malformed))

    def to_dict(self) -> dict[str, Any]:
        return {"flows": [f.to_dict() for f in self.flows], "skipped": dict(self.skipped),
                "malformed": dict(self.malformed)}


def empty_snapshot() -> Snapshot:
    return Snapshot(time.monotonic_ns(), ())


class TunnelMon(Tracer):
    """Count VXLAN traffic on `dev` (in network namespace `netns`, by `ip netns`
    name, path or inode).  port: the VXLAN UDP port; xdp: XDP ingress instead of
    tc ingress+egress (then only RX is seen)."""

    OBJECT = "tunnelmon"
    NEED_NET_ADMIN = True
    VARIANTS = (
        Variant("tc", ("tunnelmon_tc_ingress", "tunnelmon_tc_egress", "tunnelmon_tc_ip")),
        Variant("xdp", ("tunnelmon_xdp", "tunnelmon_xdp_ip"), note="ingress only"),
    )

    def __init__(self, dev: str, netns: str | int | None = None, *, port: int = 4789,
                 xdp: bool = False, hook: str | None = None, max_flows: int = 10240):
        if xdp and hook not in (None, "xdp"):
            raise UsageError(f"xdp=True and hook={hook} contradict each other")
        super().__init__(hook="xdp" if xdp else hook)
        if not 0 < port < 65536:
            raise UsageError(f"port {port}: not a UDP port number (1-65535)")
        self.dev, self.netns, self.port, self.max_flows = dev, netns, port, max_flows
        self._ns_fd: int | None = None
        self._watch: netattach.DeviceWatch | None = None

    # -- Tracer ---------------------------------------------------------------
    def rodata(self) -> dict[str, Any]:
        return {"vxlan_port": self.port}

    def map_sizes(self) -> dict[str, int]:
        return {"stats": self.max_flows}

    def open(self):
        # Hold the namespace open while we are attached in it: detaching then
        # happens in the same namespace even if its name is removed meanwhile.
        if self.netns not in (None, ""):
            # what is missing, before setns fails with a bare EPERM
            privileges.require(self.OBJECT, need_net_admin=True)
            privileges.require_sys_admin(self.OBJECT, "entering another network namespace (--netns)")
        path = netattach.netns_path(self.netns)
        if path is not None:
            self._ns_fd = os.open(path, os.O_RDONLY)
        try:
            self._watch = netattach.DeviceWatch(self.dev, self._ns(), label=self.netns)
            return super().open()
        except BaseException:
            self._close_ns()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._close_ns()

    def gone(self) -> str | None:
        """Why the monitor cannot see anything any more (its device was
        deleted), or None; looks at most twice a second."""
        return self._watch.gone() if self._watch is not None else None

    def _ns(self) -> str | None:
        return None if self._ns_fd is None else f"/proc/{os.getpid()}/fd/{self._ns_fd}"

    def _close_ns(self) -> None:
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        # The IP parser goes into the program array first, so the very first
        # frame can already tail-call it.
        parser, jumps = (("tunnelmon_xdp_ip", "xdp_parsers") if variant.hook == "xdp"
                         else ("tunnelmon_tc_ip", "tc_parsers"))
        obj.map(jumps).update(struct.pack("<I", PARSER_IP), struct.pack("<i", obj.program_fd(parser)))
        if variant.hook == "xdp":
            netattach.attach_xdp(obj, "tunnelmon_xdp", self.dev, self._ns())
        else:
            netattach.attach_tc(obj, "tunnelmon_tc_ingress", self.dev, "ingress", self._ns())
            netattach.attach_tc(obj, "tunnelmon_tc_egress", self.dev, "egress", self._ns())

    def setup(self) -> None:
        self._stats = self.obj.map("stats")
        self._anomalies = self.obj.map("anomalies")
        self._anomaly_layout = self.obj.types.struct("tunnel_anomalies")
        self._ncpus = ncpus_possible()

    # -- reading ----------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Cumulative counters since the monitor was attached."""
        if self.obj is None:
            raise PytraceError("tunnelmon: not open (use it in a with block)")
        now = time.monotonic_ns()
        flows = []
        for k, v in self._stats.decoded_items():
            flows.append(TunnelFlow(addr_obj(k["outer_family"], k["outer_src"]),
                                    addr_obj(k["outer_family"], k["outer_dst"]), k["vni"],
                                    addr_obj(k["inner_family"], k["inner_src"]),
                                    addr_obj(k["inner_family"], k["inner_dst"]),
                                    v["tx_pkts"], v["tx_bytes"], v["rx_pkts"], v["rx_bytes"]))
        skipped, malformed = self._read_anomalies()
        return Snapshot(now, tuple(flows), skipped, malformed)

    def _read_anomalies(self) -> tuple[dict[str, int], dict[str, int]]:
        size = self._anomalies.value_size          # per-CPU values: 8-byte aligned slots
        raw = self._anomalies.lookup(b"\0\0\0\0", size * self._ncpus) or b""
        totals: dict[str, int] = {}
        for cpu in range(len(raw) // size):
            for name, value in self._anomaly_layout.decode(raw[cpu * size:(cpu + 1) * size]).items():
                totals[name] = totals.get(name, 0) + value
        skipped = {n.split(".", 1)[1]: v for n, v in totals.items() if n.startswith("skipped.")}
        malformed = {n.split(".", 1)[1]: v for n, v in totals.items() if n.startswith("malformed.")}
        return skipped, malformed

    def deltas(self, interval: float = 1.0, count: int | None = None,
               duration: float | None = None) -> Iterator[tuple[Snapshot, Snapshot]]:
        """(cumulative snapshot, what changed during the interval), once per
        interval.  Raises PytraceError once the device is deleted (after
        yielding the partial interval)."""
        prev = self.snapshot()
        for _last in ticks(interval, count, duration, stop_when=lambda: self.gone() is not None):
            snap = self.snapshot()
            yield snap, snap - prev
            prev = snap
        reason = self.gone()
        if reason:
            raise PytraceError(reason)


# -- command line ------------------------------------------------------------------

SORT_KEYS = tuple(c.lower() for c in COLUMNS) + ("bytes", "pkts")


MAX_FLOWS = 1 << 20      # --max-flows: ~100 MiB of flow table at most


def sort_key(name: str) -> str:
    key = name.lower()
    if key not in SORT_KEYS:
        raise bad_value(f"'{name}' is not a column ({', '.join(SORT_KEYS)})")
    return key


def web_address(text: str) -> tuple[str, int]:
    """[ADDR:]PORT, ADDR defaulting to 127.0.0.1 (IPv6 as [::1]:PORT)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise bad_value(f"'{host}' is not an IP address to listen on") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad_value(f"'{port_text}' is not a port number (1-65535)")
    return host, int(port_text)


# Each -h ends with its examples (cli/argparser.ArgParser prints them), as BCC's tools do.
SIMULATE_EXAMPLES = (
    ("pytrace tunnelmon simulate", "3 hosts, 3 clients each, VNIs 100 and 200, pinging for 30 s"),
    ("pytrace tunnelmon simulate --hosts 4 --loud h0c1 --web 8080", "one loud client, watched in the browser"))
EXAMPLES = (
    ("pytrace tunnelmon --dev eth0", "VXLAN traffic on eth0, per outer pair, VNI and inner pair, every second"),
    ("pytrace tunnelmon --dev ul0 --netns hA -i 5 -c 3 --sort vni", "in a namespace, 3 intervals of 5 s, by VNI"),
    ("pytrace tunnelmon --dev eth0 --web 8080", "and a live chord diagram on http://127.0.0.1:8080/"),
    *SIMULATE_EXAMPLES[:1])


def _sorted(flows: tuple[TunnelFlow, ...], key: str) -> list[TunnelFlow]:
    if key in ("bytes", "pkts"):
        return sorted(flows, key=lambda f: (-(f.tx_bytes + f.rx_bytes) if key == "bytes"
                                            else -(f.tx_pkts + f.rx_pkts), _addr_order(f)))
    if key in COUNTERS:
        return sorted(flows, key=lambda f: (-getattr(f, key), _addr_order(f)))
    if key == "vni":
        return sorted(flows, key=lambda f: (f.vni, _addr_order(f)))
    return sorted(flows, key=lambda f: (_ip_order(getattr(f, key)), _addr_order(f)))


def _ip_order(a: Addr) -> tuple[int, int]:
    return (a.version, int(a))


def _addr_order(f: TunnelFlow) -> tuple:
    return (_ip_order(f.outer_src), _ip_order(f.outer_dst), f.vni, _ip_order(f.inner_src),
            _ip_order(f.inner_dst))


def render_table(flows: list[TunnelFlow]) -> str:
    rows = [(str(f.outer_src), str(f.outer_dst), str(f.vni), str(f.inner_src), str(f.inner_dst),
             str(f.tx_pkts), str(f.tx_bytes), str(f.rx_pkts), str(f.rx_bytes)) for f in flows]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(COLUMNS)]
    # addresses and VNI left-aligned, counters right-aligned
    fmt = "  ".join(f"{{:{'<' if i < 5 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r).rstrip() for r in [COLUMNS, *rows]) + "\n"


def render_anomalies(skipped: dict[str, int], malformed: dict[str, int]) -> str:
    parts = []
    for title, counts in (("skipped", skipped), ("malformed", malformed)):
        nonzero = [f"{k}={v}" for k, v in counts.items() if v]
        if nonzero:
            parts.append(f"{title}: {' '.join(nonzero)}")
    return ("  ".join(parts) + "\n") if parts else ""


# -- snapshots: what the sinks (--record, --influx) get each interval, and what
#    both the live output and `pytrace replay` render ------------------------------

FLOW_LABELS = ("outer_src", "outer_dst", "vni", "inner_src", "inner_dst")


def intro(args: argparse.Namespace) -> str:
    if args.json:
        return ""
    where = f" (netns {args.netns})" if args.netns else ""
    xdp = " with XDP (ingress: RX only)" if args.xdp or args.hook == "xdp" else ""
    return f"Tracing VXLAN (UDP {args.port}) on {args.dev}{where}{xdp}... Hit Ctrl-C to end.\n"


def snapshot(shown: Snapshot, args: argparse.Namespace) -> SinkSnapshot:
    """One interval as sink series: a series per flow (labels: kind=flow and the
    key; values: the four counters), then the non-zero anomaly counters (kind=
    skipped / malformed, key labels empty so every series has the same labels)."""
    flows = _sorted(shown.flows, args.sort)
    if args.rows:
        flows = flows[:args.rows]
    series = [Series.of({"kind": "flow", **{k: v for k, v in f.to_dict().items() if k in FLOW_LABELS}},
                        {c: getattr(f, c) for c in COUNTERS}) for f in flows]
    for kind, counts in (("skipped", shown.skipped), ("malformed", shown.malformed)):
        nonzero = {k: v for k, v in counts.items() if v}
        if nonzero:
            series.append(Series.of({"kind": kind, **{k: "" for k in FLOW_LABELS}}, nonzero))
    return SinkSnapshot.now(NAME, series, None if args.cumulative else args.interval)


def render_snapshot(snap: SinkSnapshot, args: argparse.Namespace) -> str:
    flows, anomalies = [], {"skipped": {}, "malformed": {}}
    for s in snap.series:
        labels, values = dict(s.labels), dict(s.values)
        if labels.get("kind") == "flow":
            ip = ipaddress.ip_address
            flows.append(TunnelFlow(ip(labels["outer_src"]), ip(labels["outer_dst"]), int(labels["vni"]),
                                    ip(labels["inner_src"]), ip(labels["inner_dst"]),
                                    *(int(values.get(c, 0)) for c in COUNTERS)))
        elif labels.get("kind") in anomalies:
            anomalies[labels["kind"]].update({k: int(v) for k, v in values.items()})
    if args.json:
        # spec/jsonout.py's convention: the interval's wall clock and the kernel's
        # monotonic ns first; the record's "type" says which of RECORDS' it is
        head = {"time": rfc3339(snap.time_ns), "ts_ns": snap.mono_ns}
        out = [json.dumps({**head, "type": "flow", **f.to_dict()}) for f in flows]
        if anomalies["skipped"] or anomalies["malformed"]:
            out.append(json.dumps({**head, "type": "anomalies", **anomalies}))
        return "".join(line + "\n" for line in out)
    hms = time.strftime("%H:%M:%S", time.localtime(snap.time_ns // 1_000_000_000))
    return f"{hms}\n{render_table(flows)}{render_anomalies(**anomalies)}\n"


def run(args: argparse.Namespace) -> int:
    """`pytrace tunnelmon` without a command (SPEC's run; simulate: _simulate)."""
    if not args.dev:
        raise UsageError("--dev DEV is required (the underlay device; or: pytrace tunnelmon simulate)")
    if args.xdp and args.hook == "tc":
        raise UsageError("--xdp and --hook tc contradict each other")
    from ..core import leftovers
    for line in leftovers.sweep([args.netns] if args.netns else ()):
        sys.stderr.write(f"pytrace tunnelmon: {line}\n")
    mon = TunnelMon(args.dev, args.netns, port=args.port, xdp=args.xdp, hook=args.hook,
                    max_flows=args.max_flows)
    with mon:
        web = None
        if args.web:
            from ..tunnelmon.web import WebView
            web = WebView(lambda: mon.snapshot().to_dict(), host=args.web[0], port=args.web[1],
                          meta={"dev": args.dev, "netns": args.netns or "", "port": args.port,
                                "hook": mon.variant.hook}, allow_hosts=args.allow_host)
            web.start()
        try:
            if web:
                sys.stdout.write(json.dumps({"type": "web", "url": web.url}) + "\n" if args.json
                                 else f"Web view: {web.url}\n")
            last = [mon.snapshot()]

            def interval() -> SinkSnapshot:
                total = mon.snapshot()
                shown = total if args.cumulative else total - last[0]
                last[0] = total
                return snapshot(shown, args)
            return print_loop(args, interval, render_snapshot, intro, gone=mon.gone)
        finally:
            if web:
                web.close()


def _simulate(args: argparse.Namespace) -> int:
    from ..tunnelmon import simulate
    release_stops()      # not a tracer's loop: a stop ends it at once, as it always did
    return simulate.run(args)


def _simulate_command() -> Command:
    from ..tunnelmon import simulate
    return Command("simulate", "build a simulated VXLAN overlay in network namespaces and send traffic",
                   run=_simulate, description=simulate.DESCRIPTION, options=simulate.options(),
                   examples=SIMULATE_EXAMPLES,
                   instead="builds an overlay in namespaces of its own and pings through it: it traces nothing "
                         "(except with --web, which monitors one host as `pytrace tunnelmon` does)")


SPEC = CommandSpec(
    NAME, SUMMARY, TunnelMon, TABLE,
    description=("Count VXLAN traffic on an underlay device per (outer pair, VNI, inner pair). "
                 "SRC is this host's side; TX what it sent, RX what it received."),
    options=(
        Option("--dev", metavar="DEV", help="underlay device to monitor (required)"),
        Option("--netns", metavar="NS", type=netns_ref,
               help="network namespace of DEV (ip netns name, path or inode)"),
        Option("--port", type=port, default=4789, help="VXLAN UDP port (default 4789)"),
        Option("--xdp", action="store_true", help="XDP on ingress instead of tc (sees RX only)"),
        Option("-i", "--interval", type=seconds, default=1, metavar="SEC", help="print every SEC seconds (default 1)"),
        Option("-c", "--count", type=intervals, metavar="N", help="stop after N intervals"),
        Option("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds"),
        Option("--sort", type=sort_key, default="bytes", metavar="COL",
               help="sort rows by this column (default: tx+rx bytes, largest first)"),
        Option("-r", "--rows", type=nonneg_int, default=0, metavar="N", help="print at most N rows (0: all)"),
        Option("--cumulative", action="store_true", help="totals since start, not per interval"),
        Option("--max-flows", type=map_size(MAX_FLOWS), default=10240, metavar="N",
               help="room for N (outer, VNI, inner) keys in the kernel (default 10240)"),
        Option("--web", type=web_address, metavar="[ADDR:]PORT",
               help="serve a live chord diagram on ADDR:PORT (ADDR default 127.0.0.1)"),
        allow_host()),
    # --json: one record per flow of the interval, then the frames it could not count
    records=Records("type", *TunnelFlow.__dataclass_fields__, notes=("anomalies",),
                    kinds={"type": "str", "vni": "int", **{c: "int" for c in COUNTERS},
                           **{a: "address" for a in ("outer_src", "outer_dst", "inner_src", "inner_dst")}}),
    run=run, text=render_snapshot, intro=intro,
    commands=(_simulate_command(),),
    examples=EXAMPLES,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command line (SPEC's), for callers of the module's old entry point."""
    SPEC.add_arguments(p)
