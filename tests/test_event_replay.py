"""soaccept, soconnect and udpconnect with --record FILE: `pytrace replay FILE`
prints the live output again byte for byte (their text is their SPEC's
columns), and --json of the
same recording holds exactly the calls this process made."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from typing import Callable

import pytest

from helpers import free_port, run_cli
from ready import n_programs, started
from pytrace.tools.soaccept import SoAccept
from pytrace.tools.soconnect import SoConnect
from pytrace.tools.udpconnect import UdpConnect

ME = os.getpid()


def accepts() -> list[tuple]:
    """Two accepted connections, then a non-blocking accept with none waiting.
    Returns (addr, port, lport, result) per call."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    clients = [socket.create_connection(srv.getsockname()) for _ in range(2)]
    accepted = [srv.accept()[0] for _ in clients]
    srv.setblocking(False)
    with pytest.raises(BlockingIOError):
        srv.accept()
    lport = srv.getsockname()[1]
    want = [("127.0.0.1", c.getsockname()[1], lport, "Success") for c in clients]
    want.append(("0.0.0.0", 0, lport, "None to accept"))
    for s in (srv, *clients, *accepted):
        s.close()
    return want


def connects() -> list[tuple]:
    """A refused connect, then one that succeeds.  Returns (addr, port, ret, result) per call."""
    closed = free_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    refused, ok = socket.socket(), socket.socket()
    assert refused.connect_ex(("127.0.0.1", closed)) == errno.ECONNREFUSED
    ok.connect(("127.0.0.1", port))
    for s in (srv, refused, ok):
        s.close()
    return [("127.0.0.1", closed, -errno.ECONNREFUSED, "Connect refused"), ("127.0.0.1", port, 0, "Success")]


def udp_connects() -> list[tuple]:
    """UDP connects, v4 and v6.  Returns (family, raddr, rport) per call."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u4, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u6:
        u4.connect(("127.0.0.1", 7777))
        u6.connect(("::1", 7778))
    return [("AF_INET", "127.0.0.1", 7777), ("AF_INET6", "::1", 7778)]


# tool, flags, tracer class, the calls, what of a JSON record they predict
CASES: list[tuple[str, list[str], type, Callable[[], list[tuple]], Callable[[dict], tuple]]] = [
    ("soaccept", ["-T"], SoAccept, accepts, lambda r: (r["addr"], r["port"], r["lport"], r["result"])),
    ("soconnect", ["-T"], SoConnect, connects, lambda r: (r["addr"], r["port"], r["ret"], r["result"])),
    ("udpconnect", [], UdpConnect, udp_connects, lambda r: (r["family"], r["raddr"], r["rport"])),
]


@pytest.mark.parametrize("tool,flags,cls,calls,fields", CASES, ids=[c[0] for c in CASES])
def test_record_replays_the_live_output(tmp_path, tool, flags, cls, calls, fields):
    rec = str(tmp_path / f"{tool}.db")
    cli = started(tool, "-p", str(ME), *flags, "--record", rec, links=n_programs(cls, "tracepoint"))
    want = calls()
    deadline = time.monotonic() + 5
    while len(cli.seen) < 1 + len(want) and time.monotonic() < deadline:
        cli.read_until(lambda l: True, 0.2)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert len(lines) == 1 + len(want), lines             # the header, a line per call
    replayed = run_cli("replay", rec)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == "".join(line + "\n" for line in lines)
    recs = [json.loads(l) for l in run_cli("replay", rec, "--json").stdout.splitlines()]
    assert [fields(r) for r in recs] == want
    assert all(r["pid"] == ME for r in recs)
