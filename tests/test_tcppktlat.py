"""tcppktlat under real traffic: each read that finds data waiting is one
event, with the reader's PID/TID, the flow, and at least the time the reader
slept before reading (the data arrived before it went to sleep)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers import Cli, LoopbackPair, run_cli, usage_error
from matrix import opened, variants
from pytrace.tools.tcppktlat import TcpPktLat

MS = 1_000_000


def delayed_reads(pp: LoopbackPair, delays: list[float], size: int = 100) -> None:
    """For each delay: the client sends size bytes, the server reads them
    that long afterwards (all of them: one read)."""
    for delay in delays:
        pp.cli.sendall(b"d" * size)
        time.sleep(delay)
        got = b""
        while len(got) < size:
            got += pp.acc.recv(size - len(got))


def collected(tracer: TcpPktLat, seconds: float = 0.3) -> list:
    return list(tracer.events(duration=seconds))


def check_flow(ev, pp: LoopbackPair, host: str = "127.0.0.1", family: str = "AF_INET") -> None:
    assert (ev.pid, ev.tid, ev.comm) == (os.getpid(), threading.get_native_id(), _comm())
    assert ev.family.name == family
    assert (str(ev.laddr), ev.lport, str(ev.raddr), ev.rport) == (host, pp.port, host, pp.cport)


def _comm() -> str:
    with open("/proc/self/comm") as fh:
        return fh.read().strip()


@pytest.mark.parametrize("hook", variants(TcpPktLat))
def test_each_read_reports_how_long_its_data_waited(hook):
    delays = [0.02, 0.06, 0.12]
    pp = LoopbackPair(nodelay=True)
    try:
        with opened(TcpPktLat, hook, lport=pp.port) as tracer:
            delayed_reads(pp, delays)
            events = collected(tracer)
    finally:
        pp.close()
    assert len(events) == len(delays), events
    for ev, delay in zip(events, delays):
        check_flow(ev, pp)
        assert delay * 1e9 <= ev.latency_ns < delay * 1e9 + 500 * MS
        assert ev.ms == pytest.approx(ev.latency_ns / 1e6)


@pytest.mark.parametrize("hook", variants(TcpPktLat))
def test_a_read_of_two_segments_reports_the_older(hook):
    """Two segments 100 ms apart, read together 20 ms after the second: one
    event, for the first segment's wait (not the 20 ms of the newest)."""
    pp = LoopbackPair(nodelay=True)
    try:
        with opened(TcpPktLat, hook, lport=pp.port) as tracer:
            pp.cli.sendall(b"1" * 100)
            time.sleep(0.1)
            pp.cli.sendall(b"2" * 100)
            time.sleep(0.02)
            got = b""
            while len(got) < 200:
                got += pp.acc.recv(4096)
            events = collected(tracer)
    finally:
        pp.close()
    assert len(events) == 1, events
    check_flow(events[0], pp)
    assert events[0].latency_ns >= 120 * MS


def test_ipv6_and_the_family_filter():
    v4, v6 = LoopbackPair("127.0.0.1", nodelay=True), LoopbackPair("::1", nodelay=True)
    try:
        with TcpPktLat(family=socket.AF_INET6) as only6, TcpPktLat(family=socket.AF_INET) as only4:
            delayed_reads(v4, [0.01])
            delayed_reads(v6, [0.01])
            got6 = [e for e in collected(only6) if e.lport in (v4.port, v6.port)]
            got4 = [e for e in collected(only4) if e.lport in (v4.port, v6.port)]
    finally:
        v4.close()
        v6.close()
    assert len(got6) == 1 and len(got4) == 1
    check_flow(got6[0], v6, "::1", "AF_INET6")
    check_flow(got4[0], v4)


def test_port_and_min_latency_filters():
    a, b = LoopbackPair(nodelay=True), LoopbackPair(nodelay=True)
    try:
        with TcpPktLat(rport=a.cport) as by_rport, TcpPktLat(lport=b.port, min_us=50_000) as slow_b:
            delayed_reads(a, [0.01, 0.08])
            delayed_reads(b, [0.01, 0.08])
            from_a, from_b = collected(by_rport), collected(slow_b)
    finally:
        a.close()
        b.close()
    assert [(e.lport, e.rport) for e in from_a] == [(a.port, a.cport)] * 2
    assert len(from_b) == 1 and from_b[0].lport == b.port and from_b[0].latency_ns >= 80 * MS


