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

from ..core import cliutil
from ..core.cliutil import add_common, bad_value, int_range, netns_ref, output_file, positive_int, seconds, sqlite_file
from ..core.errors import PytraceError, UsageError
from ..core.netdev import device_name
from ..vnet.tracer import EGRESS_TP, TC, XDP, flow_text

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "vnet"
SUMMARY = "per-hop packet latency across veth, bridges, VXLAN and hosts (vNetTracer-style)"
OBJECT = "vnet"
HOOKS = ("tp_btf", "raw_tp", "tracepoint")     # --hook applies to the tracepoint points
VARIANTS = (*TC, *XDP, *EGRESS_TP)             # one per hook kind, for `pytrace list`

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


def negative_durations(parser: argparse.ArgumentParser) -> None:
    """Let this parser take '-3ms' as a value (`--clock-offset -3ms`), not as
    an unknown option.  argparse treats a word that starts with '-' as an
    option unless its negative-number pattern matches it (and the parser has
    no option that looks like a negative number): a duration is added to
    that pattern, so that only the `=` form would otherwise work."""
    numbers = parser._negative_number_matcher
    parser._negative_number_matcher = re.compile(
        rf"(?:{numbers.pattern})|(?:^-\d+(?:\.\d+)?\s*(?:ns|us|µs|ms|s)$)")


_ring_mb_range = int_range(1, 1024)     # a GiB of ring at most


def _label(text: str) -> str:
    """A host label of the records: a word (records, reports and InfluxDB tags carry it)."""
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise bad_value(f"'{text}' is not a host label (printable, no spaces)")
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


# Each -h ends with its examples (core/argparser.ArgParser prints them), as
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
    ("pytrace vnet ctl -s /run/vnet.sock remove mid", "detach it"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Per-hop packet latency in virtualized networks: record packets at trace points "
                     "(tc, XDP, device tracepoints) in any network namespace, then break the latency down "
                     "per segment of each packet's path.")
    p.set_defaults(verbose=False, ebpf=False, btf=None, json=False, hook=None)
    p.examples = RECORD_EXAMPLES[:1] + REPORT_EXAMPLES[:1] + DEMO_EXAMPLES[:2] + CTL_EXAMPLES[:1]
    sub = p.add_subparsers(dest="command", metavar="{record,report,demo,ctl}", required=True)

    r = sub.add_parser("record", help="trace the points of a config file, store the records",
                       description="Trace the points of a TOML config file; store every record (SQLite, "
                                   "and InfluxDB with --influx). SIGHUP re-reads the config file.")
    r.add_argument("-c", "--config", metavar="FILE", help="trace points and selector (TOML; required)")
    r.add_argument("-o", "--db", default="vnet.db", type=sqlite_file, metavar="FILE", help="SQLite store (default vnet.db; appended)")
    r.add_argument("--host", metavar="NAME", type=_label, help="host label of the records (default: config host, else hostname)")
    r.add_argument("--clock-offset", type=duration_ns, default=0, metavar="DUR",
                   help="add DUR (e.g. 250ms, -3us) to every timestamp: simulate a host with a skewed clock")
    r.add_argument("--ctl", metavar="SOCKET", type=output_file, help="listen for `pytrace vnet ctl` on this unix socket")
    r.add_argument("-d", "--duration", type=seconds, metavar="SEC", help="stop after SEC seconds")
    r.add_argument("-q", "--quiet", action="store_true", help="store only, print no records")
    r.add_argument("--ring-mb", type=ring_mb, default=8, metavar="MB", help="ring buffer size (power of two)")
    add_common(r, HOOKS)
    negative_durations(r)
    r.examples = RECORD_EXAMPLES

    rp = sub.add_parser("report", help="per-segment latency from stored records",
                        description="Reconstruct each packet's path and give per-segment latency "
                                    "(overall and per flow), the segment holding most of it, and a plot.")
    rp.add_argument("db", nargs="*", metavar="DB", help="SQLite stores (one per agent, or shared)")
    rp.add_argument("--from-influx", metavar="URL", help="read the records from InfluxDB 1.x "
                                                         "(http://HOST:PORT/DATABASE)")
    rp.add_argument("--offset", type=host_offset, action="append", default=[], metavar="HOST=DUR",
                    help="use this clock offset for HOST (relative to the reference) instead of estimating it")
    rp.add_argument("--reference", metavar="HOST", help="the host whose clock the others are aligned to")
    rp.add_argument("--flows", action="store_true", help="also a table per flow")
    rp.add_argument("--plot", metavar="FILE.svg", type=output_file, help="write the per-segment distributions as SVG")
    rp.add_argument("--json", action="store_true", help="the report as one JSON object")
    rp.add_argument("-v", "--verbose", action="store_true", help="details on errors")
    rp.examples = REPORT_EXAMPLES

    d = sub.add_parser("demo", help="build a two-host container overlay, trace it, report",
                       description="Two hosts (netns), each with a container netns on a veth pair to a "
                                   "bridge, VXLAN between the hosts over an underlay veth; a bounded UDP echo "
                                   "between the containers, traced at all 16 hops; the report. Everything "
                                   "is removed on exit.")
    d.add_argument("-n", "--count", type=int_range(1, 1_000_000), default=200, help="datagrams from cA to cB (default 200)")
    d.add_argument("--size", type=int_range(16, 1400), default=200, help="UDP payload bytes (default 200)")
    d.add_argument("--burst", type=int_range(1, 1024), default=1, help="datagrams sent before waiting for echoes")
    d.add_argument("--sample", type=positive_int, default=1, help="trace 1 flow in N")
    d.add_argument("--tbf", metavar="HOST:DEV", help="add a tbf qdisc on this hop first (e.g. hA:ul0)")
    d.add_argument("--tbf-rate", default="4mbit", type=tc_rate, metavar="RATE", help="its rate (default 4mbit)")
    d.add_argument("-o", "--db", metavar="FILE", type=sqlite_file, help="also keep the records in this SQLite store")
    d.add_argument("--plot", metavar="FILE.svg", type=output_file, help="write the per-segment distributions as SVG")
    d.add_argument("--flows", action="store_true", help="also a table per flow")
    add_common(d, HOOKS)
    d.examples = DEMO_EXAMPLES

    c = sub.add_parser("ctl", help="add/remove/list points of a running record",
                       description="Talk to a `pytrace vnet record --ctl SOCKET`.")
    c.add_argument("-s", "--socket", required=True, metavar="SOCKET", help="the recorder's --ctl socket")
    c.add_argument("--json", action="store_true", help="print the recorder's answer as JSON")
    c.add_argument("-v", "--verbose", action="store_true", help="details on errors")
    c.examples = CTL_EXAMPLES
    ops = c.add_subparsers(dest="op", metavar="{add,remove,list,reload}", required=True)
    a = ops.add_parser("add", help="attach a new point")
    a.add_argument("label")
    a.add_argument("--device", required=True, type=device_name)
    a.add_argument("--netns", type=netns_ref, help="ip netns name, path or inode (default: the recorder's)")
    a.add_argument("--direction", required=True, choices=("ingress", "egress"))
    a.add_argument("--method", required=True,
                   choices=("tc", "xdp", "tracepoint", "net_dev_queue", "netif_receive_skb"))
    rm = ops.add_parser("remove", help="detach a point")
    rm.add_argument("label")
    ops.add_parser("list", help="the points being traced")
    ops.add_parser("reload", help="re-read the config file (like SIGHUP)")


