"""vnet: per-hop packet latency in virtualized networks (vNetTracer, on a stock kernel).

    pytrace vnet record -c points.toml [-o vnet.db] [--ctl SOCKET]   trace, store records
    pytrace vnet report vnet.db [other.db ...] [--plot out.svg]       per-segment latency
    pytrace vnet demo                                                 two-host overlay, traced
    pytrace vnet ctl -s SOCKET add|remove|list|reload                 change a running record

Library: pytrace.vnet (config, tracer.VnetTracer, store, report, skew, demo).
Trace points are devices in network namespaces, each traced by tc clsact,
XDP or a device tracepoint; the same packet is recognised at every point by
an ID hashed in the kernel from its (inner, for VXLAN) headers.  Points can
be added and removed while `record` runs (SIGHUP re-reads the config file;
`ctl` talks to its --ctl socket) without stopping the others.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from typing import Any

from ..cli import cliutil
from ..cli.cliutil import bad_value, influx_url, int_range, netns_ref, output_file, positive_int, seconds, sqlite_file
from ..core.errors import PytraceError, UsageError, shown
from ..spec.devices import device_name
from ..spec import EVENTS, Option
from ..spec.commands import Command, CommandSpec, Records
from ..vnet.tracer import TRACEPOINT_HOOKS, VnetTracer, flow_text

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see cli/argparser.py)
    import argparse

NAME = "vnet"
SUMMARY = "per-hop packet latency across veth, bridges, VXLAN and hosts (vNetTracer-style)"
OBJECT = "vnet"

VARIANTS = VnetTracer.VARIANTS     # one per hook kind (tests/matrix.py reads a tool module's)

_DURATION = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)$")
_UNIT = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def duration_ns(text: str) -> int:
    """'250ms', '-1.5s', '40us', '0' -> nanoseconds."""
    t = text.strip()
    if t in ("0", "+0", "-0"):
        return 0
    m = _DURATION.match(t)
    if not m:
        raise bad_value(f"'{text}' is not a time offset (a number with ns, us, ms or s)")
    return round(float(m.group(1)) * _UNIT[m.group(2)])


def host_offset(text: str) -> tuple[str, int]:
    host, sep, value = text.partition("=")
    if not sep or not host:
        raise bad_value(f"'{text}': expected HOST=OFFSET, e.g. nodeB=-1.25ms")
    return host, duration_ns(value)


_ring_mb_range = int_range(1, 1024)     # a GiB of ring at most


def _label(text: str) -> str:
    """A host label of the records: a word (records, reports and InfluxDB tags carry it)."""
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise bad_value(f"'{text}' is not a host label (printable, no spaces)")
    return text


def _ctl_socket(text: str) -> str:
    """ctl's -s: the unix socket a recorder's --ctl made (a path that is no
    socket is a mistyped one, refused here rather than as "no recorder")."""
    if not text:
        raise bad_value("an empty socket path")
    if not cliutil.checking_host():
        return text
    import stat
    try:
        mode = os.stat(text).st_mode
    except OSError as exc:
        raise bad_value(f"'{text}': {exc.strerror} (the socket of a `pytrace vnet record --ctl SOCKET`)") from None
    if not stat.S_ISSOCK(mode):
        raise bad_value(f"'{text}' is not a socket (the socket of a `pytrace vnet record --ctl SOCKET`)")
    return text


_RATE = re.compile(r"(\d+(?:\.\d+)?)(?:[kmgt]i?)?(?:bit|bps)?", re.IGNORECASE)


def tc_rate(text: str) -> str:
    """A tc rate as `tc qdisc add ... tbf rate` takes it: 4mbit, 117kbit, 1gbps..."""
    m = _RATE.fullmatch(text)
    if not m or not float(m.group(1)) > 0:
        raise bad_value(f"'{text}' is not a tc rate (e.g. 4mbit, 117kbit, 1gbit)")
    return text


def ring_mb(text: str) -> int:
    n = _ring_mb_range(text)
    if n & (n - 1):
        raise bad_value(f"'{text}' is not a power of two")
    return n


ring_mb.range_text = _ring_mb_range.range_text      # type: ignore[attr-defined]


# Each -h ends with its examples (cli/argparser.ArgParser prints them), as
# BCC's tools do; the tool's own -h with every command's.
RECORD_EXAMPLES = (
    ("pytrace vnet record -c points.toml", "trace the config's points into vnet.db"),
    ("pytrace vnet record -c points.toml -o nodeB.db --host nodeB --ctl /run/vnet.sock",
     "one agent of several, changeable while it runs"),
    ("pytrace vnet record -c points.toml --clock-offset -3ms -d 10 -q", "a clock 3 ms behind, 10 s, store only"))
REPORT_EXAMPLES = (
    ("pytrace vnet report nodeA.db nodeB.db", "per-segment latency, the clock offset estimated"),
    ("pytrace vnet report nodeA.db nodeB.db --offset nodeB=-1.25ms --plot vnet.svg",
     "with a known offset, and a plot"),
    ("pytrace vnet report vnet.db --flows --json", "per flow too, as JSON"))
DEMO_EXAMPLES = (
    ("pytrace vnet demo", "two hosts, VXLAN between them, 200 echoes traced at 16 points"),
    ("pytrace vnet demo --tbf hA:ul0 --tbf-rate 1mbit --burst 10", "a slow underlay link: find it"),
    ("pytrace vnet demo -n 50 -o demo.db --plot demo.svg", "keep the store and a plot"))
CTL_EXAMPLES = (
    ("pytrace vnet ctl -s /run/vnet.sock list", "the points a record traces"),
    ("pytrace vnet ctl -s /run/vnet.sock add mid --device vx0 --netns hB --direction ingress --method tc",
     "attach one more point"),
    ("pytrace vnet ctl -s /run/vnet.sock remove mid", "detach it"),
    ("pytrace vnet ctl -s /run/vnet.sock reload", "re-read its config file, as SIGHUP does"))


def _released(command: Any) -> Any:
    """A command's run: none of them runs a loop that ends the CLI's hold on
    stops (cliutil.release_stops): record installs its own handlers (a stop
    sets a flag), the others stop where the stop lands."""
    def run(args: argparse.Namespace) -> int:
        cliutil.release_stops()
        return command(args)
    run.__module__ = command.__module__
    return run


def _note(text: str) -> None:
    sys.stderr.write(f"vnet: {text}\n")
    sys.stderr.flush()


def _sweep(namespaces=()) -> None:
    """Remove what killed pytrace processes left (core/leftovers.py), saying so."""
    from ..core import leftovers
    for line in leftovers.sweep(namespaces):
        _note(line)


# -- record --------------------------------------------------------------------------

HEADER = (f"{'TIME(s)':<11} {'POINT':<16} {'PKTID':<16} {'FLOW':<48} {'LEN':>5} "
          f"{'NETNS':<10} {'IFINDEX':>7} {'CPU':>3}\n")


def intro(args: argparse.Namespace) -> str:
    """record's column header (its records follow: _Lines); not with --json or -q."""
    return HEADER if args.command == "record" and not args.quiet else ""


