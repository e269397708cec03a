"""tcpconnect: active TCP connects, printed when they are made, with how they ended.

Library:

    from pytrace.tools.tcpconnect import TcpConnect
    with TcpConnect(dports=[443], dns=True) as tracer:
        for c in tracer.events(duration=10):           # Connect
            if c.phase == "connect":                    # connect() sent the SYN
                print(c.pid, c.comm, c.raddr, c.rport, c.query)
            else:                                       # "result": its outcome
                print(c.raddr, c.rport, c.result, (c.ts_ns - c.start_ns) / 1e6, "ms")

    with TcpConnect(count=True) as tracer:             # count mode (-c)
        time.sleep(10)
        for row in tracer.counts():                     # ConnectCount, most first
            print(row.laddr, row.raddr, row.rport, row.connects)

Each attempt is two events.  phase "connect" comes when connect() sends its
SYN, as BCC prints it (with the local port chosen): an attempt that never
gets an answer is seen at once, and one still pending when the tracer stops
has been seen.  phase "result" comes when the outcome is known: result is
OK, the errno of the failure (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...),
or ABORTED when the socket was closed before the handshake finished
without an error; at once when it connects or is refused, after the SYN
retries (about two minutes by default) when nobody answers.  connect()
calls that fail before any SYN (bad address, no route, no local port) are
not reported, as in BCC.  The CLI prints the connect events, BCC's lines;
--result prints the result events instead (RESULT column); --json prints
both.  Count mode counts the connects (pending ones included).

dns=True (-d) associates each connect with the DNS answer that named its
address, as BCC's -d does: UDP datagrams from port 53 are read as they are
received and parsed here (A and AAAA answers, for up to DNS_CACHE names,
DNS_TTL seconds); query is the name asked for (None if no answer named the
address), query_age_us the time from the answer to connect().  With
udp=True (--udp), UDP connect()s are reported too (result: connect()'s).
"""

from __future__ import annotations

import errno
from typing import Any

from ..core import convert, tracefs
from ..cli.cliutil import LATENCY_NOTE, int_range, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..sinks.snapshot import Snapshot
from ..spec import EVENTS, TABLE, Column, EventType, Exclusive, Option, ToolSpec, family, pid, public_classes

IPPROTO_TCP, IPPROTO_UDP = 6, 17
PROTO_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP"}
PHASE_CONNECT, PHASE_RESULT = 1, 2
PHASES = {PHASE_CONNECT: "connect", PHASE_RESULT: "result"}
DNS_CACHE = 10240               # names kept, as BCC's cache
DNS_TTL = 86400                 # seconds a name is kept (BCC: 24 hours)
DNS_LATE_MS = 100               # an answer older than this at connect() is shown with its age (BCC)


# -- conversions of its own -----------------------------------------------------------------

def result_text(ok: Any, error: int) -> str:
    if ok:
        return "OK"
    if error == 0:
        return "ABORTED"
    return errno.errorcode.get(error, str(error))


def result_value(ok: int, error: int, phase: int) -> str | None:
    """OK, the errno name, or ABORTED; None for a connect event (no outcome yet)."""
    return result_text(ok, error) if phase == PHASE_RESULT else None


_RESULTS = convert._Memo(lambda key: result_text(*key).encode())


def phase_value(raw: int) -> str:
    return PHASES.get(raw, str(raw))


def phase_parse(v: Any) -> str:
    return str(v)


def proto_json(v: int) -> str:
    return PROTO_NAMES.get(v, str(v))


def proto_parse(v: Any) -> int:
    if isinstance(v, str) and not v.isdigit():
        return {name: num for num, name in PROTO_NAMES.items()}[v]
    return int(v)


def truth_value(raw: int) -> bool:
    return bool(raw)


def query_value(raw: bytes, daddr: bytes, family: int, age_us: int) -> str | None:
    """The DNS name the connected address answered (-d), None if none did."""
    name = raw.split(b"\0", 1)[0]
    return name.decode(errors="replace") if name else None


