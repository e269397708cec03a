"""so1stbyte: the first byte arrives no sooner than the server's delay, no later than the test saw it."""

from __future__ import annotations

import os
import socket
import threading
import time

from ready import n_programs, started
from matrix import covers
from pytrace.tools.so1stbyte import So1stByte

ME = os.getpid()
COMM = open("/proc/self/comm").read().strip()


def delayed_server(delay: float) -> tuple[socket.socket, threading.Thread]:
    """A listener whose thread accepts one connection, waits `delay`, then writes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        time.sleep(delay)
        conn.sendall(b"hello")
        conn.recv(1)               # until the client closes
        conn.close()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return srv, th


def first_byte(srv: socket.socket, early_nonblocking_read: bool = False) -> float:
    """Connect, read the first byte; the elapsed time in us as the test sees it."""
    t0 = time.monotonic_ns()
    c = socket.socket()
    c.connect(srv.getsockname())
    if early_nonblocking_read:
        c.setblocking(False)
        try:
            c.recv(5)              # EAGAIN: no data yet, must not stop the clock
        except BlockingIOError:
            pass
        c.setblocking(True)
    assert c.recv(5) == b"hello"
    elapsed = (time.monotonic_ns() - t0) / 1000
    c.close()
    return elapsed


@covers("so1stbyte", "tracepoint")
def test_first_byte_time_is_at_least_the_servers_delay():
    delay = 0.15
    with So1stByte(pid=ME) as t:
        srv, th = delayed_server(delay)
        elapsed = first_byte(srv, early_nonblocking_read=True)
        th.join(5)
        # a connection closed without a read leaves no sample
        other = socket.socket()
        other.connect(srv.getsockname())
        other.close()
        srv.close()
        hists = {key.values(): h for key, h in t.histograms().items()}     # So1stByteKey (pid, comm)
    assert list(hists) == [(ME, COMM)]
    h = hists[(ME, COMM)]
    assert h.count == 1
    assert delay * 1e6 <= h.sum <= elapsed


def test_cli_text():
    delay = 0.05
    cli = started("so1stbyte", "-p", str(ME), links=n_programs(So1stByte, "tracepoint"))
    srv, th = delayed_server(delay)
    elapsed = first_byte(srv)
    th.join(5)
    srv.close()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0] == "Tracing IP socket first-read-byte latency. Ctrl-C to end."
    assert lines[1] == f"{COMM} [{ME}]"
    rows = [line.split() for line in lines[3:] if "->" in line]
    counted = [(int(r[0]), int(r[2])) for r in rows if r[4] == "1"]
    assert len(counted) == 1
    low, high = counted[0]
    assert high >= delay * 1e6 and low <= elapsed
