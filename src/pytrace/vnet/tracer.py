"""VnetTracer: packets recorded at trace points that come and go while it runs.

    from pytrace.vnet.config import Point
    from pytrace.vnet.tracer import VnetTracer

    with VnetTracer([Point("a.eth0.out", "eth0", "hostA", "egress", "tc")], host="a") as t:
        t.add(Point("b.eth0.in", "eth0", "hostB", "ingress", "xdp"))
        for rec in t.records(duration=5):
            print(rec.point, rec.pkt_id, rec.flow, rec.length)
        t.remove("a.eth0.out")

Every point is its own BPF object (vnet.bpf.o with the point's rodata),
attached and detached on its own.  They all write into one ring buffer that
the tracer creates before the first point and keeps until it closes, so a
point's removal cannot lose what it already recorded, and the other points
never stop.

Timestamps: the kernel stamps CLOCK_MONOTONIC; records carry this host's
wall clock (ns since the epoch), fixed at open so it never jumps, plus an
optional injected offset (clock_offset_ns) that makes a test agent look like
a host whose clock is off by a known amount.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator

from ..core import libbpf, loader, netattach, objects
from ..core.bpfobject import BpfObject
from ..core.btf import ObjectTypes
from ..core.errors import PytraceError, UsageError
from ..core.features import BPF_MAP_TYPE_RINGBUF
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj
from ..core.ringbuf import DEFAULT_INTERVAL_MS, SPARE_RING_BYTES, RingBuffer
from ..core.stops import releasing
from ..core.stream import ring_batches, ring_drain
from .config import PROTO_NAMES, Point, Resolved, Selector, resolve

OBJECT = "vnet"
RECORD = "vnet_record"

# Hook variants per method, best first (the loader takes the first that works).
TC = (Variant("tc", ("vnet_tc",)),)
XDP = (Variant("xdp", ("vnet_xdp",)),)
EGRESS_TP = (Variant("tp_btf", ("vnet_tp_btf_queue",)), Variant("raw_tp", ("vnet_raw_tp_queue",)),
             Variant("tracepoint", ("vnet_tracepoint_queue",)))
INGRESS_TP = (Variant("tp_btf", ("vnet_tp_btf_rx",)), Variant("raw_tp", ("vnet_raw_tp_rx",)),
              Variant("tracepoint", ("vnet_tracepoint_rx",)))
VARIANTS = (*TC, *XDP, *EGRESS_TP, *INGRESS_TP)
TRACEPOINT_HOOKS = tuple(v.hook for v in EGRESS_TP)

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

# the columns of a stored record, in order (store.py and the Influx sink use them)
ROW_FIELDS = ("host", "ts_ns", "point", "pkt_id", "proto", "saddr", "sport", "daddr", "dport",
              "length", "ip_len", "netns", "ifindex", "cpu", "encap")


@dataclass(frozen=True, slots=True)
class PacketRecord:
    ts_ns: int             # wall clock of the recording host, ns since the epoch
    host: str
    point: str             # the point's label
    pkt_id: int            # the same at every point the packet passes
    proto: int
    saddr: Addr            # the flow: inner headers for VXLAN packets
    sport: int
    daddr: Addr
    dport: int
    length: int            # bytes of the packet as the hook saw it
    ip_len: int            # length of the identified (inner) IP packet
    netns: int             # inode of the point's namespace
    ifindex: int
    cpu: int
    encap: bool            # seen VXLAN-encapsulated here

    # InfluxDB tags (the rest are fields): few values each, and with the time
    # they keep two records of one point apart
    INFLUX_TAGS: ClassVar[tuple[str, ...]] = ("host", "point", "cpu")

    @property
    def flow(self) -> str:
        return flow_text(self.proto, str(self.saddr), self.sport, str(self.daddr), self.dport)

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "host": self.host, "point": self.point, "pkt_id": f"{self.pkt_id:016x}",
                "proto": PROTO_NAMES.get(self.proto, self.proto), "saddr": str(self.saddr),
                "sport": self.sport, "daddr": str(self.daddr), "dport": self.dport, "length": self.length,
                "ip_len": self.ip_len, "netns": self.netns, "ifindex": self.ifindex, "cpu": self.cpu,
                "encap": self.encap}

    @classmethod
    def from_row(cls, row: tuple) -> "PacketRecord":
        host, ts, point, pkt_id, proto, sa, sp, da, dp, length, ip_len, netns, ifindex, cpu, encap = row
        return cls(ts, host, point, pkt_id, proto, ipaddress.ip_address(sa), sp, ipaddress.ip_address(da), dp,
                   length, ip_len, netns, ifindex, cpu, bool(encap))


def flow_text(proto: int, saddr: str, sport: int, daddr: str, dport: int) -> str:
    name = PROTO_NAMES.get(proto, str(proto))
    if ":" in saddr:
        saddr, daddr = f"[{saddr}]", f"[{daddr}]"
    if proto in (6, 17):
        return f"{name} {saddr}:{sport} > {daddr}:{dport}"
    return f"{name} {saddr} > {daddr}"


@dataclass
class ActivePoint:
    point: Point
    id: int
    resolved: Resolved
    obj: BpfObject
    hook: str
    added_ns: int          # in the records' clock
    watch: netattach.DeviceWatch | None = None

    def info(self) -> dict[str, Any]:
        return {**self.point.to_dict(), "id": self.id, "hook": self.hook, "netns_inode": self.resolved.netns_inode,
                "ifindex": self.resolved.ifindex, "added_ns": self.added_ns}


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while an attachment and its undo are being
    registered, so a signal cannot leave a tc filter that nothing removes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class VnetTracer:
    """Trace points sharing one ring buffer; records as PacketRecord or raw rows."""

    OBJECT: ClassVar[str] = OBJECT
    # one variant per hook kind (`pytrace list`, README); a point uses its method's
    VARIANTS: ClassVar[tuple[Variant, ...]] = (*TC, *XDP, *EGRESS_TP)

    def __init__(self, points: Iterable[Point] = (), selector: Selector | None = None, *,
                 host: str | None = None, clock_offset_ns: int = 0, hook: str | None = None,
                 ring_bytes: int = 8 << 20, interval_ms: int = DEFAULT_INTERVAL_MS):
        if hook is not None and hook not in TRACEPOINT_HOOKS:
            raise UsageError(f"--hook {hook}: vnet's tracepoint points use {', '.join(TRACEPOINT_HOOKS)} "
                             "(tc and xdp points have one hook each)")
        if ring_bytes < 4096 or ring_bytes & (ring_bytes - 1):
            raise UsageError("the ring buffer size must be a power of two of at least 4096 bytes")
        self.initial = tuple(points)
        self.selector = selector or Selector()
        self.host = host or os.uname().nodename
        self.clock_offset_ns = clock_offset_ns
        self.hook = hook
        self.ring_bytes = ring_bytes
        self.interval_ms = interval_ms
        self.points: dict[str, ActivePoint] = {}
        self.labels: dict[int, str] = {}     # point id -> label, kept after removal
        self._next_id = 1
        self._ring_fd = -1
        self._spare_fd = -1
        self.ring: RingBuffer | None = None
        self._lost_closed = 0
        self._lost_views: dict[int, Any] = {}
        self._wall = 0
        self._start = 0
        self._addr = AddrFormatter()

    # -- life cycle -------------------------------------------------------------
    def open(self) -> "VnetTracer":
        try:
            self._open_ring()
            resolved = [(p, resolve(p)) for p in self.initial]   # every point checked before any attach
            for p, r in resolved:
                self._attach(p, r)
        except BaseException:
            self.close()
            raise
        return self

    def _open_ring(self) -> None:
        layout = ObjectTypes(objects.path(OBJECT)).struct(RECORD)
        self.layout = layout
        fd = libbpf.lib().bpf_map_create(BPF_MAP_TYPE_RINGBUF, b"vnet_events", 0, 0, self.ring_bytes, None)
        if fd < 0:
            raise PytraceError(f"cannot create the ring buffer: {os.strerror(-fd)} "
                               "(needs root, or CAP_BPF, and Linux 5.8+)")
        self._ring_fd = fd
        # every point's object shares the spare ring too (src/bpf/events.h)
        fd = libbpf.lib().bpf_map_create(BPF_MAP_TYPE_RINGBUF, b"vnet_spare", 0, 0, SPARE_RING_BYTES, None)
        if fd < 0:
            raise PytraceError(f"cannot create the spare ring buffer: {os.strerror(-fd)}")
        self._spare_fd = fd
        self.ring = RingBuffer(self._ring_fd, self.ring_bytes, layout.format, self.interval_ms,
                               spare=(fd, SPARE_RING_BYTES))
        self.raw_fields = layout.names
        self.idx = {n: i for i, n in enumerate(self.raw_fields)}
        # one fixed conversion from the kernel's monotonic stamps to this host's wall clock
        self._start = time.monotonic_ns()
        self._wall = time.time_ns() - self._start + self.clock_offset_ns

    def close(self) -> None:
        # every point is detached even if one fails (e.g. its namespace is gone)
        failed: BaseException | None = None
        for label in list(self.points):
            try:
                self._detach(label)
            except (PytraceError, OSError) as exc:
                failed = failed or exc
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        for fd in (self._ring_fd, self._spare_fd):
            if fd >= 0:
                os.close(fd)
        self._ring_fd = self._spare_fd = -1
        if failed is not None:
            raise failed

    def __enter__(self) -> "VnetTracer":
        return self.open()

    def __exit__(self, *exc) -> None:
        with releasing():       # a stop waits until every point is detached (core/stops)
            self.close()

    # -- points -------------------------------------------------------------------
    def now_ns(self) -> int:
        """This tracer's record clock, now."""
        return time.monotonic_ns() + self._wall

    def add(self, point: Point) -> ActivePoint:
        """Attach a point now; its records start from the returned .added_ns."""
        if self.ring is None:
            raise PytraceError("the tracer is not open")
        if point.label in self.points:
            raise UsageError(f"point '{point.label}' is already traced")
        return self._attach(point, resolve(point))

    def remove(self, label: str) -> int:
        """Detach a point; returns the time (record clock) after which it records nothing."""
        if label not in self.points:
            raise UsageError(f"no point '{label}' (traced: {', '.join(self.points) or 'none'})")
        self._detach(label)
        return self.now_ns()

    def apply(self, points: Iterable[Point], selector: Selector | None = None) -> tuple[list[str], list[str]]:
        """Make the traced points exactly these (a config reload): (added, removed) labels.

        Points whose definition is unchanged keep running untouched; a new
        selector re-attaches every point (it lives in each point's rodata).
        Every new point is checked first, so a bad one changes nothing.
        """
        points = list(points)
        want = {p.label: p for p in points}
        reset = selector is not None and selector != self.selector
        keep = {lbl for lbl, ap in self.points.items()
                if not reset and lbl in want and ap.point.same_as(want[lbl])}
        resolved = {p.label: resolve(p) for p in points if p.label not in keep}
        removed = [lbl for lbl in self.points if lbl not in keep]
        for lbl in removed:
            self._detach(lbl)
        if reset:
            self.selector = selector
        added = []
        for p in points:
            if p.label not in keep:
                self._attach(p, resolved[p.label])
                added.append(p.label)
        return added, removed

    def _variants(self, point: Point) -> tuple[Variant, ...]:
        if point.method == "tc":
            return TC
        if point.method == "xdp":
            return XDP
        return EGRESS_TP if point.direction == "egress" else INGRESS_TP

    def _attach(self, point: Point, res: Resolved) -> ActivePoint:
        pid = self._next_id
        rodata = {**self.selector.rodata(), "point_id": pid, "point_ifindex": res.ifindex,
                  "point_netns": res.netns_inode, "point_dir": 1 if point.direction == "egress" else 0,
                  "has_eth": int(res.has_eth)}

        def share_ring(obj: BpfObject) -> None:
            libbpf.check(libbpf.lib().bpf_map__reuse_fd(obj.map("events").ptr, self._ring_fd),
                         "share the ring buffer")
            libbpf.check(libbpf.lib().bpf_map__reuse_fd(obj.map("events_spare").ptr, self._spare_fd),
                         "share the spare ring buffer")

        def attach(obj: BpfObject, variant: Variant) -> None:
            prog = variant.programs[0]
            if point.method == "tc":
                netattach.attach_tc(obj, prog, point.device, point.direction, res.netns_path)
            elif point.method == "xdp":
                netattach.attach_xdp(obj, prog, point.device, res.netns_path)
            else:
                obj.attach(prog)

        hook = self.hook if point.method == "tracepoint" else None
        with signals_deferred():
            try:
                obj = loader.load(OBJECT, OBJECT, self._variants(point), rodata=rodata, hook=hook,
                                  attach=attach, need_net_admin=True, before_load=share_ring)
            except PytraceError as exc:
                raise type(exc)(f"point '{point.label}': {exc}") if isinstance(exc, UsageError) \
                    else PytraceError(f"point '{point.label}': {exc}", exc.exit_code) from None
            self._next_id += 1
            ap = ActivePoint(point, pid, res, obj, obj.variant.hook, self.now_ns(),
                             netattach.DeviceWatch(point.device, res.netns_path, index=res.ifindex,
                                                   label=point.netns))
            self.points[point.label] = ap
            self.labels[pid] = point.label
            self._lost_views[pid] = obj.global_u64("lost_events")
        return ap

    def _detach(self, label: str) -> None:
        ap = self.points.pop(label)
        with signals_deferred():
            view = self._lost_views.pop(ap.id, None)
            if view is not None:
                self._lost_closed += view.value
            # An undo fails (PytraceError) when the point's namespace is gone:
            # the kernel took the device and its filters with it.  close()
            # stops at such a failure, so call it again for the rest.
            for _ in range(16):
                try:
                    ap.obj.close()
                    break
                except PytraceError:
                    continue

    def gone(self) -> list[tuple[str, str]]:
        """(label, what happened) of every point whose device was deleted (or
        its namespace with it): such a point records nothing any more.  Each
        point looks at most twice a second; remove() the ones listed."""
        out = []
        for label, ap in self.points.items():
            reason = ap.watch.gone() if ap.watch is not None else None
            if reason:
                out.append((label, reason))
        return out

    # -- reading ---------------------------------------------------------------------
    @property
    def lost(self) -> int:
        """Records the kernel could not queue because the ring was full (since open)."""
        return self._lost_closed + sum(v.value for v in self._lost_views.values())

    def batches(self, duration: float | None = None) -> Iterator[list[tuple]]:
        """Raw record tuples (field order: raw_fields), a batch per drain; empty on idle ticks."""
        return ring_batches(self.ring, duration)

    def drain(self) -> list[tuple]:
        return ring_drain(self.ring)

    def rows(self, batch: list[tuple]) -> list[tuple]:
        """Raw tuples -> store rows (ROW_FIELDS order), in bulk: the hot path of `record`."""
        i = self.idx
        i_ts, i_id, i_pt, i_pr, i_fam = i["ts_ns"], i["pkt_id"], i["point"], i["proto"], i["family"]
        i_sa, i_sp, i_da, i_dp = i["saddr"], i["sport"], i["daddr"], i["dport"]
        i_len, i_ipl, i_ns, i_if, i_cpu, i_enc = (i["len"], i["ip_len"], i["netns"], i["ifindex"],
                                                  i["cpu"], i["encap"])
        host, wall, labels, addr = self.host, self._wall, self.labels, self._addr
        return [(host, r[i_ts] + wall, labels.get(r[i_pt], str(r[i_pt])), r[i_id], r[i_pr],
                 addr(r[i_fam], r[i_sa]), r[i_sp], addr(r[i_fam], r[i_da]), r[i_dp], r[i_len], r[i_ipl],
                 r[i_ns], r[i_if], r[i_cpu], r[i_enc]) for r in batch]

    def make_record(self, raw: tuple) -> PacketRecord:
        i = self.idx
        fam = raw[i["family"]]
        return PacketRecord(raw[i["ts_ns"]] + self._wall, self.host,
                            self.labels.get(raw[i["point"]], str(raw[i["point"]])), raw[i["pkt_id"]],
                            raw[i["proto"]], addr_obj(fam or AF_INET, raw[i["saddr"]]), raw[i["sport"]],
                            addr_obj(fam or AF_INET, raw[i["daddr"]]), raw[i["dport"]], raw[i["len"]],
                            raw[i["ip_len"]], raw[i["netns"]], raw[i["ifindex"]], raw[i["cpu"]],
                            bool(raw[i["encap"]]))

    make_event = make_record        # what the sinks and replay decode with (--where)

    @property
    def wall_offset(self) -> int:
        """The record clock minus the kernel's monotonic clock, ns (fixed at open)."""
        return self._wall

    @property
    def start_ns(self) -> int:
        """The record clock when the tracer opened."""
        return self._start + self._wall

    # -- recordings (--record, pytrace replay) -------------------------------------------
    def points_snapshot(self) -> Any:
        """Which point id is which label, on which host, for every id this
        tracer gave (removed points too: their last records may still be
        read): what a recording keeps so that replay prints the labels.
        Published (sinks.snapshot) whenever the points change."""
        from ..sinks.snapshot import Series, Snapshot
        return Snapshot.now("vnet_points", [Series.of({"host": self.host, "point": label},
                                                      {"point_id": pid, "traced": int(label in self.points)})
                                            for pid, label in sorted(self.labels.items())])

    def apply_points(self, snap: Any) -> None:
        """Take the labels and host of a points_snapshot() (replay's stand-in tracer)."""
        for series in snap.series:
            labels, values = dict(series.labels), dict(series.values)
            self.labels[int(values["point_id"])] = labels["point"]
            self.host = labels["host"]

    def prepare_replay(self) -> None:
        """Replay's stand-in (an unopened tracer): the recording's record clock
        (event_source's epoch, which replay shares)."""
        from ..cli import cliutil
        epoch = cliutil.epoch()
        if epoch is not None:
            self._wall, self._start = epoch

    def event_source(self, tool: str = "vnet") -> Any:
        """This tracer as pytrace.sinks sees an event tool (for --record / --influx)."""
        from ..sinks import EventSource
        hooks = ",".join(sorted({ap.hook for ap in self.points.values()})) or "none"
        return EventSource(tool, f"{type(self).__module__}:{type(self).__qualname__}", RECORD,
                           tuple(self.raw_fields), self.layout.format, hooks,
                           (self._wall, self._start), self.make_record)

    def records(self, duration: float | None = None) -> Iterator[PacketRecord]:
        make = self.make_record
        for batch in self.batches(duration):
            for raw in batch:
                yield make(raw)
