"""tcpstates against real loopback connections: exact transitions, filters, CLI."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from helpers import (Cli, bpf_prog_ids, free_port, kernel_map_flags, released_on, run_cli, tcp_roundtrip,
                     usage_error, wait_until)
from matrix import opened, variants
from pytrace.core.barelibbpf import BPF_F_NO_PREALLOC
from pytrace.core.net import TcpState as S
from pytrace.tools.tcpstates import TcpStates

CLIENT = [(S.CLOSE, S.SYN_SENT), (S.SYN_SENT, S.ESTABLISHED), (S.ESTABLISHED, S.FIN_WAIT1),
          (S.FIN_WAIT1, S.FIN_WAIT2), (S.FIN_WAIT2, S.CLOSE)]
CHILD = [(S.LISTEN, S.SYN_RECV), (S.SYN_RECV, S.ESTABLISHED), (S.ESTABLISHED, S.CLOSE_WAIT),
         (S.CLOSE_WAIT, S.LAST_ACK), (S.LAST_ACK, S.CLOSE)]
LISTENER = [(S.CLOSE, S.LISTEN), (S.LISTEN, S.CLOSE)]
MY_COMM = open("/proc/self/comm").read().strip()


def collect(tracer: TcpStates, action, settle: float = 0.3) -> list:
    """Run action() while the tracer is open; return every event seen."""
    result = action()
    return result, list(tracer.events(duration=settle))


def by_socket(events) -> dict[int, list]:
    out: dict[int, list] = {}
    for ev in events:
        out.setdefault(ev.skaddr, []).append(ev)
    return out


def of_connection(events, conn) -> list:
    ports = {conn.server_port, conn.client_port}
    return [e for e in events if e.lport in ports or e.rport in ports]


def check_connection(events, conn, host: str) -> None:
    addr = ipaddress.ip_address(host)
    socks = by_socket(of_connection(events, conn))
    kinds = {}
    for sk, evs in socks.items():
        trans = [(e.oldstate, e.newstate) for e in evs]
        kinds[tuple(trans)] = evs
    assert set(kinds) == {tuple(CLIENT), tuple(CHILD), tuple(LISTENER)}, kinds.keys()

    client = kinds[tuple(CLIENT)]
    assert client[0].pid == os.getpid() and client[0].comm == MY_COMM   # CLOSE->SYN_SENT in connect()
    assert client[0].lport == 0                                          # no port bound yet
    for e in client[1:]:
        assert (e.laddr, e.lport, e.raddr, e.rport) == (addr, conn.client_port, addr, conn.server_port)
    assert all(e.rport == conn.server_port for e in client)

    child = kinds[tuple(CHILD)]
    for e in child:
        assert (e.laddr, e.lport, e.raddr, e.rport) == (addr, conn.server_port, addr, conn.client_port)

    listener = kinds[tuple(LISTENER)]
    assert listener[0].pid == os.getpid()                               # listen() is a syscall
    assert all(e.lport == conn.server_port and e.rport == 0 for e in listener)
    for evs in kinds.values():
        assert evs[0].family == (socket.AF_INET6 if addr.version == 6 else socket.AF_INET)
        assert all(e.ms >= 0 for e in evs)
        assert all(a.ts_ns <= b.ts_ns for a, b in zip(evs, evs[1:]))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_transitions_exact(host):
    with TcpStates() as tracer:
        conn, events = collect(tracer, lambda: tcp_roundtrip(host))
        assert tracer.lost == 0
    check_connection(events, conn, host)


@pytest.mark.parametrize("hook", variants(TcpStates))
def test_every_hook_variant_gives_the_same_events(hook):
    with opened(TcpStates, hook) as tracer:
        assert tracer.variant.hook == hook
        # allocated on insert for tp_btf only; old kernels refuse that to raw_tp and tracepoint
        # programs under PREEMPT_RT (core/barelibbpf._PREALLOC_ONLY)
        flags = kernel_map_flags(tracer.obj.map("last_change").fd)
        assert flags & BPF_F_NO_PREALLOC == (BPF_F_NO_PREALLOC if hook == "tp_btf" else 0)
        conn, events = collect(tracer, lambda: tcp_roundtrip("127.0.0.1"))
    check_connection(events, conn, "127.0.0.1")


def test_lport_filter_excludes_other_ports():
    keep, other = free_port(), free_port()
    with TcpStates(lports=[keep]) as tracer:
        (c1, c2), events = collect(tracer, lambda: (tcp_roundtrip("127.0.0.1", keep),
                                                    tcp_roundtrip("127.0.0.1", other)))
    assert events, "the filtered connection must still be seen"
    assert {e.lport for e in events} == {keep}
    # listener + accepted child of the kept server; the client sockets have other local ports
    assert len(by_socket(events)) == 2


def test_rport_filter_keeps_only_the_client_side():
    keep, other = free_port(), free_port()
    with TcpStates(rports=[keep]) as tracer:
        (c1, c2), events = collect(tracer, lambda: (tcp_roundtrip("127.0.0.1", keep),
                                                    tcp_roundtrip("127.0.0.1", other)))
    assert [(e.oldstate, e.newstate) for e in events] == CLIENT
    assert {e.rport for e in events} == {keep}


@pytest.mark.parametrize("family,host,other", [(socket.AF_INET, "127.0.0.1", "::1"),
                                               (socket.AF_INET6, "::1", "127.0.0.1")])
def test_family_filter(family, host, other):
    with TcpStates(family=family) as tracer:
        (keep, drop), events = collect(tracer, lambda: (tcp_roundtrip(host), tcp_roundtrip(other)))
    assert of_connection(events, drop) == []
    check_connection(events, keep, host)
    assert {e.family for e in events} == {family}


def test_a_refused_record_goes_to_the_spare_ring_and_keeps_its_place():
    """A one-page ring (42 records) that is not read while 40 connections happen
    (280 events): the rest go to the spare ring.  Then ten records are read,
    which lets the next connection's 7 events into the main ring again, behind
    the spare's.  drain() must give everything in the kernel's order, as a
    tracer with a roomy ring sees it at the same time."""
    port = free_port()
    with TcpStates(lports=[port], ring_bytes=4096) as small, TcpStates(lports=[port]) as roomy:
        n = 40
        for _ in range(n):
            tcp_roundtrip("127.0.0.1", port)
        got = small.ring.drain(max_bytes=10 * small.ring.stride)
        assert len(got) == 10
        tcp_roundtrip("127.0.0.1", port)
        time.sleep(0.05)
        got += small.drain()
        want = roomy.drain()
        assert small.ring._spare.records > 0
        assert small.lost == 0
    assert len(want) == (n + 1) * 7            # 2 listener events + 5 child events per connection
    key = [small.idx[f] for f in ("skaddr", "oldstate", "newstate")]
    assert [[r[i] for i in key] for r in got] == [[r[i] for i in key] for r in want]


def test_lost_events_are_counted_exactly():
    """The same with 150 connections (1050 events): more than the ring and its
    spare hold.  What is not delivered must be counted as lost, to the event."""
    port = free_port()
    with TcpStates(lports=[port], ring_bytes=4096) as tracer:
        n = 150
        for _ in range(n):
            tcp_roundtrip("127.0.0.1", port)
        time.sleep(0.05)
        got = tracer.drain()
        expected = n * 7
        assert tracer.lost > 0
        assert len(got) + tracer.lost == expected


def test_cli_json_carries_the_same_facts():
    port = free_port()
    cli = Cli("tcpstates", "--json", "-L", str(port))
    conn = tcp_roundtrip("127.0.0.1", port)
    assert cli.read_until(lambda l: '"LAST_ACK"' in l and '"CLOSE"' in l and "newstate" in l)
    time.sleep(0.1)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = [json.loads(line) for line in lines]
    child = [(r["oldstate"], r["newstate"]) for r in recs if r["rport"] == conn.client_port]
    assert child == [(a.name, b.name) for a, b in CHILD]
    assert {r["lport"] for r in recs} == {port}
    assert {r["laddr"] for r in recs} == {"127.0.0.1"}
    assert all(r["family"] == "AF_INET" and isinstance(r["ms"], float) for r in recs)
    # the JSON time convention: "time" is the wall clock (RFC 3339, with the zone)
    # of the kernel's monotonic ts_ns, one clock offset for the whole run
    offsets = [datetime.fromisoformat(r["time"]).timestamp() * 1e9 - r["ts_ns"] for r in recs]
    assert all(r["time"][-6] in "+-" and r["time"][-3] == ":" for r in recs)
    assert max(offsets) - min(offsets) < 2000          # microseconds in "time", float seconds
    assert abs(offsets[0] - (time.time_ns() - time.monotonic_ns())) < 1e9


def test_cli_text_columns_and_time_column():
    port = free_port()
    cli = Cli("tcpstates", "-T", "-L", str(port))
    header = cli.read_until(lambda l: "SKADDR" in l)
    assert header.split() == ["TIME", "SKADDR", "C-PID", "C-COMM", "LADDR", "LPORT", "RADDR", "RPORT",
                              "OLDSTATE", "->", "NEWSTATE", "MS"]
    tcp_roundtrip("127.0.0.1", port)
    line = cli.read_until(lambda l: "CLOSE" in l and "LISTEN" in l and "->" in l)
    cli.stop()
    cols = line.split()
    assert len(cols) == 12
    time.strptime(cols[0], "%H:%M:%S")
    assert cols[2] == str(os.getpid()) and cols[5] == str(port)
    assert cols[8:11] == ["CLOSE", "->", "LISTEN"]


def test_cli_wide_ipv6():
    port = free_port(socket.AF_INET6)
    cli = Cli("tcpstates", "-6", "-w", "-L", str(port))
    tcp_roundtrip("::1", port)
    line = cli.read_until(lambda l: "LISTEN" in l)
    cli.stop()
    assert line.split()[3:5] == ["6", "::1"]         # -w has BCC's IP column


def test_ebpf_prints_the_source():
    r = run_cli("tcpstates", "--ebpf")
    assert r.returncode == 0
    assert 'SEC("tp_btf/inet_sock_set_state")' in r.stdout
    assert "struct tcpstates_event" in r.stdout
    assert "events.h" in r.stdout     # the shared ring-buffer header follows


@pytest.mark.parametrize("args,needle", [
    (["-L", "notaport"], "-L"),
    (["-D", "70000"], "-D"),
    (["--bogus"], "--bogus"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "kprobe"], "--hook"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcpstates", args, needle)


def test_without_bpf_privileges_one_line_exit_1():
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin,-bpf,-perfmon", "--"]
    r = run_cli("tcpstates", prefix=drop)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_BPF" in lines[0], r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_attached_after_exit(sig):
    released_on(sig, "tcpstates", "--hook", "tracepoint")


def test_library_exception_releases_programs():
    with pytest.raises(RuntimeError):
        with TcpStates():
            mine = bpf_prog_ids(os.getpid())
            assert mine
            raise RuntimeError("boom")
    # the kernel frees a program asynchronously once its last reference is gone
    assert wait_until(lambda: not mine & bpf_prog_ids(), 5)


def test_lone_event_is_printed_promptly():
    """Batched wakeups must not hold back an event that arrives after an idle gap."""
    port = free_port()
    with TcpStates(lports=[port]) as tracer:
        time.sleep(0.1)
        got = []

        def later():
            time.sleep(0.05)
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            s.listen(1)
            s.close()
        t = threading.Thread(target=later)
        t.start()
        start = time.monotonic()
        for batch in tracer.batches(duration=2):
            got += batch
            if got:
                break
        t.join()
        assert got and time.monotonic() - start < 1.0


def test_small_ring_wraps_without_corruption():
    """Records that straddle the end of the ring (the reader maps the data
    area once and joins the two pieces) decode exactly."""
    port = free_port()
    with TcpStates(lports=[port], ring_bytes=8192) as tracer:
        for _ in range(30):                      # 30 x 7 records of 96 bytes: ~2.5 laps
            conn = tcp_roundtrip("127.0.0.1", port)
            time.sleep(0.01)
            got = [tracer.make_event(r) for r in tracer.drain()]
            child = [(e.oldstate, e.newstate) for e in got if e.rport == conn.client_port]
            assert child == CHILD
            assert [(e.oldstate, e.newstate) for e in got if e.rport == 0] == LISTENER
        assert tracer.lost == 0


class _Recorded:
    """Raw records as a recording holds them: every field, no projection (what
    replay hands the renderers)."""

    def __init__(self, tracer: TcpStates):
        self.raw_fields, self.decoder = tracer.raw_fields, tracer.decoder

    def project(self, fields) -> None:
        pass


def test_ipv4_mapped_addresses_read_the_same_in_text_and_json():
    """A dual-stack listener's sockets are IPv6 with IPv4-mapped addresses:
    the text columns and --json print them alike (::ffff:127.0.0.1)."""
    from types import SimpleNamespace

    from helpers import captured_output, printed_lines
    from pytrace.tools.tcpstates import SPEC
    port = free_port(socket.AF_INET6)
    with TcpStates(lports=[port]) as tracer:
        srv = socket.socket(socket.AF_INET6)
        srv.bind(("::", port))
        srv.listen(1)
        cli = socket.create_connection(("127.0.0.1", port))
        acc, _ = srv.accept()
        for s in (cli, acc, srv):
            s.close()
        time.sleep(0.1)
        batch = tracer.drain()
        source = _Recorded(tracer)
    args = SimpleNamespace(json=False, timestamp=False, time=False, wide=True, ipv6=False, csv=False, journal=False)
    out = captured_output()
    out.write(SPEC.event_renderer(source, args, out)(batch))
    rows = [line.split() for line in printed_lines(out)[1:]]
    records = [json.loads(line) for line in SPEC.event_renderer(source, SimpleNamespace(json=True), out)(batch)
               .splitlines()]
    assert len(rows) == len(records) == len(batch) > 0
    assert [(r[4], r[6]) for r in rows] == [(j["laddr"], j["raddr"]) for j in records]
    mapped = [j for j in records if j["rport"]]
    assert mapped and all(j["laddr"] == j["raddr"] == "::ffff:127.0.0.1" and j["family"] == "AF_INET6"
                          for j in mapped)


# -- BCC's flags and columns (issue 20) --------------------------------------------------

LONG_COMM_CHILD = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"pytrace-longcom", 0, 0, 0)      # PR_SET_NAME: a 15-character comm
port = int(sys.argv[1])
c = socket.create_connection(("127.0.0.1", port))
print(c.getsockname()[1], flush=True)
c.close()
"""


