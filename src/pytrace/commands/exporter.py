"""`pytrace exporter --config FILE [--listen HOST:PORT] [--allow-host NAME]`: tools' aggregates as Prometheus metrics.

The config (TOML) names which tools run and what becomes a metric:

    [exporter]
    listen = "127.0.0.1:9435"          # optional; --listen wins

    [[metric]]
    tool = "tcprtt"                    # in-kernel log2 histogram -> Prometheus histogram
    name = "web_rtt_seconds"           # optional (default pytrace_tcp_rtt_seconds)
    labels = { service = "web" }       # optional constant labels
    options = { lport = 8080, by_raddr = true }   # the tool's library options

    [[metric]]
    tool = "tcpstates"                 # an event tool: its events are counted
    count_by = ["newstate"]            # event fields that become labels
    options = { lports = [8080] }

    [[metric]]
    tool = "tcpaccept"                 # whose: with a field of core/containers.Labels
    count_by = ["container", "pod"]    # (container, container_id, runtime, cgroup, pod,
                                       # namespace...), labels=True is implied
    options = { container = ["web", "db"] }   # the tool's filters too (cgroup, netns...)

    [[metric]]
    tool = "tcplife"                   # an event field as a histogram
    observe = "ms"                     # buckets le = 2^i ms ...
    scale = 0.001                      # ... exposed in seconds
    name = "tcp_session_seconds"

Read when Prometheus scrapes /metrics (sinks/prometheus.py MAP_COLLECTORS):
  any table, top or histogram tool (sofamily, socketio, skbdrop, count, nstat,
             so1stbyte, soconnlat, netsize, qdisclat, tcpsynbl, ...): what its
             output shows each interval, from its SPEC, never reset: each row's
             numbers as counters pytrace_<tool>_<value>_total (labelled by the
             row; count_by sums over the other labels), each histogram as a
             Prometheus histogram pytrace_<tool>_seconds (or _bytes), labelled
             by what it is for; a mixed tool (sockrmem) also counts its events
  tcprtt     histogram pytrace_tcp_rtt_seconds (labels laddr/raddr with by_laddr/by_raddr)
  softirqs   pytrace_softirq_runs_total, _time_seconds_total, and with dist=true the
             histogram pytrace_softirq_duration_seconds (label softirq)
  tcpsubnet  pytrace_tcp_subnet_sent_bytes_total (label subnet)
  tcptop     pytrace_tcp_sent_bytes_total, _received_bytes_total (labels: count_by
             among pid, comm, laddr, lport, raddr, rport), pytrace_tcp_missed_calls_total
(`name` replaces the pytrace_... prefix.)  Any event-streaming tool (tcpstates,
tcpconnect, tcpaccept, tcpretrans, tcpdrop, tcplife, tcpconnlat, ...) streams
into the exporter, which counts its events: <name>_total, default
pytrace_<tool>_events_total, labelled by the count_by fields (e.g. tcpdrop's
reason), or with observe a histogram of one numeric field; plus <name>_lost_total
for events the kernel could not queue.  A config the exporter cannot use
exits with status 2 and names the line at fault.

Only requests addressed to the listen address are answered (localhost too
when it is loopback; any IP address and this machine's name when it is
0.0.0.0 or ::): a web page cannot read the metrics by DNS rebinding.
--allow-host NAME adds a name Prometheus scrapes it by ('*': any).
"""

from __future__ import annotations

import http.server
import logging
import re
import socket
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import Any

from .. import tools as registry
from ..cli import cliutil
from ..cli.argparser import ArgParser
from ..core.errors import PytraceError, UsageError, shown
from ..core.httpserve import QuietServer, refused
from ..core.httpserve import make_server as serve

DEFAULT_LISTEN = "127.0.0.1:9435"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
METRIC_KEYS = {"tool", "name", "help", "labels", "options", "count_by", "observe", "scale"}
EXPORTER_KEYS = {"listen"}


# -- configuration -----------------------------------------------------------------

@dataclass
class Entry:
    index: int
    tool: str
    cls: type
    options: dict[str, Any]
    name: str
    help: str | None
    labels: dict[str, str]
    count_by: list[str] = field(default_factory=list)
    collector_cls: Any = None     # a MapCollector class, or None for counted events
    observe: str | None = None    # event tools: a numeric field -> histogram
    scale: float = 1.0


@dataclass
class Config:
    path: str
    listen: str | None
    entries: list[Entry]