class _Lines:
    """record's records as text lines (TIME(s): since the tracer opened) or
    --json, formatted in bulk from store rows (VnetTracer.rows): the live
    record and `pytrace replay` of its recording alike (source: the tracer,
    or replay's stand-in with the recording's clock and points)."""

    def __init__(self, source: Any, json_mode: bool):
        self.source = source
        self.json = json_mode
        self._flows: dict[tuple, str] = {}

    def __call__(self, batch: list[tuple]) -> str:
        return self.rows(self.source.rows(batch))

    def rows(self, rows: list[tuple]) -> str:
        if not rows:
            return ""
        if self.json:
            # spec/jsonout.py's convention: "time" (here the record clock: this host's
            # wall clock plus --clock-offset), "ts_ns" the kernel's monotonic ns; then
            # the record, its clock as "wall_ns" (what the store keeps as ts_ns)
            from ..cli.cliutil import rfc3339
            from ..vnet.tracer import PacketRecord
            offset, out = self.source.wall_offset, []
            for r in rows:
                d = PacketRecord.from_row(r).to_dict()
                wall = d.pop("ts_ns")
                out.append(json.dumps({"time": rfc3339(wall), "ts_ns": wall - offset, "wall_ns": wall, **d},
                                      separators=(",", ":")) + "\n")
            return "".join(out)
        flows, start, lines = self._flows, self.source.start_ns, []
        for r in rows:
            key = r[4:9]
            f = flows.get(key)
            if f is None:
                if len(flows) > 65536:
                    flows.clear()
                f = flows[key] = flow_text(*key)
            lines.append("%-11.6f %-16s %016x %-48s %5d %-10d %7d %3d\n"
                         % ((r[1] - start) / 1e9, r[2], r[3], f, r[9], r[11], r[12], r[13]))
        return "".join(lines)


