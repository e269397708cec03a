"""tcpconnect: active TCP connects, with the process that made them and how they ended.

Library:

    from pytrace.tools.tcpconnect import TcpConnect
    with TcpConnect(dports=[443]) as tracer:
        for c in tracer.events(duration=10):
            print(c.pid, c.comm, c.raddr, c.rport, c.result)

    with TcpConnect(count=True) as tracer:       # count mode (-c)
        time.sleep(10)
        for row in tracer.counts():
            print(row.laddr, row.raddr, row.rport, row.connects)

Unlike BCC's tcpconnect, which prints a connect when the SYN is sent, a
connect is reported once its outcome is known, so that failures show: at once
when it connects or is refused, after the SYN retries (tcp_syn_retries, about
two minutes by default) when nobody answers.  RESULT is OK, the errno of the
failure (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...), or ABORTED when the
socket was closed before the handshake finished without an error (the
program gave up, or connect() failed locally after the SYN_SENT state).
connect() calls rejected before any SYN (bad address, no route) are not
reported, as in BCC.  With --udp, UDP connect()s are reported too (RESULT is
connect()'s own result).
"""

from __future__ import annotations

import errno
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from ..core import tracefs
from ..core.aggregate import print_loop
from ..core.cliutil import (LATENCY_NOTE, Output, SinceFirst, add_common, add_container_args, add_family_args,
                            container_filters, family_of, int_range, json_renderer, ports, process_id, run_stream)
from ..core.containers import Labels
from ..core.loader import Variant
from ..core.net import AF_INET, AddrFormatter, addr_obj, comm_text
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "tcpconnect"
SUMMARY = "TCP connects with PID, UID and result (refused, timed out...)"

IPPROTO_TCP, IPPROTO_UDP = 6, 17
PROTO_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP"}
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def result_text(ok: bool, error: int) -> str:
    if ok:
        return "OK"
    if error == 0:
        return "ABORTED"
    return errno.errorcode.get(error, str(error))


@dataclass(frozen=True, slots=True)
class Connect:
    ts_ns: int                 # CLOCK_MONOTONIC when the outcome was known
    start_ns: int              # CLOCK_MONOTONIC of connect()
    pid: int
    uid: int
    comm: str
    family: int                # AF_INET or AF_INET6
    proto: int                 # 6 (TCP) or 17 (UDP)
    laddr: Addr
    lport: int
    raddr: Addr
    rport: int
    ok: bool                   # connected
    error: int                 # errno of a failure (0: none)
    cgroup_id: int = 0         # the connecting task's cgroup and netns (with labels=True)
    netns: int = 0
    labels: Labels | None = None

    @property
    def result(self) -> str:
        return result_text(self.ok, self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "start_ns": self.start_ns, "pid": self.pid, "uid": self.uid,
                "comm": self.comm, "ip": 4 if self.family == AF_INET else 6,
                "proto": PROTO_NAMES.get(self.proto, str(self.proto)), "laddr": str(self.laddr),
                "lport": self.lport, "raddr": str(self.raddr), "rport": self.rport,
                "ok": self.ok, "error": self.error, "result": self.result,
                **(self.labels.to_dict() if self.labels else {})}


@dataclass(frozen=True, slots=True)
class ConnectCount:
    laddr: Addr
    raddr: Addr
    rport: int
    lport: int                 # 0 unless counted per source port (count_sport)
    proto: int
    connects: int

    def to_dict(self) -> dict[str, Any]:
        return {"laddr": str(self.laddr), "raddr": str(self.raddr), "rport": self.rport,
                "lport": self.lport, "proto": PROTO_NAMES.get(self.proto, str(self.proto)),
                "connects": self.connects}


UDP_PROGRAMS = ("tcpconnect_udp_enter", "tcpconnect_udp_exit")


