"""soconnlat: connect latency of this process's connects, between the test's own timestamps."""

from __future__ import annotations

import errno
import os
import select
import socket
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
    assert sum(h.hist.count for h in hists) == 4
    assert sum(h.hist.sum for h in hists) <= elapsed_us
    for h in hists:
        assert (h.pid, h.hist.unit) == (ME, "usecs")
        assert "connect" in h.frames()[0]             # libc's connect() wrapper


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
        (h,) = t.histograms()
        c.close()
    assert h.ustack is None and h.frames() == []
    assert h.hist.count == 1
    assert delay * 1e6 <= h.hist.sum <= elapsed_us
    (low, high, n), = [b for b in h.hist.buckets() if b[2]]
    assert low <= h.hist.sum <= high


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