def _renderer(source: Any, args: argparse.Namespace, out: Any) -> _Lines:
    return _Lines(source, args.json)


def _points(snap: Any, args: argparse.Namespace, source: Any) -> str:
    """A points snapshot among a recording's records: which id is which label from here on."""
    if source is not None and snap.tool == "vnet_points":
        source.apply_points(snap)
    return ""


def _record(args: argparse.Namespace) -> int:
    from ..vnet import config
    from ..vnet.control import ControlServer
    from ..vnet.store import SqliteStore
    from ..vnet.tracer import VnetTracer

    if not args.config:
        raise UsageError("record needs -c/--config FILE (the trace points)")
    cfg = config.load(args.config)
    host = args.host or cfg.host or os.uname().nodename
    _sweep(p.netns for p in cfg.points if p.netns)
    tracer = VnetTracer(cfg.points, cfg.selector, host=host, clock_offset_ns=args.clock_offset,
                        hook=args.hook, ring_bytes=args.ring_mb << 20)
    flags = {"stop": False, "hup": False}

    def on_stop(signum: int, frame: Any) -> None:
        flags["stop"] = True

    def on_hup(signum: int, frame: Any) -> None:
        flags["hup"] = True
    # From here a signal only sets a flag: the loop ends after a last drain, so
    # every record already in the ring reaches the store.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    sinks = getattr(cliutil, "active_sinks", lambda: None)()
    with SqliteStore(args.db) as store, tracer:
        ctl = ControlServer(args.ctl) if args.ctl else None
        try:
            if ctl:
                ctl.open()
            store.begin_agent(host, args.clock_offset, cfg.selector.describe(), sys.argv[1:])
            for ap in tracer.points.values():
                store.point_added(host, ap.info())
            points = len(tracer.labels)

            def publish_points() -> None:
                # which id is which label, for replay (the points change: published again)
                nonlocal points
                points = len(tracer.labels)
                if sinks is not None:
                    sinks.snapshot(tracer.points_snapshot())
            if sinks is not None:
                sinks.begin(tracer.event_source())
                publish_points()
            _note(f"tracing {len(tracer.points)} points as host {host} ({cfg.selector.describe()}); "
                  f"records to {args.db}" + (f"; control socket {args.ctl}" if args.ctl else "")
                  + ". Ctrl-C to end.")
            lines = None if args.quiet else SPEC.event_renderer(tracer, args, None)
            if lines is not None:
                sys.stdout.write(SPEC.intro(args))
                sys.stdout.flush()
            deadline = time.monotonic() + args.duration if args.duration else None

            def consume(batch: list[tuple]) -> None:
                if len(tracer.labels) != points:    # a point added since: its records may be here
                    publish_points()
                rows = tracer.rows(batch)
                store.write(rows)
                if sinks is not None:
                    sinks.events(batch)
                if lines is not None and rows:
                    sys.stdout.write(lines.rows(rows))
                    sys.stdout.flush()

            reported = 0
            for batch in tracer.batches():
                if batch:
                    consume(batch)
                lost = tracer.lost
                if sinks is not None:
                    sinks.lost(lost)
                if lost > reported:
                    _note(f"lost {lost - reported} records (ring buffer full; try --ring-mb)")
                    reported = lost
                for label, reason in tracer.gone():
                    # its records so far stay; the point itself can see nothing more
                    ap = tracer.points[label]
                    store.point_removed(host, label, ap.id, tracer.remove(label))
                    _note(f"point '{label}': {reason}; no longer traced")
                if flags["hup"]:
                    flags["hup"] = False
                    try:
                        _reload(tracer, args.config, store, host)
                    except PytraceError:
                        pass        # said so on stderr; the points are unchanged
                if ctl is not None:
                    for req, reply in ctl.pending():
                        reply(_control(req, tracer, store, host, args.config))
                if flags["stop"] or (deadline is not None and time.monotonic() >= deadline):
                    break
            consume(tracer.drain())
            store.end_agent(tracer.lost, tracer.now_ns())
        finally:
            if ctl is not None:
                ctl.close()
    _note(f"{store.written} records stored in {args.db}" + (f"; {tracer.lost} lost" if tracer.lost else ""))
    return 0


