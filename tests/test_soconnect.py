"""soconnect: this process's connect() calls, with exact addresses, results and latency bounds."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time

from helpers import free_port, run_cli
from ready import n_programs, started
from matrix import covers
from pytrace.tools.soconnect import SoConnect

ME = os.getpid()


def workload() -> list[tuple]:
    """connect() calls: refused, blocking v4/v6 successes, non-blocking, UDP.
    Returns (fd, family, addr, port, ret, max latency in us) per call, in order."""
    calls = []
    closed = free_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv6 = socket.socket(socket.AF_INET6)
    srv6.bind(("::1", 0))
    srv6.listen(8)
    keep = [srv, srv6]

    def call(sock, addr, blocking=True):
        sock.setblocking(blocking)
        t0 = time.monotonic_ns()
        ret = sock.connect_ex(addr)
        t1 = time.monotonic_ns()
        keep.append(sock)
        fam = sock.family
        calls.append((sock.fileno(), fam, ipaddress.ip_address(addr[0]), addr[1], -ret, (t1 - t0) / 1000))

    call(socket.socket(), ("127.0.0.1", closed))
    call(socket.socket(), ("127.0.0.1", srv.getsockname()[1]))
    call(socket.socket(socket.AF_INET6), ("::1", srv6.getsockname()[1]))
    call(socket.socket(), ("127.0.0.1", srv.getsockname()[1]), blocking=False)
    call(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ("127.0.0.1", 9))
    for s in keep:
        s.close()
    return calls


@covers("soconnect", "tracepoint")
def test_connect_calls_exact():
    with SoConnect(pid=ME) as t:
        calls = workload()
        events = list(t.events(duration=0.3))
        assert t.lost == 0
    assert [(e.fd, e.family, e.addr, e.port, e.ret) for e in events] == [c[:5] for c in calls]
    assert [e.ret for e in events] == [-errno.ECONNREFUSED, 0, 0, -errno.EINPROGRESS, 0]
    assert [e.result for e in events] == ["Connect refused", "Success", "Success", "In progress", "Success"]
    for e, c in zip(events, calls):
        assert 0 < e.lat_us <= c[5]                    # inside the test's own timestamps
        assert (e.pid, e.tid) == (ME, ME)


def test_port_filter():
    port = free_port()
    with SoConnect(pid=ME, rports=[port]) as t:
        for p in (port, free_port(), port):
            with socket.socket() as s:
                s.connect_ex(("127.0.0.1", p))
        events = list(t.events(duration=0.2))
    assert [(e.port, e.result) for e in events] == [(port, "Connect refused")] * 2


def test_cli_text_and_json():
    port = free_port()
    cli = started("soconnect", "-p", str(ME), links=n_programs(SoConnect, "tracepoint"))
    with socket.socket() as s:
        s.connect_ex(("127.0.0.1", port))
    assert cli.read_until(lambda line: str(port) in line)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0].split() == ["PID", "PROCESS", "FAM", "ADDRESS", "PORT", "LAT(us)", "RESULT"]
    f = lines[1].split()
    assert f[0] == str(ME) and f[2:5] == ["2", "127.0.0.1", str(port)] and f[6:] == ["Connect", "refused"]

    cli = started("soconnect", "-p", str(ME), "--json", links=n_programs(SoConnect, "tracepoint"))
    with socket.socket(socket.AF_INET6) as s:
        s.connect_ex(("::1", port))
    assert cli.read_until(lambda line: str(port) in line)
    rc, lines, err = cli.stop()
    (rec,) = cli.json_records()
    assert (rec["family"], rec["addr"], rec["port"], rec["ret"], rec["result"]) == \
        ("AF_INET6", "::1", port, -111, "Connect refused")


def test_bad_port_exits_2():
    r = run_cli("soconnect", "-P", "70000")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