def _long_comm_connect(port: int) -> int:
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    child = subprocess.run([sys.executable, "-c", LONG_COMM_CHILD, str(port)], capture_output=True, text=True,
                           check=True, timeout=10)
    acc, _ = srv.accept()
    acc.close()
    srv.close()
    return int(child.stdout)


def test_cli_time_timestamp_comm_width_and_wide_ip_as_bcc():
    """-T is HH:MM:SS and -t seconds since the first event (they were swapped, and -t
    counted from the start); C-COMM is cut to 10 characters (16 with -w, with IP)."""
    port = free_port()
    cli = Cli("tcpstates", "-T", "-t", "-D", str(port))
    wide = Cli("tcpstates", "-w", "-D", str(port))
    time.sleep(0.3)                     # a first event later than the start
    lport = _long_comm_connect(port)
    line = cli.read_until(lambda l: "SYN_SENT" in l and "ESTABLISHED" in l)
    wline = wide.read_until(lambda l: "SYN_SENT" in l and "ESTABLISHED" in l)
    rc, lines, err = cli.stop()
    rcw, wlines, errw = wide.stop()
    assert rc == 0 and rcw == 0, err + errw
    assert lines[0].split() == ["TIME", "TIME(s)", "SKADDR", "C-PID", "C-COMM", "LADDR", "LPORT", "RADDR", "RPORT",
                                "OLDSTATE", "->", "NEWSTATE", "MS"]
    first = lines[1].split()
    time.strptime(first[0], "%H:%M:%S")
    assert first[1] == "0.000000"
    cols = line.split()
    assert cols[4:9] == ["pytrace-lo", "127.0.0.1", str(lport), "127.0.0.1", str(port)]
    assert wlines[0].split() == ["SKADDR", "C-PID", "C-COMM", "IP", "LADDR", "LPORT", "RADDR", "RPORT",
                                 "OLDSTATE", "->", "NEWSTATE", "MS"]
    assert wline.split()[2:5] == ["pytrace-longcom", "4", "127.0.0.1"]


