"""tcpconnect against real connects: exact tuples, PID/UID, refused and timed-out
attempts, filters, count mode, UDP, CLI."""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import Cli, bpf_prog_ids, free_port, released_on, run_cli, usage_error, wait_until
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.core.netattach import in_netns
from pytrace.tools.tcpconnect import TcpConnect

ME = os.getpid()
MY_COMM = open("/proc/self/comm").read().strip()
NOBODY = 65534
# /root (and the venv python inside it) is closed to other users: a child
# running as another uid uses the system python, which needs nothing of ours
SYS_PYTHON = "/usr/bin/python3"

# connect once `go` arrives on stdin, print the local port, exit
CHILD = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam)
s.connect((host, port))
print(s.getsockname()[1], flush=True)
s.close()
"""


def listener(host: str, backlog: int = 16) -> socket.socket:
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv.bind((host, 0))
    srv.listen(backlog)
    return srv


def connect(host: str, port: int) -> int:
    """One connect from this process; its local port."""
    c = socket.create_connection((host, port), timeout=5)
    lport = c.getsockname()[1]
    c.close()
    return lport


def refused(host: str, port: int) -> int:
    """A connect to a port nobody listens on, from a known local port."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam)
    s.bind((host, 0))
    lport = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        s.connect((host, port))
    s.close()
    return lport


