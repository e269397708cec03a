"""soconnlat: connect latency of this process's connects, between the test's own timestamps."""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
import time

from helpers import free_port
from ready import n_programs, started
from matrix import covers
from pytrace.tools.soconnlat import SoConnLat

ME = os.getpid()


@covers("soconnlat", "tracepoint")
def test_blocking_connects_with_user_stacks():
    with socket.socket() as srv, SoConnLat(pid=ME) as t:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        t0 = time.monotonic_ns()
        socks = [socket.socket() for _ in range(3)]
        for s in socks:
            s.connect(srv.getsockname())
        with socket.socket() as r:
            assert r.connect_ex(("127.0.0.1", free_port())) == errno.ECONNREFUSED
        elapsed_us = (time.monotonic_ns() - t0) / 1000
        hists = t.histograms()
        for s in socks:
            s.close()
    assert sum(h.count for h in hists.values()) == 4
    assert sum(h.sum for h in hists.values()) <= elapsed_us
    for k, h in hists.items():
        assert (k.pid, h.unit) == (ME, "usecs")
        assert "connect" in k.ustack[0]               # libc's connect() wrapper


def test_stack_of_a_client_that_exited_is_named():
    """A short-lived client connects and exits before the histograms are read:
    its stack is still named (issue 20: it printed raw addresses, the
    process's mappings being gone)."""
    with socket.socket() as srv, SoConnLat() as t:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        code = f"import socket; socket.create_connection(('127.0.0.1', {srv.getsockname()[1]})).close()"
        child = subprocess.Popen([sys.executable, "-c", code])
        assert child.wait(10) == 0
        assert not os.path.exists(f"/proc/{child.pid}")         # reaped: its maps are gone
        hists = {k: h for k, h in t.histograms().items() if k.pid == child.pid}
    assert [h.count for h in hists.values()] == [1]
    (key,) = hists
    assert "connect" in key.ustack[0] and not key.ustack[0].startswith(("0x", "[build id"))


def test_nonblocking_connect_ends_at_poll():
    """A non-blocking connect, then 200 ms before poll(): the latency runs to poll's return."""
    delay = 0.2
    with socket.socket() as srv, SoConnLat(pid=ME, stacks=False) as t:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c = socket.socket()
        c.setblocking(False)
        t0 = time.monotonic_ns()
        assert c.connect_ex(srv.getsockname()) == errno.EINPROGRESS
        time.sleep(delay)
        p = select.poll()
        p.register(c, select.POLLOUT)
        assert p.poll(5000)
        elapsed_us = (time.monotonic_ns() - t0) / 1000
        ((k, h),) = t.histograms().items()
        c.close()
    assert k.ustack is None
    assert h.count == 1
    assert delay * 1e6 <= h.sum <= elapsed_us
    (low, high, n), = [b for b in h.buckets() if b[2]]
    assert low <= h.sum <= high


def test_cli_json():
    cli = started("soconnlat", "-p", str(ME), "--json", links=n_programs(SoConnLat, "tracepoint"))
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(2)
        for _ in range(2):
            with socket.socket() as s:
                s.connect(srv.getsockname())
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = cli.json_records()
    assert sum(r["count"] for r in recs) == 2
    assert all(r["pid"] == ME and r["unit"] == "usecs" and "connect" in r["ustack"][0] for r in recs)