def test_cli_csv_with_times_and_timestamps():
    """-stT (BCC's example): comma separated, TIME and TIME(s) first, IP, COMM uncut."""
    port = free_port()
    cli = Cli("tcpstates", "-stT", "-D", str(port))
    lport = _long_comm_connect(port)
    line = cli.read_until(lambda l: ",SYN_SENT,ESTABLISHED," in l)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0] == "TIME,TIME(s),SKADDR,C-PID,C-COMM,IP,LADDR,LPORT,RADDR,RPORT,OLDSTATE,NEWSTATE,MS"
    assert lines[1].split(",")[1] == "0.000000"
    cols = line.split(",")
    time.strptime(cols[0], "%H:%M:%S")
    int(cols[2], 16)
    assert cols[4:10] == ["pytrace-longcom", "4", "127.0.0.1", str(lport), "127.0.0.1", str(port)]
    assert re.fullmatch(r"\d+\.\d{3}", cols[12])


def _journal_fields(datagram: bytes) -> dict[str, str]:
    """journald's native protocol, parsed back (NAME=value lines; NAME, length, value)."""
    out, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            i = nl + 1
        else:
            n = int.from_bytes(datagram[nl + 1:nl + 9], "little")
            name, value = line, datagram[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        out[name.decode()] = value.decode()
    return out


def test_journal_entries_in_journalds_native_protocol(tmp_path):
    """-Y: each change is sent to the journal's socket as BCC's fields; journald
    does not run on every host, so a socket of the test's stands in for it
    (PYTRACE_JOURNAL_SOCKET) and reads exactly what journald would get."""
    path = str(tmp_path / "journal.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(5)
    port = free_port()
    cli = Cli("tcpstates", "-Y", "-D", str(port), env={"PYTRACE_JOURNAL_SOCKET": path})
    conn = tcp_roundtrip("127.0.0.1", port)
    assert cli.read_until(lambda l: "SYN_SENT" in l and "ESTABLISHED" in l)
    time.sleep(0.3)
    rc, lines, err = cli.stop()
    entries = []
    sink.settimeout(0.5)
    try:
        while True:
            entries.append(_journal_fields(sink.recv(65536)))
    except TimeoutError:
        pass
    sink.close()
    assert rc == 0, err
    changes = [l for l in lines[1:] if "->" in l]
    assert len(entries) == len(changes) > 0                  # printed and logged alike
    e = next(e for e in entries if e["OBJECT_TCP_OLD_STATE"] == "SYN_SENT")
    assert {k: v for k, v in e.items() if k != "OBJECT_TCP_SPAN_TIME"} == {
        "SYSLOG_IDENTIFIER": "tcpstates", "PRIORITY": "5", "OBJECT_PID": str(os.getpid()),
        "OBJECT_IPV4_SOURCE_ADDRESS": "127.0.0.1", "OBJECT_TCP_SOURCE_PORT": str(conn.client_port),
        "OBJECT_IPV4_DESTINATION_ADDRESS": "127.0.0.1", "OBJECT_TCP_DESTINATION_PORT": str(port),
        "OBJECT_TCP_OLD_STATE": "SYN_SENT", "OBJECT_TCP_NEW_STATE": "ESTABLISHED",
        "MESSAGE": f"{open('/proc/self/comm').read().strip()} 127.0.0.1 {conn.client_port} \u2192 127.0.0.1 "
                   f"{port} SYN_SENT \u2192 ESTABLISHED"}
    assert int(e["OBJECT_TCP_SPAN_TIME"]) >= 0


def test_journal_for_real_when_journald_runs():
    """-Y into the host's journald, read back with journalctl."""
    if not os.path.exists("/run/systemd/journal/socket"):
        pytest.skip("systemd-journald does not run here (no /run/systemd/journal/socket: PID 1 is "
                    f"{open('/proc/1/comm').read().strip()}): the native-protocol test covers -Y")
    port = free_port()
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    cli = Cli("tcpstates", "-Y", "-D", str(port))
    conn = tcp_roundtrip("127.0.0.1", port)
    assert cli.read_until(lambda l: "SYN_SENT" in l and "ESTABLISHED" in l)
    rc, _, err = cli.stop()
    assert rc == 0, err
    out = subprocess.run(["journalctl", "-t", "tcpstates", "--since", since, "-o", "json"], capture_output=True,
                         text=True, check=True).stdout
    mine = [json.loads(l) for l in out.splitlines() if f'"OBJECT_TCP_SOURCE_PORT":"{conn.client_port}"' in l]
    assert {(m["OBJECT_TCP_OLD_STATE"], m["OBJECT_TCP_NEW_STATE"]) for m in mine} >= {("SYN_SENT", "ESTABLISHED")}


def test_journal_missing_is_one_line_and_status_1(tmp_path):
    r = run_cli("tcpstates", "-Y", env={"PYTRACE_JOURNAL_SOCKET": str(tmp_path / "none")})
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "-Y" in r.stderr, r.stderr