class TcpConnect(EventTracer):
    OBJECT = "tcpconnect"
    EVENT = "tcpconnect_event"
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcpconnect_kprobe_v4", "tcpconnect_kprobe_v6", "tcpconnect_raw_tp")),
        Variant("tp_btf", ("tcpconnect_tp_btf",)),
        Variant("tracepoint", ("tcpconnect_tracepoint",)),
    )

    def __init__(self, *, pid: int = 0, uid: int | None = None, family: int = 0,
                 dports: list[int] | None = None, udp: bool = False, count: bool = False,
                 count_sport: bool = False, **kw: Any):
        super().__init__(**kw)
        self.pid, self.uid, self.family = pid, uid, family
        self.dports = dports or []
        self.udp, self.count, self.count_sport = udp, count, count_sport
        if udp:   # the UDP side rides along with whichever TCP variant loads
            self.VARIANTS = tuple(Variant(v.hook, v.programs + UDP_PROGRAMS, v.note)
                                  for v in TcpConnect.VARIANTS)

    def rodata(self) -> dict[str, Any]:
        ro: dict[str, Any] = {"filter_pid": self.pid, "target_family": self.family,
                              "dports": self.dports, "n_dports": len(self.dports),
                              "do_count": self.count, "count_sport": self.count_sport}
        if self.uid is not None:
            ro["filter_uid"] = self.uid
        return ro

    def attach(self, obj, variant: Variant) -> None:
        # the UDP programs are classic syscall tracepoints: they need tracefs
        # even when the TCP side is tp_btf or kprobe (the loader mounts it
        # only for the tracepoint variant)
        if self.udp and variant.hook != "tracepoint" and tracefs.ensure():
            obj.on_close(tracefs.unmount)
        super().attach(obj, variant)

    def setup(self) -> None:
        super().setup()
        self._counts = self.obj.map("counts")

    def make_event(self, raw: tuple) -> Connect:
        i = self.idx
        fam = raw[i["family"]]
        return Connect(raw[i["ts_ns"]], raw[i["start_ns"]], raw[i["pid"]], raw[i["uid"]],
                       comm_text(raw[i["comm"]]), fam, raw[i["proto"]],
                       addr_obj(fam, raw[i["saddr"]]), raw[i["sport"]],
                       addr_obj(fam, raw[i["daddr"]]), raw[i["dport"]],
                       bool(raw[i["ok"]]), raw[i["error"]], *self.owner(raw))

    def counts(self, clear: bool = False) -> list[ConnectCount]:
        """Count mode: attempts per (laddr, raddr, rport[, lport]), most first."""
        rows = []
        for key, n in self._counts.decoded_items():
            fam = key["family"]
            rows.append(ConnectCount(addr_obj(fam, key["saddr"]), addr_obj(fam, key["daddr"]),
                                     key["dport"], key["sport"], key["proto"], n))
        if clear:
            self._counts.clear()
        rows.sort(key=lambda r: (-r.connects, r.laddr.version, str(r.laddr), str(r.raddr), r.rport))
        return rows


# -- command line ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Trace TCP connects, with the result of each attempt (OK, ECONNREFUSED, "
                     "ETIMEDOUT, ..., ABORTED); a line appears when the outcome is known. "
                     + LATENCY_NOTE)
    p.add_argument("-t", "--timestamp", action="store_true", help="include a TIME(s) column (since the first event)")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="trace this PID only")
    p.add_argument("-P", "--port", type=ports("-P"), metavar="PORTS",
                   help="only these destination ports (comma list)")
    add_family_args(p)
    p.add_argument("-L", "--lport", action="store_true", help="include an LPORT column")
    p.add_argument("-U", "--print-uid", action="store_true", help="include a UID column")
    p.add_argument("-u", "--uid", type=int_range(0, 0xfffffffe), help="trace this UID only")
    p.add_argument("-c", "--count", action="store_true",
                   help="count connects per source address and destination address/port; print at exit")
    p.add_argument("-s", "--source-port", action="store_true", help="with -c: count per source port too")
    p.add_argument("--udp", action="store_true", help="trace UDP connect()s too (PROTO column)")
    add_container_args(p, TcpConnect)
    add_common(p, [v.hook for v in TcpConnect.VARIANTS])


def run(args: argparse.Namespace) -> int:
    tracer = TcpConnect(pid=args.pid, uid=args.uid, family=family_of(args),
                        dports=args.port, udp=args.udp, count=args.count, count_sport=args.source_port,
                        hook=args.hook, **container_filters(args))
    if not args.count:
        return run_stream(tracer, args, renderer, intro)
    with tracer:            # -c: one table at Ctrl-C / SIGTERM, like BCC
        return print_loop(args, lambda: snapshot(tracer.counts(), args), render_snapshot, intro, once=True)