def query_text(raw: bytes, daddr: bytes, family: int, age_us: int) -> bytes:
    """BCC's QUERY column: the name, "(N.NNNms)" after it when the answer was
    over 100 ms old at connect(); "localhost" for a loopback address no
    answer named, else "No DNS Query"."""
    name = raw.split(b"\0", 1)[0]
    if not name:
        loop = (family == 2 and daddr[:4] == b"\x7f\0\0\x01") or (family == 10 and daddr == bytes(15) + b"\1")
        return b"localhost" if loop else b"No DNS Query"
    if age_us > DNS_LATE_MS * 1000:
        return name + b" (%.3fms)" % (age_us / 1000)
    return name


convert.register(convert.Conversion("connect_phase", phase_value, None, phase_parse,
                                    text=("s", "(b'connect' if {0} == 1 else b'result')"), kind="str"))
convert.register(convert.Conversion("tcpconnect_result", result_value, None, convert.text_parse, needs=("error", "phase"),
                                    text=("s", "(_tcpconnect_results[({0}, {1})] if {2} == 2 else b'-')"), kind="str",
                                    env={"_tcpconnect_results": _RESULTS}))
convert.register(convert.Conversion("ip_proto", None, proto_json, proto_parse,
                                    text=("s", "(b'TCP' if {0} == 6 else b'UDP' if {0} == 17 else b'?')"), kind="int"))
convert.register(convert.Conversion("truth", truth_value, None, convert.bool_parse, text=("d", "{0}"), kind="bool"))
convert.register(convert.Conversion("dns_query", query_value, None, convert.text_parse,
                                    needs=("daddr", "family", "query_age_us"),
                                    text=("s", "_dns_query_text({0}, {1}, {2}, {3})"), kind="str",
                                    env={"_dns_query_text": query_text}))

# struct tcpconnect_event of src/bpf/tcpconnect.bpf.c; build.py generates Connect from its BTF
CONNECT_EVENT = EventType("Connect", struct="tcpconnect_event",
                          doc="One active connect: its connect() (phase connect) or its outcome (phase result).",
                          fields="""
    ts_ns                       # CLOCK_MONOTONIC: the SYN sent (connect), the outcome known (result)
    start_ns                    # CLOCK_MONOTONIC of connect()
    phase: connect_phase        # "connect" or "result"
    pid
    uid
    comm: text
    family: family              # AF_INET or AF_INET6
    proto: ip_proto             # 6 (TCP) or 17 (UDP); JSON: "TCP", "UDP"
    laddr <- saddr: address
    lport <- sport
    raddr <- daddr: address
    rport <- dport
    ok: truth                   # result: connected
    error                       # result: errno of a failure (0: none)
    result <- ok: tcpconnect_result    # OK, ECONNREFUSED, ETIMEDOUT, ..., ABORTED (None for phase connect)
    query: dns_query            # -d: the DNS name the address answered, None if none
    query_age_us                # -d: the answer's age at connect(), in us
    -pad
""")

# A row of the count mode's counts map (key struct tcpconnect_key, value a u64)
CONNECT_COUNT = EventType("ConnectCount", map="counts", doc="Connects counted per address pair and port (-c).",
                          fields="""
    family: family
    laddr <- saddr: address
    raddr <- daddr: address
    rport <- dport
    lport <- sport              # 0 unless counted per source port (count_sport, -s)
    proto: ip_proto
    connects <- value
    -pad
""")


# -- DNS answers (-d) -----------------------------------------------------------------------