def _reload(tracer, path: str, store, host: str) -> tuple[list[str], list[str]]:
    from ..vnet import config
    try:
        cfg = config.load(path)
        before = {lbl: ap.id for lbl, ap in tracer.points.items()}
        now = tracer.now_ns()
        added, removed = tracer.apply(cfg.points, cfg.selector)
    except PytraceError as exc:
        _note(f"reload of {path} failed, the points are unchanged: {exc}")
        raise
    for lbl in removed:
        store.point_removed(host, lbl, before[lbl], now)
    for lbl in added:
        store.point_added(host, tracer.points[lbl].info())
    _note(f"reloaded {path}: {len(added)} added, {len(removed)} removed, {len(tracer.points)} traced")
    return added, removed


def _control(req: dict, tracer, store, host: str, config_path: str) -> dict[str, Any]:
    from ..vnet import config
    op = req.get("op")
    try:
        if op == "add":
            point = config.point_from_dict(req.get("point"), lambda key: "ctl add")
            ap = tracer.add(point)
            store.point_added(host, ap.info())
            _note(f"added point {point.label} ({ap.hook})")
            return {"ok": True, "label": point.label, "id": ap.id, "hook": ap.hook, "added_ns": ap.added_ns}
        if op == "remove":
            label = str(req.get("label"))
            ap = tracer.points.get(label)
            ts = tracer.remove(label)
            store.point_removed(host, label, ap.id, ts)
            _note(f"removed point {label}")
            return {"ok": True, "label": label, "removed_ns": ts}
        if op == "list":
            return {"ok": True, "host": host, "now_ns": tracer.now_ns(),
                    "points": [ap.info() for ap in tracer.points.values()]}
        if op == "reload":
            added, removed = _reload(tracer, config_path, store, host)
            return {"ok": True, "added": added, "removed": removed}
        raise UsageError(f"unknown request '{op}': add, remove, list or reload")
    except PytraceError as exc:
        return {"ok": False, "error": str(exc), "usage": exc.exit_code == 2}


# -- ctl ---------------------------------------------------------------------------------

def _ctl(args: argparse.Namespace) -> int:
    from ..vnet.control import request
    if args.op == "add":
        req: dict[str, Any] = {"op": "add", "point": {"label": args.label, "device": args.device,
                                                      "direction": args.direction, "method": args.method}}
        if args.netns:
            req["point"]["netns"] = args.netns
    elif args.op == "remove":
        req = {"op": "remove", "label": args.label}
    else:
        req = {"op": args.op}
    ans = request(args.socket, req)
    if not ans.get("ok"):
        raise (UsageError if ans.get("usage") else PytraceError)(ans.get("error", "failed"))
    if args.json:
        print(json.dumps(ans))
    elif args.op == "add":
        print(f"added {ans['label']} (hook {ans['hook']}), recording from {ans['added_ns']}")
    elif args.op == "remove":
        print(f"removed {ans['label']}, nothing recorded there after {ans['removed_ns']}")
    elif args.op == "list":
        print(f"{'LABEL':<20} {'DEVICE':<10} {'NETNS':<24} {'DIRECTION':<9} {'METHOD':<10} HOOK")
        for p in ans["points"]:
            print(f"{p['label']:<20} {p['device']:<10} {str(p['netns'] or '-'):<24} {p['direction']:<9} "
                  f"{p['method']:<10} {p['hook']}")
    else:
        print(f"reloaded: added {', '.join(ans['added']) or 'none'}; removed {', '.join(ans['removed']) or 'none'}")
    return 0