class _Lines:
    """Finds the line a config error is about (tomllib gives no positions)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers = [i for i, l in enumerate(self.lines) if re.match(r"\s*\[", l)]

    def _block(self, header: re.Pattern, nth: int = 0) -> tuple[int, int] | None:
        found = [i for i in self.headers if header.match(self.lines[i])]
        if nth >= len(found):
            return None
        start = found[nth]
        after = [i for i in self.headers if i > start and not re.match(r"\s*\[\s*metric\.", self.lines[i])]
        return start, after[0] if after else len(self.lines)

    def find(self, table: str, nth: int = 0, *path: str) -> int:
        """1-based line of table[nth].path... (the closest line that can be found)."""
        pat = re.compile(r"\s*\[\[\s*metric\s*\]\]") if table == "metric" else \
            re.compile(rf"\s*\[\s*{re.escape(table)}\s*\]")
        block = self._block(pat, nth)
        if block is None:
            return 1
        pos, end = block
        for key in path:
            key_re = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*=|^\s*\[\s*{table}\.{re.escape(key)}\s*\]")
            for i in range(pos, end):
                if key_re.search(self.lines[i]):
                    pos = i
                    break
            else:
                break
        return pos + 1


def load_config(path: str) -> Config:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise PytraceError("reading the config needs Python 3.11 (tomllib) or the tomli package") from None
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise UsageError(f"--config {shown(path)}: {exc.strerror}") from None
    text = raw.decode(errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        where = f"line {m.group(1)}" if m else "line ?"
        if m is None and "end of document" in msg:
            where = f"line {len(text.splitlines()) or 1}"
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        raise UsageError(f"{path}: {where}: {msg}") from None
    lines = _Lines(text)

    def fail(line: int, msg: str) -> UsageError:
        return UsageError(f"{path}: line {line}: {msg}")

    for key in data:
        if key not in ("exporter", "metric"):
            line = next((i + 1 for i, l in enumerate(lines.lines)
                         if re.match(rf"\s*(\[+\s*)?{re.escape(key)}\b", l)), 1)
            raise fail(line, f"unknown setting '{key}' (expected [exporter] and [[metric]] tables)")
    exp = data.get("exporter", {})
    if not isinstance(exp, dict):
        raise fail(lines.find("exporter"), "exporter must be a table: [exporter]")
    for key in exp:
        if key not in EXPORTER_KEYS:
            raise fail(lines.find("exporter", 0, key), f"unknown setting exporter.{key} (known: listen)")
    listen = exp.get("listen")
    if listen is not None and not isinstance(listen, str):
        raise fail(lines.find("exporter", 0, "listen"), "listen must be a string \"HOST:PORT\"")
    if listen is not None:
        try:
            parse_listen(listen)
        except UsageError as exc:
            raise fail(lines.find("exporter", 0, "listen"), str(exc)) from None
    metrics = data.get("metric", [])
    if not isinstance(metrics, list) or not metrics:
        raise fail(1, "no [[metric]] table: name at least one tool to export")
    entries, names = [], {}
    for k, m in enumerate(metrics):
        entries.append(_entry(k, m, lines, fail, names))
    return Config(path, listen, entries)


def _entry(k: int, m: dict, lines: _Lines, fail: Any, names: dict[str, int]) -> Entry:
    def at(*key: str) -> int:
        return lines.find("metric", k, *key)

    for key in m:
        if key not in METRIC_KEYS:
            raise fail(at(key), f"unknown setting '{key}' in [[metric]] (known: {', '.join(sorted(METRIC_KEYS))})")
    tool = m.get("tool")
    if not isinstance(tool, str):
        raise fail(at("tool") if "tool" in m else at(), "[[metric]] needs tool = \"<tool name>\"")
    if not registry.exists(tool):
        raise fail(at("tool"), f"unknown tool '{tool}' (pytrace list shows the tools)")
    from ..core.stream import EventTracer
    from ..sinks.prometheus import MAP_COLLECTORS, spec_collector
    declared = registry.command(tool)      # its SPEC (or a legacy module alike): tracer and event fields
    cls = declared.tracer
    collector_cls = MAP_COLLECTORS.get(tool)
    spec = declared.spec
    if collector_cls is None and spec is not None and (spec.kind != "event stream" or spec.mixed):
        collector_cls = spec_collector(spec)     # its interval output, from the SPEC
    if cls is None or (collector_cls is None and not issubclass(cls, EventTracer)):
        raise fail(at("tool"), f"{tool} has no in-kernel aggregate the exporter reads and streams no events")

    options = m.get("options", {})
    if not isinstance(options, dict):
        raise fail(at("options"), "options must be a table, e.g. options = { lport = 8080 }")
    labels = m.get("labels", {})
    if not isinstance(labels, dict):
        raise fail(at("labels"), "labels must be a table, e.g. labels = { service = \"web\" }")
    for lk, lv in labels.items():
        if not LABEL_NAME.match(lk) or lk.startswith("__") or lk == "le":
            raise fail(at("labels", lk), f"'{lk}' is not a usable label name")
        if not isinstance(lv, str):
            raise fail(at("labels", lk), f"label {lk} must be a string")
    count_by = m.get("count_by", [])
    if not isinstance(count_by, list) or not all(isinstance(x, str) for x in count_by):
        raise fail(at("count_by"), "count_by must be a list of field names")
    if collector_cls is not None:
        known: set[str] | None = set(collector_cls.GROUP_FIELDS)
        if count_by and not known:
            raise fail(at("count_by"), f"count_by is for event tools and tables; {tool} exports "
                       "its in-kernel aggregate as it is")
        for key in ("observe", "scale"):
            if key in m:
                raise fail(at(key), f"{key} is for event tools; {tool} exports its in-kernel aggregate")
    else:
        known = declared.event_fields()
        if "labels" in getattr(cls, "SCOPE", ()):
            # whose the events were (core/containers.Labels): counted by container, pod...
            from ..core.containers import Labels
            label_fields = set(Labels.__dataclass_fields__)
            if known is not None:
                known = known | label_fields
            if label_fields & set(count_by):
                options = {**options, "labels": True}
    for f in count_by:
        if known is not None and f not in known:
            raise fail(at("count_by"), f"{tool} has no field '{f}' to count by (fields: {', '.join(sorted(known))})")
    observe = m.get("observe")
    if observe is not None and (not isinstance(observe, str) or (known is not None and observe not in known)):
        raise fail(at("observe"), f"observe: {tool} events have no field {observe!r}"
                   + (f" (fields: {', '.join(sorted(known))})" if known else ""))
    if observe is not None and not declared.numeric_field(observe):
        raise fail(at("observe"), f"observe: {tool}'s {observe} is not a number")
    scale = m.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise fail(at("scale"), "scale must be a positive number (e.g. 0.001 for ms -> seconds)")
    if "scale" in m and observe is None:
        raise fail(at("scale"), "scale goes with observe")
    dynamic = collector_cls.dynamic_labels(options, count_by) if collector_cls else count_by
    clash = set(labels) & set(dynamic)
    if clash:
        raise fail(at("labels"), f"label {sorted(clash)[0]} is already set by the metric itself")
    if len(set(dynamic)) != len(dynamic):
        raise fail(at("count_by"), "count_by names a field twice")

    if collector_cls is not None:
        default_name = collector_cls.NAME
    elif observe is not None:
        default_name = f"pytrace_{tool}_{observe}"
    else:
        default_name = f"pytrace_{tool}_events_total"
    name = m.get("name", default_name)
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise fail(at("name"), f"'{name}' is not a valid Prometheus metric name")
    if collector_cls is None and observe is None and not name.endswith("_total"):
        name += "_total"           # counters are exposed as <name>_total anyway
    if name in names:
        raise fail(at("name") if "name" in m else at(), f"metric {name} is already exported by the "
                   f"[[metric]] at line {lines.find('metric', names[name])}")
    names[name] = k
    help_text = m.get("help")
    if help_text is not None and not isinstance(help_text, str):
        raise fail(at("help"), "help must be a string")

    # the library object validates its own options: build it now (nothing is loaded yet)
    for opt, value in options.items():
        want = _option_types(cls).get(opt)
        if want and not isinstance(value, want):
            raise fail(at("options", opt), f"{tool} option {opt} must be "
                       f"{' or '.join(sorted({_TYPE_WORDS.get(t, t.__name__) for t in want}))}")
    try:
        cls(**options)
    except TypeError as exc:
        bad = re.search(r"argument '(\w+)'", str(exc))
        raise fail(at("options", bad.group(1)) if bad else at("options"),
                   f"{tool} options: {bad.group(1) + ' is not an option' if bad else exc}") from None
    except (PytraceError, ValueError) as exc:
        raise fail(at("options"), f"{tool} options: {exc}") from None
    return Entry(k, tool, cls, dict(options), name, help_text, dict(labels), list(count_by), collector_cls,
                 observe, float(scale))


_TYPE_WORDS = {int: "an integer", bool: "true or false", str: "a string", float: "a number", list: "a list"}


def _option_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Accepted Python types of each constructor option, from its annotations."""
    out: dict[str, tuple[type, ...]] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:
            continue
        for name, hint in hints.items():
            if name in out or name == "return":
                continue
            kinds = []
            for arg in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType)
                        else (hint,)):
                if arg is type(None):
                    continue
                origin = typing.get_origin(arg) or arg
                if not isinstance(origin, type) or origin is typing.Any:
                    kinds = []
                    break
                kinds.append(origin)
                if origin is float:
                    kinds.append(int)
            if kinds:
                out[name] = tuple(kinds)
    return out