def child(host: str, port: int, uid: int | None = None) -> subprocess.Popen:
    prefix = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    py = sys.executable if uid is None else SYS_PYTHON
    return subprocess.Popen([*prefix, py, "-c", CHILD, host, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def run_child(proc: subprocess.Popen) -> int:
    out, _ = proc.communicate("go\n", timeout=10)
    assert proc.returncode == 0
    return int(out)


def mine(events, *rports) -> list:
    return [e for e in events if e.rport in rports]


def results(events) -> list:
    """The events of outcomes (phase result); each follows its connect event."""
    return [e for e in events if e.phase == "result"]


def paired(events) -> list:
    """Each attempt's (connect event, result event), checking that every result
    follows the connect event of the same attempt (same start, socket tuple)."""
    pairs, open_ = [], {}
    for e in events:
        key = (e.start_ns, e.lport, e.rport)
        if e.phase == "connect":
            assert key not in open_, e
            open_[key] = e
        else:
            c = open_.pop(key)
            assert (c.pid, c.uid, c.comm, c.family, c.proto, c.laddr, c.raddr) == \
                (e.pid, e.uid, e.comm, e.family, e.proto, e.laddr, e.raddr)
            assert (c.result, c.ok, c.error) == (None, False, 0)
            assert c.start_ns <= c.ts_ns <= e.ts_ns
            pairs.append((c, e))
    assert not open_, open_
    return pairs


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_connect_and_refused_exact(host):
    srv = listener(host)
    port, closed = srv.getsockname()[1], free_port(socket.AF_INET6 if ":" in host else socket.AF_INET)
    addr = ipaddress.ip_address(host)
    with TcpConnect() as tracer:
        t0 = time.monotonic_ns()
        ok_port = connect(host, port)
        bad_port = refused(host, closed)
        t1 = time.monotonic_ns()
        events = mine(tracer.events(duration=0.3), port, closed)
        assert tracer.lost == 0
    srv.close()
    fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    # each connect() is seen when its SYN goes out (phase connect), then its outcome
    assert [e.phase for e in events] == ["connect", "result", "connect", "result"]
    assert [(e.pid, e.uid, e.comm, e.family, e.proto, e.laddr, e.lport, e.raddr, e.rport, e.ok, e.error, e.result)
            for e in results(events)] == [
        (ME, 0, MY_COMM, fam, 6, addr, ok_port, addr, port, True, 0, "OK"),
        (ME, 0, MY_COMM, fam, 6, addr, bad_port, addr, closed, False, errno.ECONNREFUSED, "ECONNREFUSED"),
    ]
    assert [(c.lport, c.rport) for c, _ in paired(events)] == [(ok_port, port), (bad_port, closed)]
    for e in events:
        assert t0 <= e.start_ns <= e.ts_ns <= t1


def test_timed_out_connect_is_reported_as_etimedout():
    """SYNs into a veth whose peer drops them (unknown MAC): the attempt times
    out after TCP_USER_TIMEOUT (checked at the first SYN retransmit, 1 s)."""
    ns = f"pt-tcpconnect-{os.getpid()}"
    ip = ["ip", "-n", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "a0", "type", "veth", "peer", "name", "b0"],
                    ["addr", "add", "192.0.2.1/24", "dev", "a0"], ["link", "set", "a0", "up"],
                    ["link", "set", "b0", "up"],
                    ["neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "a0", "nud", "permanent"]):
            subprocess.run(ip + cmd, check=True)
        with in_netns(ns):
            s = socket.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 200)
        s.bind(("192.0.2.1", 0))
        lport = s.getsockname()[1]
        with TcpConnect(dports=[8443]) as tracer:
            with pytest.raises(TimeoutError):
                s.connect(("192.0.2.2", 8443))
            s.close()
            events = list(tracer.events(duration=0.3))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert [(e.phase, e.pid, e.laddr, e.lport, e.raddr, e.rport, e.ok, e.error, e.result) for e in events] == [
        ("connect", ME, ipaddress.ip_address("192.0.2.1"), lport, ipaddress.ip_address("192.0.2.2"), 8443,
         False, 0, None),
        ("result", ME, ipaddress.ip_address("192.0.2.1"), lport, ipaddress.ip_address("192.0.2.2"), 8443,
         False, errno.ETIMEDOUT, "ETIMEDOUT")]
    connect_ev, result_ev = events
    assert connect_ev.ts_ns - connect_ev.start_ns < 100_000_000 < result_ev.ts_ns - result_ev.start_ns


def unanswered(ns: str) -> socket.socket:
    """In namespace ns, a socket bound to 192.0.2.1 whose SYNs to 192.0.2.2 go
    into a veth whose peer drops them (an unknown MAC): nobody ever answers."""
    ip = ["ip", "-n", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    for cmd in (["link", "add", "a0", "type", "veth", "peer", "name", "b0"],
                ["addr", "add", "192.0.2.1/24", "dev", "a0"], ["link", "set", "a0", "up"],
                ["link", "set", "b0", "up"],
                ["neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "a0", "nud", "permanent"]):
        subprocess.run(ip + cmd, check=True)
    with in_netns(ns):
        s = socket.socket()
    s.bind(("192.0.2.1", 0))
    s.setblocking(False)
    return s


def test_unanswered_connect_is_printed_at_once_and_counted():
    """Issue 20: BCC prints a connect at connect(); one nobody answers was printed
    ~127 s later, and one still pending at Ctrl-C never, nor counted by -c."""
    ns = f"pt-tcpconnect-p-{os.getpid()}"
    try:
        s = unanswered(ns)
        lport = s.getsockname()[1]
        cli = Cli("tcpconnect", "-P", "8444")
        count = Cli("tcpconnect", "-c", "-P", "8444")
        t0 = time.monotonic()
        assert s.connect_ex(("192.0.2.2", 8444)) == errno.EINPROGRESS
        line = cli.read_until(lambda l: l.split()[-1:] == ["8444"])
        shown_after = time.monotonic() - t0
        rc, _, err = cli.stop()
        rcc, lines, errc = count.stop()               # the SYN is still unanswered: pending
        s.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert rc == 0 and rcc == 0, err + errc
    assert line.split() == [str(ME), MY_COMM[:12], "4", "192.0.2.1", "192.0.2.2", "8444"]
    assert shown_after < 3                              # not after the SYN retries (~127 s)
    i = next(n for n, l in enumerate(lines) if l.split() == ["LADDR", "RADDR", "RPORT", "CONNECTS"])
    assert [l.split() for l in lines[i + 1:] if l.strip()] == [["192.0.2.1", "192.0.2.2", "8444", "1"]]
    assert lport


def test_aborted_connect():
    """A non-blocking connect closed before the handshake: no error, ABORTED."""
    srv = listener("127.0.0.1", backlog=0)
    port = srv.getsockname()[1]
    held = socket.create_connection(("127.0.0.1", port))   # fills the accept queue: next SYN dropped
    with TcpConnect(dports=[port]) as tracer:
        s = socket.socket()
        s.setblocking(False)
        assert s.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
        lport = s.getsockname()[1]
        s.close()
        events = list(tracer.events(duration=0.3))
    held.close()
    srv.close()
    assert [(e.phase, e.pid, e.lport, e.ok, e.error, e.result) for e in events] == [
        ("connect", ME, lport, False, 0, None), ("result", ME, lport, False, 0, "ABORTED")]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_other_uid_and_pid_and_uid_filter(host):
    srv = listener(host)
    port = srv.getsockname()[1]
    with TcpConnect(uid=NOBODY) as tracer:
        proc = child(host, port, uid=NOBODY)
        theirs = run_child(proc)
        connect(host, port)                                   # uid 0: excluded
        events = mine(tracer.events(duration=0.3), port)
    srv.close()
    assert [(e.phase, e.pid, e.uid, e.comm, e.lport, e.rport, e.ok) for e in events] == [
        ("connect", proc.pid, NOBODY, "python3", theirs, port, False),
        ("result", proc.pid, NOBODY, "python3", theirs, port, True)]


def test_pid_filter():
    srv = listener("127.0.0.1")
    port = srv.getsockname()[1]
    proc = child("127.0.0.1", port)
    with TcpConnect(pid=proc.pid) as tracer:
        connect("127.0.0.1", port)                            # this process: excluded
        theirs = run_child(proc)
        events = mine(tracer.events(duration=0.3), port)
    srv.close()
    assert [(e.phase, e.pid, e.lport) for e in events] == [("connect", proc.pid, theirs), ("result", proc.pid, theirs)]


def test_port_and_family_filters():
    s6, x6 = listener("::1"), listener("::1")
    p6, px = s6.getsockname()[1], x6.getsockname()[1]
    s4 = socket.socket()
    s4.bind(("127.0.0.1", p6))            # same port number, other family
    s4.listen(4)
    with TcpConnect(dports=[p6], family=socket.AF_INET6) as tracer:
        connect("127.0.0.1", p6)          # wrong family
        connect("::1", px)                # wrong port
        lport = connect("::1", p6)
        events = mine(tracer.events(duration=0.3), p6, px)
    for s in (s4, s6, x6):
        s.close()
    assert [(e.phase, e.family, e.lport, e.rport) for e in events] == [
        ("connect", socket.AF_INET6, lport, p6), ("result", socket.AF_INET6, lport, p6)]


@pytest.mark.parametrize("hook", variants(TcpConnect))
def test_every_hook_variant_gives_the_same_events(hook):
    srv = listener("127.0.0.1")
    port, closed = srv.getsockname()[1], free_port()
    with opened(TcpConnect, hook) as tracer:
        assert tracer.variant.hook == hook
        ok_port = connect("127.0.0.1", port)
        bad_port = refused("127.0.0.1", closed)
        events = mine(tracer.events(duration=0.3), port, closed)
    srv.close()
    assert [(e.phase, e.pid, e.lport, e.rport, e.result) for e in events] == [
        ("connect", ME, ok_port, port, None), ("result", ME, ok_port, port, "OK"),
        ("connect", ME, bad_port, closed, None), ("result", ME, bad_port, closed, "ECONNREFUSED")]


def test_kprobe_variant_passes_the_verifier():
    """Even where kprobes cannot attach (the matrix attaches it where they can)."""
    progs = set(TcpConnect.VARIANTS[0].programs)
    obj = BpfObject("tcpconnect", programs=progs)
    try:
        obj.load()
    finally:
        obj.close()


def test_count_mode_counts_every_attempt():
    a, b = listener("127.0.0.1"), listener("::1")
    pa, pb, closed = a.getsockname()[1], b.getsockname()[1], free_port()
    with TcpConnect(count=True, dports=[pa, pb, closed]) as tracer:
        for _ in range(3):
            connect("127.0.0.1", pa)
        connect("::1", pb)
        refused("127.0.0.1", closed)
        refused("127.0.0.1", closed)
        time.sleep(0.05)
        assert tracer.drain() == []           # count mode streams nothing
        rows = [(str(r.laddr), str(r.raddr), r.rport, r.connects) for r in tracer.counts()]
    a.close()
    b.close()
    assert rows == [("127.0.0.1", "127.0.0.1", pa, 3), ("127.0.0.1", "127.0.0.1", closed, 2), ("::1", "::1", pb, 1)]


def test_count_per_source_port():
    a = listener("127.0.0.1")
    pa = a.getsockname()[1]
    with TcpConnect(count=True, count_sport=True, dports=[pa]) as tracer:
        ports = sorted(connect("127.0.0.1", pa) for _ in range(2))
        rows = sorted((r.lport, r.connects) for r in tracer.counts())
    a.close()
    assert rows == [(ports[0], 1), (ports[1], 1)]


def test_udp_connects_succeeded_and_failed():
    """UDP connect() is immediate: connected, or failed with connect()'s errno
    (here no route, in an empty namespace), with the destination as given."""
    port = free_port()
    ns = f"pt-tcpconnect-udp-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with in_netns(ns):
            lonely = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with TcpConnect(udp=True, dports=[port]) as tracer:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.connect(("127.0.0.1", port))
            lport = u.getsockname()[1]
            u.close()
            u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u6.connect(("::1", port))
            lport6 = u6.getsockname()[1]
            u6.close()
            with pytest.raises(OSError) as exc:
                lonely.connect(("198.51.100.7", port))
            assert exc.value.errno == errno.ENETUNREACH
            lonely_port = lonely.getsockname()[1]     # bound on the way, before the failure
            lonely.close()
            events = list(tracer.events(duration=0.3))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert [e.phase for e in events] == ["connect", "result"] * 3
    assert [(e.pid, e.proto, str(e.laddr), e.lport, str(e.raddr), e.rport, e.result) for e in results(events)] == [
        (ME, 17, "127.0.0.1", lport, "127.0.0.1", port, "OK"),
        (ME, 17, "::1", lport6, "::1", port, "OK"),
        (ME, 17, "0.0.0.0", lonely_port, "198.51.100.7", port, "ENETUNREACH"),
    ]
    assert len(paired(events)) == 3


def test_udp_is_off_by_default():
    port = free_port()
    with TcpConnect(dports=[port]) as tracer:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect(("127.0.0.1", port))
        u.close()
        assert list(tracer.events(duration=0.2)) == []


# -- CLI ------------------------------------------------------------------------

def test_cli_columns_with_uid_lport_and_time():
    """BCC's columns, a line per connect() (its outcome is not printed)."""
    srv = listener("127.0.0.1")
    port, closed = srv.getsockname()[1], free_port()
    cli = Cli("tcpconnect", "-t", "-U", "-L", "-P", f"{port},{closed}")
    header = cli.read_until(lambda l: "DPORT" in l)
    assert header.split() == ["TIME(s)", "UID", "PID", "COMM", "IP", "SADDR", "LPORT", "DADDR", "DPORT"]
    lport = connect("127.0.0.1", port)
    bad = refused("127.0.0.1", closed)
    assert cli.read_until(lambda l: l.split()[-1:] == [str(closed)])
    rc, lines, err = cli.stop()
    srv.close()
    assert rc == 0, err
    rows = [l.split() for l in lines if l.split() and l.split()[0][0].isdigit()]
    assert [r[1:] for r in rows] == [
        ["0", str(ME), MY_COMM[:12], "4", "127.0.0.1", str(lport), "127.0.0.1", str(port)],
        ["0", str(ME), MY_COMM[:12], "4", "127.0.0.1", str(bad), "127.0.0.1", str(closed)]]
    assert float(rows[0][0]) == 0.0 and float(rows[1][0]) >= 0.0


def test_cli_result_lines():
    """--result: a line per attempt when its outcome is known, with RESULT."""
    srv = listener("127.0.0.1")
    port, closed = srv.getsockname()[1], free_port()
    cli = Cli("tcpconnect", "--result", "-L", "-P", f"{port},{closed}")
    header = cli.read_until(lambda l: "RESULT" in l)
    assert header.split() == ["PID", "COMM", "IP", "SADDR", "LPORT", "DADDR", "DPORT", "RESULT"]
    lport = connect("127.0.0.1", port)
    bad = refused("127.0.0.1", closed)
    line = cli.read_until(lambda l: "ECONNREFUSED" in l)
    rc, lines, err = cli.stop()
    srv.close()
    assert rc == 0, err
    rows = [l.split() for l in lines if l.split() and l.split()[0].isdigit()]
    assert line and rows == [
        [str(ME), MY_COMM[:12], "4", "127.0.0.1", str(lport), "127.0.0.1", str(port), "OK"],
        [str(ME), MY_COMM[:12], "4", "127.0.0.1", str(bad), "127.0.0.1", str(closed), "ECONNREFUSED"]]


def test_cli_json():
    srv = listener("::1")
    port = srv.getsockname()[1]
    cli = Cli("tcpconnect", "--json", "-P", str(port))
    lport = connect("::1", port)
    assert cli.read_until(lambda l: '"OK"' in l)
    rc, _, err = cli.stop()
    srv.close()
    assert rc == 0, err
    recs = cli.json_records()
    assert [(r["phase"], r["pid"], r["uid"], r["family"], r["proto"], r["laddr"], r["lport"], r["raddr"],
             r["rport"], r["ok"], r["error"], r["result"]) for r in recs] == [
        ("connect", ME, 0, "AF_INET6", "TCP", "::1", lport, "::1", port, False, 0, None),
        ("result", ME, 0, "AF_INET6", "TCP", "::1", lport, "::1", port, True, 0, "OK")]
    assert recs[0]["start_ns"] == recs[1]["start_ns"] <= recs[0]["ts_ns"] <= recs[1]["ts_ns"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_count_prints_table_at_exit(sig):
    srv = listener("127.0.0.1")
    port = srv.getsockname()[1]
    cli = Cli("tcpconnect", "-c", "-P", str(port))
    for _ in range(2):
        connect("127.0.0.1", port)
    time.sleep(0.1)
    rc, lines, err = cli.stop(sig)
    srv.close()
    assert rc == 0, err
    i = next(n for n, l in enumerate(lines) if l.split() == ["LADDR", "RADDR", "RPORT", "CONNECTS"])
    assert [l.split() for l in lines[i + 1:] if l.strip()] == [["127.0.0.1", "127.0.0.1", str(port), "2"]]


@pytest.mark.parametrize("result", [False, True])
def test_cli_udp_column(result):
    port = free_port()
    cli = Cli("tcpconnect", "--udp", "-P", str(port), *(["--result"] if result else []))
    header = cli.read_until(lambda l: "PROTO" in l)
    assert header.split()[-2:] == (["PROTO", "RESULT"] if result else ["DPORT", "PROTO"])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("127.0.0.1", port))
    u.close()
    line = cli.read_until(lambda l: "UDP" in l)
    cli.stop()
    assert line.split() == [str(ME), MY_COMM[:12], "4", "127.0.0.1", "127.0.0.1", str(port), "UDP",
                            *(["OK"] if result else [])]


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(qid: int, name: str) -> bytes:
    return qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + dns_name(name) + b"\x00\x01\x00\x01"


def dns_answer(query: bytes, addr: str) -> bytes:
    """The response to a one-question A query: one answer, the name as a pointer to the question's."""
    head = query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    return head + query[12:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)


def resolve(server: socket.socket, client: socket.socket, name: str, addr: str) -> None:
    """A DNS exchange over loopback UDP port 53, in the namespace the sockets are in."""
    client.sendto(dns_query(7, name), ("127.0.0.1", 53))
    query, peer = server.recvfrom(512)
    server.sendto(dns_answer(query, addr), peer)
    assert client.recv(512)[-4:] == socket.inet_aton(addr)


def test_cli_dns_names_the_connects():
    """-d (issue 20): each connect's QUERY is the name whose DNS answer gave its
    address, with the answer's age when over 100 ms; localhost, or No DNS Query."""
    ns = f"pt-tcpconnect-d-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with in_netns(ns):
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            srv = socket.socket()
            clients = [socket.socket() for _ in range(4)]
        server.bind(("127.0.0.1", 53))
        srv.bind(("0.0.0.0", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        cli = Cli("tcpconnect", "-d", "-P", str(port))
        js = Cli("tcpconnect", "-d", "--json", "-P", str(port))
        resolve(server, resolver, "pytrace-test.example", "127.0.0.7")
        clients[0].connect(("127.0.0.7", port))
        resolve(server, resolver, "late.pytrace-test.example", "127.0.0.8")
        time.sleep(0.25)
        t_late = time.monotonic()
        clients[1].connect(("127.0.0.8", port))
        clients[2].connect(("127.0.0.1", port))
        clients[3].connect(("127.0.0.9", port))
        for c in clients:
            assert cli.read_until(lambda l, c=c: l.split()[4:6] == [c.getpeername()[0], str(port)])
        rc, lines, err = cli.stop()
        rcj, _, errj = js.stop()
        for sock in (*clients, srv, server, resolver):
            sock.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert rc == 0 and rcj == 0, err + errj
    header = next(l for l in lines if "DPORT" in l)
    assert header.split() == ["PID", "COMM", "IP", "SADDR", "DADDR", "DPORT", "QUERY"]
    rows = {l.split()[4]: l.split()[6:] for l in lines if l.split()[:1] == [str(ME)]}
    assert rows["127.0.0.7"] == ["pytrace-test.example"]
    assert rows["127.0.0.8"][0] == "late.pytrace-test.example"
    late_ms = float(rows["127.0.0.8"][1].strip("(ms)"))
    assert 250 <= late_ms < 250 + (time.monotonic() - t_late) * 1000 + 1000
    assert rows["127.0.0.1"] == ["localhost"] and rows["127.0.0.9"] == ["No", "DNS", "Query"]
    recs = {r["raddr"]: r for r in js.json_records()}
    assert (recs["127.0.0.7"]["query"], recs["127.0.0.9"]["query"]) == ("pytrace-test.example", None)
    assert recs["127.0.0.7"]["query_age_us"] < 100_000 and recs["127.0.0.8"]["query_age_us"] >= 250_000


def test_dns_answers_are_parsed_as_bcc_reads_them():
    from pytrace.tools.tcpconnect import parse_dns_answer
    q = dns_query(1, "a.example")
    assert parse_dns_answer(dns_answer(q, "192.0.2.5")) == ("a.example", [(socket.AF_INET, socket.inet_aton("192.0.2.5"))])
    assert parse_dns_answer(q) is None                              # a query, not an answer
    assert parse_dns_answer(dns_answer(q, "192.0.2.5")[:-3]) is None  # cut short: its answer is dropped
    loop = q[:12] + b"\xc0\x0c" + q[-4:]                          # a name pointing at itself
    assert parse_dns_answer(loop[:2] + b"\x81\x80\x00\x01\x00\x01" + loop[8:]) is None


def test_ebpf_prints_the_source():
    r = run_cli("tcpconnect", "--ebpf")
    assert r.returncode == 0
    assert 'SEC("kprobe/tcp_v4_connect")' in r.stdout and "conntrack.h" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["-P", "notaport"], "-P"),
    (["-p", "0"], "-p"),
    (["-u", "-5"], "-u"),
    (["-u", "4294967295"], "-u"),
    (["-p", "99999999999"], "-p"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "fentry"], "--hook"),
    (["--bogus"], "--bogus"),
    (["-c", "-d"], "not allowed"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcpconnect", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_loaded_after_exit(sig):
    held = released_on(sig, "tcpconnect", "--udp")
    assert len(held) >= 3, "a state hook and the two connect syscall hooks"


def test_library_exception_releases_programs():
    with pytest.raises(RuntimeError):
        with TcpConnect():
            held = bpf_prog_ids(os.getpid())
            assert held
            raise RuntimeError("boom")
    assert wait_until(lambda: not held & bpf_prog_ids(), 5)


@pytest.mark.parametrize("count", [False, True])
def test_record_replays_the_live_output(tmp_path, count):
    srv = listener("127.0.0.1")
    port, closed = srv.getsockname()[1], free_port()
    rec = tmp_path / "tcpconnect.db"
    flags = ["-c"] if count else ["-t", "-L", "--result"]
    cli = Cli("tcpconnect", *flags, "-P", f"{port},{closed}", "--record", str(rec))
    connect("127.0.0.1", port)
    refused("127.0.0.1", closed)
    if not count:
        assert cli.read_until(lambda l: "ECONNREFUSED" in l)
    time.sleep(0.1)
    rc, lines, err = cli.stop()
    srv.close()
    assert rc == 0, err
    live = "".join(line + "\n" for line in lines)
    assert ("ECONNREFUSED" in live) != count and live.startswith("Tracing connect")
    replayed = run_cli("replay", str(rec))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == live
