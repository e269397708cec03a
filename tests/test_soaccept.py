"""soaccept: this process's accept() calls, with exact peers and results."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

from ready import n_programs, started
from matrix import covers
from pytrace.tools.soaccept import SoAccept

ME = os.getpid()


@covers("soaccept", "tracepoint")
def test_accepts_exact():
    with SoAccept(pid=ME) as t:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        srv6 = socket.socket(socket.AF_INET6)
        srv6.bind(("::1", 0))
        srv6.listen(4)
        clients = [socket.create_connection(srv.getsockname()), socket.create_connection(srv.getsockname()),
                   socket.create_connection(srv6.getsockname()[:2])]
        accepted = [srv.accept()[0], srv.accept()[0], srv6.accept()[0]]
        srv.setblocking(False)
        try:
            srv.accept()
        except BlockingIOError:
            pass
        expected = [(socket.AF_INET, c.getsockname()[0], c.getsockname()[1], a.getsockname()[1], a.fileno())
                    for c, a in zip(clients, accepted)]
        expected.append((socket.AF_INET, "0.0.0.0", 0, srv.getsockname()[1], -errno.EAGAIN))
        expected[2] = (socket.AF_INET6, *expected[2][1:])
        events = list(t.events(duration=0.3))
        for s in (srv, srv6, *clients, *accepted):
            s.close()
    got = [(e.family, e.addr, e.port, e.lport, e.ret) for e in events]
    assert got == [(f, ipaddress.ip_address(a), p, lp, r) for f, a, p, lp, r in expected]
    assert [e.result for e in events] == ["Success"] * 3 + ["None to accept"]
    assert all(e.pid == ME for e in events)


def test_cli_json_and_lport_filter():
    with socket.socket() as srv, socket.socket() as other:
        srv.bind(("127.0.0.1", 0))
        srv.listen(2)
        other.bind(("127.0.0.1", 0))
        other.listen(2)
        port = srv.getsockname()[1]
        cli = started("soaccept", "-p", str(ME), "-P", str(port), "--json", links=n_programs(SoAccept, "tracepoint"))
        for s in (other, srv):
            with socket.create_connection(s.getsockname()) as c:
                cport = c.getsockname()[1]
                s.accept()[0].close()
        assert cli.read_until(lambda line: '"Success"' in line)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    (rec,) = cli.json_records()
    assert (rec["addr"], rec["port"], rec["lport"], rec["family"]) == ("127.0.0.1", cport, port, "AF_INET")