_UnionType = type(int | None)


def parse_listen(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text.strip())
    if not m:
        raise UsageError(f"listen address '{text}': expected HOST:PORT (e.g. 127.0.0.1:9435, [::1]:9435)")
    host = m.group(1) or m.group(3) or "0.0.0.0"
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise UsageError(f"listen address '{text}': port must be 1-65535")
    try:        # an address or name no socket can bind is bad input, not a run-time failure
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"listen address '{text}': {getattr(exc, 'strerror', None) or exc}") from None
    return host, port


# -- running -------------------------------------------------------------------------

class Exporter:
    """The tool objects of a config, open, with their collectors registered."""

    def __init__(self, cfg: Config):
        from prometheus_client import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector
        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.tracers: list[Any] = []
        self.pumps: list[Any] = []
        self.errors: list[str] = []

    def open(self) -> None:
        from ..sinks.prometheus import EventCounter, EventPump
        for e in self.cfg.entries:
            tracer = e.cls(**e.options).open()
            self.tracers.append(tracer)
            if e.collector_cls is not None:
                self.registry.register(e.collector_cls(tracer, e.name, e.help, e.labels, e.count_by))
            spec = getattr(e.collector_cls, "SPEC", None)
            if e.collector_cls is None or (spec is not None and spec.mixed):     # events counted too
                what = f"{e.tool} events' {e.observe}" if e.observe else f"{e.tool} events"
                name = e.name if e.collector_cls is None else f"{e.name}_events_total"
                counter = EventCounter(e.tool, name, e.help or what
                                       + (f" by {', '.join(e.count_by)}" if e.count_by else ""),
                                       e.count_by, e.labels, e.observe, e.scale)
                pump = EventPump(tracer, counter, e.tool, self._error)
                pump.start()
                self.pumps.append(pump)
                self.registry.register(counter)

    def _error(self, text: str) -> None:
        self.errors.append(text)
        sys.stderr.write(f"pytrace exporter: {text}\n")
        sys.stderr.flush()

    def close(self) -> None:
        for p in self.pumps:
            p.stop()
        while self.tracers:
            self.tracers.pop().close()


