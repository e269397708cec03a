"""tcpstates: TCP state changes, with the time each socket spent in its old state.

Library:

    from pytrace.tools.tcpstates import TcpStates
    with TcpStates(lports=[8080]) as tracer:
        for ev in tracer.events(duration=10):          # TcpStateChange
            print(ev.laddr, ev.lport, ev.oldstate.name, "->", ev.newstate.name, ev.ms)

C-PID/C-COMM are the task current when the state changed: the process for
changes made by a system call (connect, close, listen), often an unrelated
task or none (0) for changes made in softirq on packet arrival.
"""

from __future__ import annotations

from ..cli.cliutil import LATENCY_NOTE, ports
from ..core.loader import Variant
from ..core.stream import EventTracer
from ..core.tracer import LABELS, SOCKET_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, family, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from typing import Any

# The C struct is src/bpf/tcpstates.bpf.c's; build.py generates TcpStateChange
# from its BTF (pytrace/gen/tcpstates.py).  Only renames and conversions here.
TCPSTATES_EVENT = EventType("TcpStateChange", struct="tcpstates_event", doc="One TCP state change of a socket.",
                            fields="""
    ts_ns                       # CLOCK_MONOTONIC of the change
    skaddr: hex                 # the socket's kernel address
    pid                         # the task current at the change (0: none, in softirq)
    comm: text
    family: family              # AF_INET or AF_INET6
    laddr <- saddr: address
    lport <- sport
    raddr <- daddr: address
    rport <- dport
    oldstate: TcpState
    newstate: TcpState
    ms <- delta_us: us_to_ms    # time spent in oldstate (0 for the first change seen)
    cgroup_id                   # the socket's cgroup id (0 unless labels=True)
    netns                       # the socket's network namespace inode (0 unless labels=True)
""")


class TcpStates(EventTracer):
    OBJECT = "tcpstates"
    EVENT_TYPE = TCPSTATES_EVENT
    SCOPE = SOCKET_SCOPE | LABELS
    VARIANTS = (
        Variant("tp_btf", ("tcpstates_tp_btf",)),
        Variant("raw_tp", ("tcpstates_raw_tp",)),
        Variant("tracepoint", ("tcpstates_tracepoint",)),
    )

    def __init__(self, *, family: int = 0, lports: list[int] | None = None,
                 rports: list[int] | None = None, **kw):  # kw: EventTracer's
        super().__init__(**kw)
        self.family, self.lports, self.rports = family, lports or [], rports or []

    def rodata(self) -> dict[str, Any]:
        return {"target_family": self.family,
                "lports": self.lports, "n_lports": len(self.lports),
                "rports": self.rports, "n_rports": len(self.rports)}


__getattr__ = public_classes(__name__, TcpStateChange=TCPSTATES_EVENT)


# -- -Y: the systemd journal ---------------------------------------------------------------

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def journal_socket_path() -> str:
    """journald's native socket (PYTRACE_JOURNAL_SOCKET overrides it, for tests)."""
    import os
    return os.environ.get("PYTRACE_JOURNAL_SOCKET", JOURNAL_SOCKET)