# -- report ------------------------------------------------------------------------------

def _report(args: argparse.Namespace) -> int:
    from ..vnet import report, store
    if not args.db and args.from_influx is None:
        raise UsageError("name at least one store (DB) or --from-influx URL")
    rows: list = []
    points: list = []       # the points tables: which points are egress ones (the qdisc note)
    for path in args.db:
        rows.extend(store.read_sqlite(path))
        points.extend(store.read_points(path))
    if args.from_influx is not None:
        rows.extend(store.read_influx(args.from_influx))
    if not rows:
        raise PytraceError("no records in " + ", ".join(args.db + ([args.from_influx] if args.from_influx else [])))
    # no points tables (InfluxDB, or a store without them): the report cannot name the egress points
    rep = report.analyze(rows, reference=args.reference, manual=dict(args.offset), points=points or None)
    _emit_report(rep, args)
    return 0


def _emit_report(rep, args: argparse.Namespace, extra: dict | None = None) -> None:
    if args.plot:
        from ..vnet import plot
        try:
            with open(args.plot, "w") as fh:
                fh.write(plot.svg(rep))
        except OSError as exc:
            raise PytraceError(f"--plot {args.plot}: {exc.strerror}") from None
    if args.json:
        print(json.dumps({**(extra or {}), **rep.to_dict()}))
    else:
        sys.stdout.write(rep.render(per_flow=args.flows))
        if args.plot:
            sys.stdout.write(f"Plot: {args.plot}\n")


# -- demo ------------------------------------------------------------------------------------

def _demo(args: argparse.Namespace) -> int:
    from ..vnet import demo, report
    from ..vnet.tracer import VnetTracer

    tbf = None
    if args.tbf is not None:
        role, _, dev = args.tbf.partition(":")
        if role not in ("hA", "hB", "cA", "cB") or dev not in ("ul0", "vx0", "veth0", "br0", "eth0"):
            raise UsageError(f"--tbf {shown(args.tbf)}: HOST:DEV with HOST hA, hB, cA or cB and DEV ul0, vx0, "
                             "veth0, br0 (hosts) or eth0 (containers)")
        tbf = (role, dev)
    sinks = getattr(cliutil, "active_sinks", lambda: None)()
    _sweep()
    with demo.Topology() as topo:
        if tbf:
            topo.tbf(*tbf, rate=args.tbf_rate)
        selector = topo.selector(args.sample)
        with VnetTracer(topo.points(), selector, host="demo", hook=args.hook) as tracer:
            # what `record` keeps besides the records (the namespaces are gone by the time the store is written)
            points = [{**ap.info(), "host": "demo"} for ap in tracer.points.values()]
            started = time.time_ns()
            if not args.json:
                _note(f"topology up ({', '.join(topo.ns.values())}); tracing {len(tracer.points)} points; "
                      f"sending {args.count} UDP datagrams cA -> cB and back")
            if sinks is not None:
                sinks.begin(tracer.event_source())
                sinks.snapshot(tracer.points_snapshot())    # replay names the points (as record's)
            echo = topo.udp_echo(args.count, size=args.size, burst=args.burst)
            demo.settle()
            batch = tracer.drain()
            rows = tracer.rows(batch)
            if sinks is not None:
                sinks.events(batch)
                sinks.lost(tracer.lost)
            lost = tracer.lost
            ended = tracer.now_ns()
    if args.db:
        from ..vnet.store import SqliteStore
        with SqliteStore(args.db) as st:
            # the same three tables as a record's: the agent (host "demo"), its points, the records
            st.begin_agent("demo", 0, selector.describe(), sys.argv[1:], start_ns=started)
            for info in points:
                st.point_added("demo", info)
            st.write(rows)
            st.end_agent(lost, ended)
    from ..vnet.store import Row
    rep = report.analyze([Row(*r) for r in rows], points=points)
    if not args.json:
        print(f"Traffic: {echo.sent} datagrams of {echo.size} bytes cA -> cB, {echo.received} echoes back"
              + (f"; tbf {args.tbf_rate} on {args.tbf}" if tbf else "") + (f"; {lost} records lost" if lost else ""))
    _emit_report(rep, args, {"traffic": {"sent": echo.sent, "echoed": echo.echoed, "received": echo.received,
                                         "size": echo.size, "tbf": args.tbf, "lost": lost}})
    return 0