def _name_at(msg: bytes, off: int) -> tuple[str, int]:
    """The (possibly compressed) name at off: (dotted name, offset after it)."""
    labels, end, jumps = [], None, 0
    while True:
        if off >= len(msg):
            raise ValueError("name runs off the message")
        n = msg[off]
        if n & 0xc0 == 0xc0:                   # a pointer
            if off + 1 >= len(msg) or jumps > 32:
                raise ValueError("bad name pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3f) << 8) | msg[off + 1]
            jumps += 1
            continue
        if n == 0:
            return ".".join(labels), (end if end is not None else off + 1)
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", errors="replace"))
        off += 1 + n


def parse_dns_answer(msg: bytes) -> tuple[str, list[tuple[int, bytes]]] | None:
    """A DNS response with one question and answers -> (the name asked for,
    [(AF_INET, 4 bytes) / (AF_INET6, 16 bytes) of its A and AAAA answers]);
    None for anything else (a query, no question, no answers, malformed)."""
    if len(msg) < 12:
        return None
    flags = int.from_bytes(msg[2:4], "big")
    qdcount, ancount = int.from_bytes(msg[4:6], "big"), int.from_bytes(msg[6:8], "big")
    if not flags & 0x8000 or qdcount != 1 or ancount == 0:
        return None
    try:
        qname, off = _name_at(msg, 12)
        off += 4                                # qtype, qclass
        addrs = []
        for _ in range(ancount):
            _, off = _name_at(msg, off)
            if off + 10 > len(msg):
                break
            rtype = int.from_bytes(msg[off:off + 2], "big")
            rdlen = int.from_bytes(msg[off + 8:off + 10], "big")
            rdata = msg[off + 10:off + 10 + rdlen]
            off += 10 + rdlen
            if rtype == 1 and len(rdata) == 4:
                addrs.append((convert.AF_INET, rdata))
            elif rtype == 28 and len(rdata) == 16:
                addrs.append((convert.AF_INET6, rdata))
    except ValueError:
        return None
    return (qname, addrs) if qname and addrs else None


class DnsCache:
    """Address -> the names that answered it, newest last, with the time of the
    answer (kernel monotonic ns); at most DNS_CACHE addresses, each kept DNS_TTL s."""

    def __init__(self) -> None:
        self.names: dict[tuple[int, bytes], list[tuple[int, bytes]]] = {}

    def add(self, ts_ns: int, payload: bytes) -> None:
        answer = parse_dns_answer(payload)
        if answer is None:
            return
        name = answer[0].encode()[:79]
        for key in answer[1]:
            seen = self.names.pop(key, [])
            seen.append((ts_ns, name))
            self.names[key] = seen[-4:]           # re-inserted: the newest addresses last
        while len(self.names) > DNS_CACHE:
            del self.names[next(iter(self.names))]

    def lookup(self, family: int, raw: bytes, at_ns: int) -> tuple[bytes, int] | None:
        """(name, answer's age in us at at_ns) of the latest answer for the address before at_ns."""
        if family == convert.AF_INET6 and raw[:12] == bytes(10) + b"\xff\xff":
            key = (convert.AF_INET, raw[12:16])     # an IPv4-mapped address: its A answer
        else:
            key = (family, raw[:4] if family == convert.AF_INET else raw[:16])
        for ts, name in reversed(self.names.get(key, ())):
            if ts <= at_ns and at_ns - ts <= DNS_TTL * 1_000_000_000:
                return name, (at_ns - ts) // 1000
        return None


# -- the tracer -----------------------------------------------------------------------------

UDP_PROGRAMS = ("tcpconnect_udp_enter", "tcpconnect_udp_exit")
DNS_PROGRAM = {"tracepoint": "tcpconnect_dns_tracepoint"}       # others: the raw tracepoint
_DNS_NEEDS = ("phase", "family", "daddr", "start_ns", "query", "query_age_us")


class TcpConnect(EventTracer):
    OBJECT = "tcpconnect"
    EVENT_TYPE = CONNECT_EVENT
    SCOPE = TASK_SCOPE | LABELS
    VARIANTS = (
        Variant("kprobe", ("tcpconnect_kprobe_v4", "tcpconnect_kprobe_v6", "tcpconnect_kretprobe_v4",
                           "tcpconnect_kretprobe_v6", "tcpconnect_raw_tp")),
        Variant("tp_btf", ("tcpconnect_tp_btf", "tcpconnect_tp_btf_syn")),
        Variant("tracepoint", ("tcpconnect_tracepoint", "tcpconnect_tracepoint_syn")),
    )

    def __init__(self, *, pid: int = 0, uid: int | None = None, family: int = 0,
                 dports: list[int] | None = None, udp: bool = False, count: bool = False,
                 count_sport: bool = False, dns: bool = False, **kw: Any):
        super().__init__(**kw)
        if dns and count:
            raise ValueError("dns and count do not go together (as BCC's -d and -c)")
        self.pid, self.uid, self.family = pid, uid, family
        self.dports = dports or []
        self.udp, self.count, self.count_sport, self.dns = udp, count, count_sport, dns
        self.dns_cache = DnsCache()
        self._dns_ring = None
        if udp or dns:  # UDP and DNS ride along with whichever TCP variant loads
            self.VARIANTS = tuple(
                Variant(v.hook, v.programs + (UDP_PROGRAMS if udp else ()) +
                        ((DNS_PROGRAM.get(v.hook, "tcpconnect_dns_raw_tp"),) if dns else ()), v.note, v.needs)
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
        self._decode_count = CONNECT_COUNT.cls.decoder(self._counts.row_names())
        if self.dns:
            from ..core.ringbuf import RingBuffer
            ring = self.obj.map("dns_events")
            self._dns_ring = RingBuffer(ring.fd, ring.max_entries, self.obj.types.struct("tcpconnect_dns").format,
                                        self.interval_ms)

    def close(self) -> None:
        if self._dns_ring is not None:
            self._dns_ring.close()
            self._dns_ring = None
        super().close()

    def project(self, fields: set[str]) -> None:
        """The CLI's text picks events by phase, and -d fills the query fields."""
        super().project(set(fields) | {"phase"} | (set(_DNS_NEEDS) if self.dns else set()))

    # -- -d: DNS answers before the connects they named -------------------------------------
    def _with_queries(self, batch: list[tuple]) -> list[tuple]:
        """The batch with query/query_age_us filled from the DNS answers read so far.
        The answers are read after the batch: every answer received before one of
        its connects is in the ring by then."""
        cache = self.dns_cache
        for ts_ns, n, _pad, payload in self._dns_ring.drain():
            cache.add(ts_ns, payload[:n])
        if not batch:
            return batch
        i = self.idx
        i_fam, i_daddr, i_start, i_query, i_age = (i[n] for n in ("family", "daddr", "start_ns", "query",
                                                                   "query_age_us"))
        out = []
        for raw in batch:
            found = cache.lookup(raw[i_fam], raw[i_daddr], raw[i_start])
            if found is not None:
                raw = list(raw)
                raw[i_query], raw[i_age] = found[0].ljust(len(raw[i_query]), b"\0"), found[1]
                raw = tuple(raw)
            out.append(raw)
        return out

    def batches(self, duration: float | None = None):
        if self._dns_ring is None:
            return super().batches(duration)
        return (self._with_queries(batch) for batch in super().batches(duration))

    def drain(self) -> list[tuple]:
        batch = super().drain()
        return self._with_queries(batch) if self._dns_ring is not None else batch

    # -- count mode ----------------------------------------------------------------------
    def counts(self, clear: bool = False) -> list:
        """Count mode: a ConnectCount per (laddr, raddr, rport[, lport]), most first."""
        decode = self._decode_count
        rows = [decode(r) for r in self._counts.rows()]
        if clear:
            self._counts.clear()
        rows.sort(key=lambda r: (-r.connects, r.family, convert.address_json(r.laddr),
                                 convert.address_json(r.raddr), r.rport, r.lport))
        return rows


__getattr__ = public_classes(__name__, Connect=CONNECT_EVENT, ConnectCount=CONNECT_COUNT)


# -- the command line ---------------------------------------------------------------------

def text(source: Any, args: Any, out: Any):
    """BCC's lines, at connect() (the connect events); --result: the result
    events, with a RESULT column."""
    from ..spec.text import event_text
    render = event_text(SPEC.columns, CONNECT_EVENT, source, args, out)
    at = tuple(source.raw_fields).index("phase")
    want = PHASE_RESULT if args.result else PHASE_CONNECT

    def shown(batch: list[tuple]) -> bytes:
        return render([r for r in batch if r[at] == want])
    return shown


def count_text(snap: Snapshot, args: Any) -> str:
    """BCC's table (LADDR RADDR [LPORT] RPORT CONNECTS, then PROTO with --udp)."""
    head = f"\n{'LADDR':<25} {'RADDR':<25} "
    if args.source_port:
        head += f"{'LPORT':<20} "
    head += f"{'RPORT':<20} {'CONNECTS':<10}"
    if args.udp:
        head += " PROTO"
    lines = [head.rstrip() + "\n"]
    addr = convert.address_json
    for r in COUNTS.rows(snap):
        line = f"{addr(r.laddr):<25} {addr(r.raddr):<25} "
        if args.source_port:
            line += f"{r.lport:<20} "
        line += f"{r.rport:<20} {r.connects:<10}"
        if args.udp:
            line += " " + proto_json(r.proto)
        lines.append(line.rstrip() + "\n")
    return "".join(lines)


INTRO = "Tracing connect ... Hit Ctrl-C to end\n"

COUNTS = ToolSpec(
    "tcpconnect", "connects counted per address pair and port (tcpconnect -c)", TcpConnect, TABLE,
    event=CONNECT_COUNT,
    labels=("family", "laddr", "raddr", "rport", "lport", "proto"), values=("connects",),
    read=lambda tracer, args: tracer.counts(), text=count_text, intro=INTRO, once=True,
)


SPEC = ToolSpec(
    "tcpconnect", "TCP connects with PID, UID, the DNS name, and their result", TcpConnect, EVENTS,
    description=("Trace TCP connects, printed when connect() sends the SYN, as BCC (attempts that are never "
                 "answered are seen at once). --result prints each attempt when its outcome is known instead, "
                 "with a RESULT column (OK, ECONNREFUSED, ETIMEDOUT, ..., ABORTED); --json prints both, phase "
                 "'connect' and 'result'. -c counts the connects, pending ones included. " + LATENCY_NOTE),
    event=CONNECT_EVENT,
    options=(
        Option("-t", "--timestamp", action="store_true", help="include a timestamp column (since the first event)"),
        pid(),
        Option("-P", "--port", type=ports("-P"), metavar="PORTS", kw="dports",
               help="comma-separated list of destination ports to trace"),
        family(),
        Option("-L", "--lport", action="store_true", help="include a LPORT column"),
        Option("-U", "--print-uid", action="store_true", help="include a UID column"),
        Option("-u", "--uid", type=int_range(0, 0xfffffffe), kw="uid", help="trace this UID only"),
        # -c and -d exclude each other, as in BCC
        Exclusive(Option("-c", "--count", action="store_true", kw="count",
                         help="count connects per src ip and dest ip/port, printed at Ctrl-C"),
                  Option("-d", "--dns", action="store_true", kw="dns",
                         help="include the likely DNS query (the name whose answer gave the address connected "
                              "to; its age in ms after it when over 100 ms)")),
        Option("-s", "--source-port", action="store_true", kw="count_sport",
               help="with -c: count per source port too"),
        Option("--udp", action="store_true", kw="udp", help="trace UDP connect()s too (PROTO column)"),
        Option("--result", action="store_true",
               help="print each attempt when its outcome is known, with a RESULT column"),
    ),
    # BCC's "%-9.3f" TIME(s), "%-6d" UID, then "%-7d %-12.12s %-2d %-16s [%-6d] %-16s %-6d" [QUERY]
    columns=(
        Column("TIME(s)", "ts_ns", width=8, form="since_first", precision=".3", when="timestamp"),
        Column("UID", "uid", width=5, when="print_uid"),
        Column("PID", "pid", width=7),
        Column("COMM", "comm", width=12, precision=".12"),
        Column("IP", "family", width=2, form="ipver"),
        Column("SADDR", "laddr", width=16),
        Column("LPORT", "lport", width=6, when="lport"),
        Column("DADDR", "raddr", width=16),
        Column("DPORT", "rport", width=lambda a: 6 if (a.dns or a.udp or a.result) else None),
        Column("QUERY", "query", width=lambda a: 30 if (a.udp or a.result) else None, when="dns"),
        Column("PROTO", "proto", width=lambda a: 5 if a.result else None, when="udp"),
        Column("RESULT", "result", when="result"),
    ),
    alternate=("count", COUNTS),
    text=text, intro=INTRO,
    examples=(
        ("pytrace tcpconnect", "trace all TCP connect()s"),
        ("pytrace tcpconnect -t", "include timestamps"),
        ("pytrace tcpconnect -d", "include DNS queries associated with connects"),
        ("pytrace tcpconnect -p 181", "only trace PID 181"),
        ("pytrace tcpconnect -P 80", "only trace port 80"),
        ("pytrace tcpconnect -P 80,81", "only trace port 80 and 81"),
        ("pytrace tcpconnect -4", "only trace IPv4 family"),
        ("pytrace tcpconnect -6", "only trace IPv6 family"),
        ("pytrace tcpconnect -U", "include UID"),
        ("pytrace tcpconnect -u 1000", "only trace UID 1000"),
        ("pytrace tcpconnect -c", "count connects per src ip and dest ip/port"),
        ("pytrace tcpconnect -L", "include LPORT while printing outputs"),
        ("pytrace tcpconnect --result", "one line per attempt when its outcome is known, with RESULT"),
    ),
)