def run(args: argparse.Namespace) -> int:
    # None of the subcommands runs a loop that ends the CLI's hold on stops
    # (cliutil.release_stops): record installs its own handlers (a stop sets a
    # flag), the others stop where the stop lands.
    cliutil.release_stops()
    return {"record": _record, "report": _report, "demo": _demo, "ctl": _ctl}[args.command](args)


def _note(text: str) -> None:
    sys.stderr.write(f"vnet: {text}\n")
    sys.stderr.flush()


def _sweep(namespaces=()) -> None:
    """Remove what killed pytrace processes left (core/leftovers.py), saying so."""
    from ..core import leftovers
    for line in leftovers.sweep(namespaces):
        _note(line)


# -- record --------------------------------------------------------------------------

class _Printer:
    """Records as text lines (or JSON), formatted in bulk from store rows."""

    def __init__(self, json_mode: bool, start_ns: int):
        self.json = json_mode
        self.start = start_ns
        self._flows: dict[tuple, str] = {}
        if not json_mode:
            sys.stdout.write(f"{'TIME(s)':<11} {'POINT':<16} {'PKTID':<16} {'FLOW':<48} {'LEN':>5} "
                             f"{'NETNS':<10} {'IFINDEX':>7} {'CPU':>3}\n")
            sys.stdout.flush()

    def rows(self, rows: list[tuple]) -> None:
        if not rows:
            return
        if self.json:
            from ..vnet.tracer import PacketRecord
            text = "".join(json.dumps(PacketRecord.from_row(r).to_dict(), separators=(",", ":")) + "\n"
                           for r in rows)
        else:
            flows, start, lines = self._flows, self.start, []
            for r in rows:
                key = r[4:9]
                f = flows.get(key)
                if f is None:
                    if len(flows) > 65536:
                        flows.clear()
                    f = flows[key] = flow_text(*key)
                lines.append("%-11.6f %-16s %016x %-48s %5d %-10d %7d %3d\n"
                             % ((r[1] - start) / 1e9, r[2], r[3], f, r[9], r[11], r[12], r[13]))
            text = "".join(lines)
        sys.stdout.write(text)
        sys.stdout.flush()


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
            if sinks is not None:
                sinks.begin(tracer.event_source())
            _note(f"tracing {len(tracer.points)} points as host {host} ({cfg.selector.describe()}); "
                  f"records to {args.db}" + (f"; control socket {args.ctl}" if args.ctl else "")
                  + ". Ctrl-C to end.")
            printer = None if args.quiet else _Printer(args.json, tracer.now_ns())
            deadline = time.monotonic() + args.duration if args.duration else None

            def consume(batch: list[tuple]) -> None:
                rows = tracer.rows(batch)
                store.write(rows)
                if sinks is not None:
                    sinks.events(batch)
                if printer is not None:
                    printer.rows(rows)

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
    if not args.db and not args.from_influx:
        raise UsageError("name at least one store (DB) or --from-influx URL")
    rows: list = []
    points: list = []       # the points tables: which points are egress ones (the qdisc note)
    for path in args.db:
        rows.extend(store.read_sqlite(path))
        points.extend(store.read_points(path))
    if args.from_influx:
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
            raise UsageError(f"--tbf {args.tbf}: HOST:DEV with HOST hA, hB, cA or cB and DEV ul0, vx0, "
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