# -- the declared command line (pytrace.spec) --------------------------------------------------


RECORD = Command(
    "record", "trace the points of a config file, store the records", run=_released(_record), streams=True,
    description="Trace the points of a TOML config file; store every record (SQLite, and InfluxDB with "
                "--influx). SIGHUP re-reads the config file.",
    options=(
        Option("-c", "--config", metavar="FILE", help="trace points and selector (TOML; required)"),
        Option("-o", "--db", default="vnet.db", type=sqlite_file, metavar="FILE",
               help="SQLite store (default vnet.db; appended)"),
        Option("--host", metavar="NAME", type=_label,
               help="host label of the records (default: config host, else hostname)"),
        Option("--clock-offset", type=duration_ns, default=0, metavar="DUR",
               help="add DUR (e.g. 250ms, -3us) to every timestamp: simulate a host with a skewed clock"),
        Option("--ctl", metavar="SOCKET", type=output_file, help="listen for `pytrace vnet ctl` on this unix socket"),
        Option("-d", "--duration", type=seconds, metavar="SEC", help="stop after SEC seconds"),
        Option("-q", "--quiet", action="store_true", help="store only, print no records"),
        Option("--ring-mb", type=ring_mb, default=8, metavar="MB", help="ring buffer size (power of two)")),
    common=True,
    # `--clock-offset -3ms`: a negative duration is a value, not a flag
    dash_values=r"^-\d+(?:\.\d+)?\s*(?:ns|us|µs|ms|s)$",
    examples=RECORD_EXAMPLES)

REPORT = Command(
    "report", "per-segment latency from stored records", run=_released(_report),
    instead="reads the stores that record wrote (SQLite, InfluxDB) and prints one report: it loads no BPF",
    description="Reconstruct each packet's path and give per-segment latency (overall and per flow), the "
                "segment holding most of it, and a plot.",
    options=(
        Option("db", nargs="*", metavar="DB", help="SQLite stores (one per agent, or shared)"),
        Option("--from-influx", metavar="URL", type=influx_url("--from-influx"),
               help="read the records from InfluxDB 1.x (http://HOST:PORT/DATABASE)"),
        Option("--offset", type=host_offset, action="append", default=[], metavar="HOST=DUR",
               help="use this clock offset for HOST (relative to the reference) instead of estimating it"),
        Option("--reference", metavar="HOST", help="the host whose clock the others are aligned to"),
        Option("--flows", action="store_true", help="also a table per flow"),
        Option("--plot", metavar="FILE.svg", type=output_file, help="write the per-segment distributions as SVG"),
        Option("--json", action="store_true", help="the report as one JSON object"),
        Option("-v", "--verbose", action="store_true", help="details on errors")),
    examples=REPORT_EXAMPLES)