READER = """
import socket, sys, time
s = socket.socket(); s.connect(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
sys.stdin.readline()            # the data has been sent
time.sleep(0.03)
s.recv(100)
"""


def test_pid_and_tid_filters_keep_only_that_reader():
    """Reads by another process, and by another thread of this one, are
    left out; the reader named is kept."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    port = srv.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", READER, str(port)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        to_child, _ = srv.accept()
        pp = LoopbackPair(nodelay=True)
        me, other = threading.get_native_id(), []
        try:
            with TcpPktLat(pid=child.pid) as by_pid, TcpPktLat(tid=me) as by_tid:
                to_child.sendall(b"c" * 100)
                child.stdin.write("go\n")
                child.stdin.flush()
                delayed_reads(pp, [0.02])               # read by this thread
                pp.cli.sendall(b"t" * 100)              # read by another thread of this process
                reader = threading.Thread(target=lambda: (time.sleep(0.02), other.append(
                    (threading.get_native_id(), pp.acc.recv(100)))))
                reader.start()
                reader.join()
                assert child.wait(10) == 0
                got_pid, got_tid = collected(by_pid), collected(by_tid)
        finally:
            pp.close()
            to_child.close()
    finally:
        child.kill()
        child.wait()
        srv.close()
    assert [(e.pid, e.tid, e.rport) for e in got_pid] == [(child.pid, child.pid, port)]
    assert got_pid[0].latency_ns >= 30 * MS
    assert other and other[0][0] != me
    assert [(e.tid, e.lport) for e in got_tid if e.lport == pp.port] == [(me, pp.port)]
    assert all(e.tid == me for e in got_tid)


def test_a_socket_freed_with_unread_data_is_forgotten():
    """Data that is never read leaves the socket's clock in the map until
    the socket is destroyed (tcp_destroy_sock): then it is gone, and no
    event was made."""
    pp = LoopbackPair(nodelay=True)
    try:
        with TcpPktLat(lport=pp.port) as tracer:
            arrived = tracer.obj.map("arrived")
            pp.cli.sendall(b"u" * 100)
            time.sleep(0.05)
            pending = len(arrived.keys())
            pp.acc.close()          # unread data: the kernel resets and destroys the socket
            time.sleep(0.05)
            left = len(arrived.keys())
            events = collected(tracer, 0.1)
    finally:
        pp.close()
    assert (pending, left, events) == (1, 0, [])


def test_cli_text_and_json():
    pp = LoopbackPair(nodelay=True)
    try:
        cli = Cli("tcppktlat", "-l", str(pp.port))
        delayed_reads(pp, [0.03])
        line = cli.read_until(lambda l: f" {pp.cport} " in l)
        rc, seen, err = cli.stop()
        js = Cli("tcppktlat", "--json", "-r", str(pp.cport), "20000")
        delayed_reads(pp, [0.005, 0.04])
        js.read_until(lambda l: l.startswith("{"))
        js_rc, _, js_err = js.stop()
    finally:
        pp.close()
    assert rc == 0, err
    assert seen[0].split() == ["PID", "TID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "MS"]
    cols = line.split()
    assert cols[:3] == [str(os.getpid()), str(threading.get_native_id()), _comm()]
    assert cols[3:7] == ["127.0.0.1", str(pp.port), "127.0.0.1", str(pp.cport)]
    assert float(cols[7]) >= 30.0
    assert js_rc == 0, js_err
    records = js.json_records()
    assert len(records) == 1            # the 5 ms read is under the 20000 us threshold
    rec = records[0]
    assert {k: rec[k] for k in ("pid", "tid", "family", "laddr", "lport", "raddr", "rport")} == {
        "pid": os.getpid(), "tid": threading.get_native_id(), "family": "AF_INET",
        "laddr": "127.0.0.1", "lport": pp.port, "raddr": "127.0.0.1", "rport": pp.cport}
    assert rec["latency_ns"] >= 40 * MS and rec["ms"] == round(rec["latency_ns"] / 1e6, 3)
    json.dumps(rec)


@pytest.mark.parametrize("args, needle", [
    (["-l", "0"], "not a port number"),
    (["-r", "70000"], "not a port number"),
    (["-t", "0"], "not a PID"),
    (["99999999999"], "must be 0 to"),
    (["1.5"], "whole number"),
    (["-4", "-6"], "not allowed with"),
])
def test_bad_input_is_one_line(args, needle):
    usage_error("tcppktlat", args, needle)