def journal_entry(ev: Any) -> bytes:
    """One state change as a journal entry in journald's native protocol: the
    fields BCC's tcpstates -Y sends (systemd.journal-fields(7) for the standard
    ones, OBJECT_TCP_* of its own), a line each; a value with a newline is sent
    as NAME, a newline, its length (64-bit little endian), the value, a newline."""
    from ..core.convert import address_json
    pfx = "IPV6" if ev.family == 10 else "IPV4"
    fields = {
        "SYSLOG_IDENTIFIER": "tcpstates",
        "PRIORITY": "5",
        "OBJECT_PID": str(ev.pid),
        f"OBJECT_{pfx}_SOURCE_ADDRESS": address_json(ev.laddr),
        "OBJECT_TCP_SOURCE_PORT": str(ev.lport),
        f"OBJECT_{pfx}_DESTINATION_ADDRESS": address_json(ev.raddr),
        "OBJECT_TCP_DESTINATION_PORT": str(ev.rport),
        "OBJECT_TCP_OLD_STATE": ev.oldstate.name if hasattr(ev.oldstate, "name") else str(ev.oldstate),
        "OBJECT_TCP_NEW_STATE": ev.newstate.name if hasattr(ev.newstate, "name") else str(ev.newstate),
        "OBJECT_TCP_SPAN_TIME": str(round(ev.ms * 1000)),
    }
    fields["MESSAGE"] = (f"{ev.comm} {fields[f'OBJECT_{pfx}_SOURCE_ADDRESS']} {ev.lport} \u2192 "
                         f"{fields[f'OBJECT_{pfx}_DESTINATION_ADDRESS']} {ev.rport} "
                         f"{fields['OBJECT_TCP_OLD_STATE']} \u2192 {fields['OBJECT_TCP_NEW_STATE']}")
    out = []
    for name, value in fields.items():
        data = value.encode()
        if b"\n" in data:
            out.append(name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n")
        else:
            out.append(name.encode() + b"=" + data + b"\n")
    return b"".join(out)


def journal_tee(source: Any, args: Any):
    """-Y: each change also sent to the systemd journal (live only: replay does not log again)."""
    if not getattr(args, "journal", False) or not isinstance(source, TcpStates):
        return None
    import socket
    from ..core.errors import PytraceError
    path = journal_socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise PytraceError(f"-Y: no systemd journal to log to ({path}: {exc.strerror})") from None
    source.obj.on_close(sock.close)

    def log(batch: list[tuple]) -> None:
        decode = source.decoder()
        for raw in batch:
            try:
                sock.send(journal_entry(decode(raw)))
            except OSError as exc:      # journald gone or refusing: one line, not a traceback per event
                raise PytraceError(f"-Y: the systemd journal refused an entry ({exc.strerror})") from None
    return log


def _wide(args: Any) -> bool:
    return args.wide


def _address_width(args: Any) -> int:
    return 26 if args.wide else 15


SPEC = ToolSpec(
    "tcpstates", "TCP state changes with the time spent in each state", TcpStates, EVENTS,
    description=f"Trace TCP session state changes and durations. {LATENCY_NOTE}",
    event=TCPSTATES_EVENT,
    options=(
        Option("-T", "--time", action="store_true", help="include a time column on output (HH:MM:SS)"),
        Option("-t", "--timestamp", action="store_true",
               help="include a timestamp on output (seconds since the first event)"),
        Option("-w", "--wide", action="store_true", help="wide column output (fits IPv6 addresses)"),
        Option("-s", "--csv", action="store_true", help="comma separated values output"),
        Option("-L", "--localport", type=ports("-L"), metavar="PORTS", kw="lports",
               help="comma-separated list of local ports to trace"),
        Option("-D", "--remoteport", type=ports("-D"), metavar="PORTS", kw="rports",
               help="comma-separated list of remote ports to trace"),
        Option("-Y", "--journal", action="store_true",
               help="log session state changes to the systemd journal (its native socket) too"),
        family(),
    ),
    csv="csv", tee=journal_tee,
    # BCC's "%-16x %-5d %-10.10s %s%-15s %-5d %-15s %-5d %-11s -> %-11s %.3f" (the IP
    # column only with -w, "%-2s", or -s); -w: C-COMM 16, addresses 26
    columns=(
        Column("TIME", "ts_ns", width=8, form="hms", when="time"),
        Column("TIME(s)", "ts_ns", width=9, form="since_first", precision=".6", when="timestamp"),
        Column("SKADDR", "skaddr", width=16),
        Column("C-PID", "pid", width=5),
        Column("C-COMM", "comm", width=lambda a: 16 if a.wide else 10, precision=lambda a: ".16" if a.wide else ".10"),
        Column("IP", "family", width=2, form="ipver", when=lambda a: a.wide or a.csv),
        Column("LADDR", "laddr", width=_address_width),
        Column("LPORT", "lport", width=5),
        Column("RADDR", "raddr", width=_address_width),
        Column("RPORT", "rport", width=5),
        Column("OLDSTATE", "oldstate", width=11),
        Column("->"),
        Column("NEWSTATE", "newstate", width=11),
        Column("MS", "ms"),
    ),
    examples=(
        ("pytrace tcpstates", "trace all TCP state changes"),
        ("pytrace tcpstates -t", "include timestamp column"),
        ("pytrace tcpstates -T", "include time column (HH:MM:SS)"),
        ("pytrace tcpstates -w", "wider columns (fit IPv6)"),
        ("pytrace tcpstates -stT", "csv output, with times & timestamps"),
        ("pytrace tcpstates -Y", "log events to the systemd journal"),
        ("pytrace tcpstates -L 80", "only trace local port 80"),
        ("pytrace tcpstates -L 80,81", "only trace local ports 80 and 81"),
        ("pytrace tcpstates -D 80", "only trace remote port 80"),
        ("pytrace tcpstates -4", "trace IPv4 family only"),
        ("pytrace tcpstates -6", "trace IPv6 family only"),
        ("pytrace tcpstates --json", "one JSON object per change"),
    ),
)