DEMO = Command(
    "demo", "build a two-host container overlay, trace it, report", run=_released(_demo),
    instead="builds its own namespaces, sends a bounded echo through them and ends with a report of what it "
            "traced (--json: one report object), not a stream of records",
    description="Two hosts (netns), each with a container netns on a veth pair to a bridge, VXLAN between the "
                "hosts over an underlay veth; a bounded UDP echo between the containers, traced at all 16 hops; "
                "the report. Everything is removed on exit.",
    options=(
        Option("-n", "--count", type=int_range(1, 1_000_000), default=200,
               help="datagrams from cA to cB (default 200)"),
        Option("--size", type=int_range(16, 1400), default=200, help="UDP payload bytes (default 200)"),
        Option("--burst", type=int_range(1, 1024), default=1, help="datagrams sent before waiting for echoes"),
        Option("--sample", type=positive_int, default=1, help="trace 1 flow in N"),
        Option("--tbf", metavar="HOST:DEV", help="add a tbf qdisc on this hop first (e.g. hA:ul0)"),
        Option("--tbf-rate", default="4mbit", type=tc_rate, metavar="RATE", help="its rate (default 4mbit)"),
        Option("-o", "--db", metavar="FILE", type=sqlite_file, help="also keep the records in this SQLite store"),
        Option("--plot", metavar="FILE.svg", type=output_file, help="write the per-segment distributions as SVG"),
        Option("--flows", action="store_true", help="also a table per flow")),
    common=True,
    examples=DEMO_EXAMPLES)

CTL = Command(
    "ctl", "add/remove/list points of a running record", run=_released(_ctl),
    instead="talks to a running `vnet record` over its --ctl socket: it loads no BPF",
    description="Talk to a `pytrace vnet record --ctl SOCKET`.",
    options=(
        Option("-s", "--socket", required=True, metavar="SOCKET", type=_ctl_socket,
               help="the recorder's --ctl socket"),
        Option("--json", action="store_true", help="print the recorder's answer as JSON"),
        Option("-v", "--verbose", action="store_true", help="details on errors")),
    examples=CTL_EXAMPLES,
    dest="op",
    commands=(
        Command("add", "attach a new point", instead="asks the recorder to attach a point", options=(
            Option("label"),
            Option("--device", required=True, type=device_name),
            Option("--netns", type=netns_ref, help="ip netns name, path or inode (default: the recorder's)"),
            Option("--direction", required=True, choices=("ingress", "egress")),
            Option("--method", required=True,
                   choices=("tc", "xdp", "tracepoint", "net_dev_queue", "netif_receive_skb")))),
        Command("remove", "detach a point", instead="asks the recorder to detach a point",
                options=(Option("label"),)),
        Command("list", "the points being traced", instead="asks the recorder for its points"),
        Command("reload", "re-read the config file (like SIGHUP)", instead="asks the recorder to reload")))

SPEC = CommandSpec(
    NAME, SUMMARY, VnetTracer, EVENTS,
    description="Per-hop packet latency in virtualized networks: record packets at trace points (tc, XDP, "
                "device tracepoints) in any network namespace, then break the latency down per segment of "
                "each packet's path.",
    commands=(RECORD, REPORT, DEMO, CTL), required=True,
    hooks=TRACEPOINT_HOOKS,      # --hook applies to the tracepoint points (tc and xdp ones have one hook each)
    # record's --json, one object per record (_Lines)
    records=Records("ts_ns", "wall_ns", "host", "point", "pkt_id", "proto", "saddr", "sport", "daddr", "dport",
                    "length", "ip_len", "netns", "ifindex", "cpu", "encap", time="ts_ns",
                    kinds={"ts_ns": "int", "wall_ns": "int", "host": "str", "point": "str", "pkt_id": "hex",
                           "proto": "str", "saddr": "address", "sport": "int", "daddr": "address",
                           "dport": "int", "length": "int", "ip_len": "int", "netns": "int", "ifindex": "int",
                           "cpu": "int", "encap": "bool"}),
    renderer=_renderer, text=_points, intro=intro,
    examples=RECORD_EXAMPLES[:1] + REPORT_EXAMPLES[:1] + DEMO_EXAMPLES[:2] + CTL_EXAMPLES[:1],
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command line (SPEC's), for callers of the module's old entry point."""
    SPEC.add_arguments(p)