def intro(args: argparse.Namespace) -> str:
    return "" if args.json else "Tracing connect ... Hit Ctrl-C to end\n"


def renderer(source: TcpConnect, args: argparse.Namespace, out: Output):
    """What the CLI prints for a batch of raw records (source: the tracer, or a
    recording standing in for it in `pytrace replay`)."""
    return json_renderer(source) if args.json else _text_renderer(source, args, out)


# -- count mode: one snapshot at exit (what the sinks get and replay renders) ----

def snapshot(rows: list[ConnectCount], args: argparse.Namespace) -> Snapshot:
    series = []
    for r in rows:
        labels: dict[str, Any] = {"laddr": r.laddr, "raddr": r.raddr, "rport": r.rport}
        if args.source_port:
            labels["lport"] = r.lport
        labels["proto"] = PROTO_NAMES.get(r.proto, str(r.proto))
        series.append(Series.of(labels, {"connects": r.connects}))
    return Snapshot.now(NAME, series)


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    """BCC's table (LADDR RADDR [LPORT] RPORT CONNECTS, then PROTO with --udp), or JSON lines."""
    rows = [(dict(s.labels), dict(s.values)["connects"]) for s in snap.series]
    if args.json:
        out = []
        for labels, n in rows:
            rec: dict[str, Any] = {"laddr": labels["laddr"], "raddr": labels["raddr"], "rport": int(labels["rport"])}
            if "lport" in labels:
                rec["lport"] = int(labels["lport"])
            rec.update(proto=labels["proto"], connects=n)
            out.append(json.dumps(rec, separators=(",", ":")) + "\n")
        return "".join(out)
    head = f"\n{'LADDR':<25} {'RADDR':<25} "
    if args.source_port:
        head += f"{'LPORT':<20} "
    head += f"{'RPORT':<20} {'CONNECTS':<10}"
    if args.udp:
        head += " PROTO"
    lines = [head.rstrip() + "\n"]
    for labels, n in rows:
        line = f"{labels['laddr']:<25} {labels['raddr']:<25} "
        if args.source_port:
            line += f"{labels['lport']:<20} "
        line += f"{labels['rport']:<20} {n:<10}"
        if args.udp:
            line += " " + labels["proto"]
        lines.append(line.rstrip() + "\n")
    return "".join(lines)


def _text_renderer(tracer: TcpConnect, args: argparse.Namespace, out: Output):
    """BCC's columns (PID COMM IP SADDR [LPORT] DADDR DPORT), then [PROTO] RESULT."""
    head = ""
    if args.timestamp:
        head += f"{'TIME(s)':<9}"
    if args.print_uid:
        head += f"{'UID':<6}"
    head += f"{'PID':<6} {'COMM':<12} {'IP':<2} {'SADDR':<16} "
    if args.lport:
        head += f"{'LPORT':<6} "
    head += f"{'DADDR':<16} {'DPORT':<6} "
    if args.udp:
        head += f"{'PROTO':<5} "
    out.write(head + "RESULT\n")

    i = tracer.idx
    i_ts, i_pid, i_uid, i_comm, i_fam = i["ts_ns"], i["pid"], i["uid"], i["comm"], i["family"]
    i_sa, i_sp, i_da, i_dp = i["saddr"], i["sport"], i["daddr"], i["dport"]
    i_proto, i_ok, i_err = i["proto"], i["ok"], i["error"]
    addr = AddrFormatter()
    since_first = SinceFirst()

    def render(batch: list[tuple]) -> str:
        lines = []
        for r in batch:
            fam = r[i_fam]
            line = ""
            if args.timestamp:
                line += f"{since_first(r[i_ts]):<9.3f}"
            if args.print_uid:
                line += f"{r[i_uid]:<6}"
            line += "%-6d %-12.12s %-2d %-16s " % (r[i_pid], comm_text(r[i_comm]), 4 if fam == AF_INET else 6,
                                                  addr(fam, r[i_sa]))
            if args.lport:
                line += f"{r[i_sp]:<6} "
            line += f"{addr(fam, r[i_da]):<16} {r[i_dp]:<6} "
            if args.udp:
                line += f"{PROTO_NAMES.get(r[i_proto], '?'):<5} "
            lines.append(line + result_text(r[i_ok], r[i_err]) + "\n")
        return "".join(lines)
    return render