def make_server(registry: Any, host: str, port: int, allow_hosts: typing.Iterable[str] = ()) -> QuietServer:
    """The /metrics server: answers only requests addressed to it by name
    (or to allow_hosts), and is quiet about scrapers that leave early
    (core/httpserve)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"          # keep-alive, as Prometheus scrapes
        disable_nagle_algorithm = True         # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_GET(self) -> None:  # noqa: N802
            if refused(self):
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                except Exception as exc:  # a map read failed: say so, keep serving
                    body, status, kind = f"collect failed: {exc}\n".encode(), 500, "text/plain"
            elif path == "/":
                body, status, kind = b"<html><body><a href='/metrics'>/metrics</a></body></html>\n", 200, \
                    "text/html"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            logging.getLogger("pytrace.exporter").debug(fmt, *args)

    try:
        return serve(host, port, Handler, allow_hosts, name="pytrace exporter")
    except OSError as exc:
        raise PytraceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def add_arguments(p: ArgParser) -> None:
    p.description = ("Serve tools' in-kernel aggregates and event counts as Prometheus "
                     "metrics (maps are read at scrape time).\n\n" + __doc__.split("\n\n", 1)[1])
    p.add_argument("--config", metavar="FILE", required=True, help="TOML file naming the tools and metrics")
    p.add_argument("--listen", metavar="HOST:PORT", help=f"where to serve /metrics (default {DEFAULT_LISTEN})")
    cliutil.add_allow_host(p)
    p.add_argument("-v", "--verbose", action="store_true", help="show libbpf's log and each request")


def run(argv: list[str]) -> int:
    import argparse
    p = ArgParser(prog="pytrace exporter", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    if args.listen is not None:
        try:
            parse_listen(args.listen)
        except UsageError as exc:
            raise UsageError(f"--listen: {exc}") from None
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise PytraceError("the exporter needs prometheus_client: pip install 'pytrace[exporter]'") from None
    cfg = load_config(args.config)
    host, port = parse_listen(args.listen or cfg.listen or DEFAULT_LISTEN)
    cliutil.install_signal_handlers()
    exporter = Exporter(cfg)
    server = None
    try:
        exporter.open()
        server = make_server(exporter.registry, host, port, args.allow_host)
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        shown = f"[{host}]" if ":" in host else host
        sys.stderr.write(f"pytrace exporter: serving http://{shown}:{server.server_address[1]}/metrics "
                         f"({', '.join(e.tool for e in cfg.entries)})\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, cliutil.Terminate):
        return 0
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        exporter.close()
