"""tcpconnlat against real connects: latency inside the test's own timestamps,
a handshake slowed by a dropped SYN, the minimum-latency filter, CLI."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import Cli, free_port, released_on, run_cli, usage_error, wait_until
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.core.netattach import in_netns
from pytrace.tools.tcpconnlat import TcpConnLat

ME = os.getpid()
MY_COMM = open("/proc/self/comm").read().strip()


def listener(host: str, backlog: int = 8) -> socket.socket:
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv.bind((host, 0))
    srv.listen(backlog)
    return srv


def timed_connect(host: str, port: int) -> tuple[int, int, int]:
    """(local port, monotonic ns before connect(), after it returned)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    t0 = time.monotonic_ns()
    s.connect((host, port))
    t1 = time.monotonic_ns()
    lport = s.getsockname()[1]
    s.close()
    return lport, t0, t1


def listen_overflows() -> int:
    """TcpExt ListenOverflows of this thread's network namespace."""
    with open("/proc/thread-self/net/netstat") as fh:
        names, values = [line.split() for line in fh if line.startswith("TcpExt:")][:2]
    return int(values[names.index("ListenOverflows")])


@contextlib.contextmanager
def slow_connect():
    """A connect whose first SYN is dropped: the listener's accept queue is
    full (backlog 1, two connections waiting), so the SYN is dropped and
    resent after the initial RTO (1 s), once a slot has been freed.  In a
    namespace of its own, whose ListenOverflows counter tells when the drop
    happened.  Yields (listener port, local port, ns before connect(), after)."""
    ns = f"pt-tcpconnlat-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with in_netns(ns):
            srv, held, slow = socket.socket(), [socket.socket(), socket.socket()], socket.socket()
            before = listen_overflows()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        for s in held:
            s.connect(("127.0.0.1", port))
        result: list = []

        def run() -> None:
            t0 = time.monotonic_ns()
            slow.connect(("127.0.0.1", port))
            result.append((slow.getsockname()[1], t0, time.monotonic_ns()))
        t = threading.Thread(target=run)
        t.start()
        with in_netns(ns):
            assert wait_until(lambda: listen_overflows() > before, 5), "the SYN was not dropped"
        srv.accept()[0].close()             # room for the retransmitted SYN
        t.join(10)
        for s in (*held, slow, srv):
            s.close()
        yield (port, *result[0])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_latency_inside_the_tests_own_timestamps(host):
    srv = listener(host)
    port = srv.getsockname()[1]
    addr = ipaddress.ip_address(host)
    with TcpConnLat() as tracer:
        conns = [timed_connect(host, port) for _ in range(3)]
        events = [e for e in tracer.events(duration=0.3) if e.rport == port]
        assert tracer.lost == 0
    srv.close()
    fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    assert [(e.pid, e.comm, e.family, e.laddr, e.lport, e.raddr, e.rport) for e in events] == [
        (ME, MY_COMM, fam, addr, lport, addr, port) for lport, _, _ in conns]
    for e, (_, t0, t1) in zip(events, conns):
        assert 0 < e.delta_ns <= t1 - t0
        assert t0 <= e.ts_ns - e.delta_ns and e.ts_ns <= t1


def test_slow_handshake_and_minimum_latency():
    fast = listener("127.0.0.1")
    with TcpConnLat(min_ms=500) as tracer, slow_connect() as (port, lport, t0, t1):
        timed_connect("127.0.0.1", fast.getsockname()[1])           # microseconds: below the minimum
        events = [e for e in tracer.events(duration=0.3) if e.rport in (port, fast.getsockname()[1])]
    fast.close()
    assert [(e.pid, e.lport, e.rport) for e in events] == [(ME, lport, port)]
    e = events[0]
    assert 900_000_000 <= e.delta_ns <= t1 - t0    # one SYN timeout (1 s initial RTO), inside our timestamps
    assert e.ms == e.delta_ns / 1e6


def test_failed_connects_pid_and_family_filters():
    s4, s6 = listener("127.0.0.1"), listener("::1")
    p4, p6, closed = s4.getsockname()[1], s6.getsockname()[1], free_port()
    with TcpConnLat(pid=ME, family=socket.AF_INET6) as tracer:
        timed_connect("127.0.0.1", p4)                  # other family
        bad = socket.socket()
        assert bad.connect_ex(("127.0.0.1", closed)) != 0
        bad.close()
        lport, _, _ = timed_connect("::1", p6)
        events = [e for e in tracer.events(duration=0.3) if e.rport in (p4, p6, closed)]
    with TcpConnLat(pid=1) as tracer:                   # init does not connect here
        timed_connect("::1", p6)
        others = [e for e in tracer.events(duration=0.2) if e.rport == p6]
    s4.close()
    s6.close()
    assert [(e.family, e.lport, e.rport) for e in events] == [(socket.AF_INET6, lport, p6)]
    assert others == []


def test_refused_connect_is_shown_with_its_latency():
    """BCC times a connect to its first answer, a RST too (issue 20): shown, error ECONNREFUSED."""
    closed = free_port()
    with TcpConnLat() as tracer:
        s = socket.socket()
        t0 = time.monotonic_ns()
        assert s.connect_ex(("127.0.0.1", closed)) == errno.ECONNREFUSED
        t1 = time.monotonic_ns()
        lport = s.getsockname()[1]
        s.close()
        events = [e for e in tracer.events(duration=0.3) if e.rport == closed]
    assert [(e.pid, e.comm, e.family, str(e.laddr), e.lport, str(e.raddr), e.error) for e in events] == [
        (ME, MY_COMM, socket.AF_INET, "127.0.0.1", lport, "127.0.0.1", errno.ECONNREFUSED)]
    assert 0 < events[0].delta_ns <= t1 - t0


def test_cli_shows_a_refused_connect():
    closed = free_port(socket.AF_INET6)
    cli = Cli("tcpconnlat", "-6", "-p", str(ME))
    s = socket.socket(socket.AF_INET6)
    assert s.connect_ex(("::1", closed)) == errno.ECONNREFUSED
    s.close()
    line = cli.read_until(lambda l: f" {closed} " in l)
    rc, _, err = cli.stop()
    assert rc == 0, err
    cols = line.split()
    assert cols[:6] == [str(ME), MY_COMM[:12], "6", "::1", "::1", str(closed)] and float(cols[6]) >= 0


def test_cli_v_prints_the_program_then_traces():
    """BCC's -v: the program, then the usual header (libbpf's log is --libbpf-log)."""
    cli = Cli("tcpconnlat", "-v", "-p", str(ME))
    header = cli.read_until(lambda l: "LAT(ms)" in l)
    rc, out, err = cli.stop()
    assert rc == 0, err
    assert header.split() == ["PID", "COMM", "IP", "SADDR", "DADDR", "DPORT", "LAT(ms)"]
    assert 'SEC("tp_btf/inet_sock_set_state")' in "\n".join(out)


@pytest.mark.parametrize("hook", variants(TcpConnLat))
def test_every_hook_variant_gives_the_same_events(hook):
    srv = listener("127.0.0.1")
    port = srv.getsockname()[1]
    with opened(TcpConnLat, hook) as tracer:
        assert tracer.variant.hook == hook
        lport, t0, t1 = timed_connect("127.0.0.1", port)
        events = [e for e in tracer.events(duration=0.3) if e.rport == port]
    srv.close()
    assert [(e.pid, e.lport) for e in events] == [(ME, lport)]
    assert 0 < events[0].delta_ns <= t1 - t0


def test_kprobe_variant_passes_the_verifier():
    """Even where kprobes cannot attach (the matrix attaches it where they can)."""
    variant = next(v for v in TcpConnLat.VARIANTS if v.hook == "kprobe")
    with BpfObject("tcpconnlat", programs=set(variant.programs)):
        pass


# -- CLI ------------------------------------------------------------------------

def test_cli_columns_lport_and_time():
    srv = listener("127.0.0.1")
    port = srv.getsockname()[1]
    cli = Cli("tcpconnlat", "-t", "-L", "-p", str(ME))
    header = cli.read_until(lambda l: "LAT(ms)" in l)
    assert header.split() == ["TIME(s)", "PID", "COMM", "IP", "SADDR", "LPORT", "DADDR", "DPORT", "LAT(ms)"]
    lport, t0, t1 = timed_connect("127.0.0.1", port)
    line = cli.read_until(lambda l: f" {port} " in l)
    rc, _, err = cli.stop()
    srv.close()
    assert rc == 0, err
    cols = line.split()
    assert cols[:8] == ["0.000", str(ME), MY_COMM[:12], "4", "127.0.0.1", str(lport), "127.0.0.1", str(port)]
    assert 0 <= float(cols[8]) <= (t1 - t0) / 1e6 + 0.005      # printed with 2 decimals


def test_cli_positional_minimum_and_json():
    fast = listener("127.0.0.1")
    cli = Cli("tcpconnlat", "--json", "0.5", "-p", str(ME))
    timed_connect("127.0.0.1", fast.getsockname()[1])
    with slow_connect() as (port, lport, t0, t1):
        assert cli.read_until(lambda l: '"ms"' in l)
    rc, _, err = cli.stop()
    fast.close()
    assert rc == 0, err
    recs = cli.json_records()
    assert [(r["pid"], r["family"], r["lport"], r["rport"], r["error"]) for r in recs] == [
        (ME, "AF_INET", lport, port, 0)]
    assert 900 <= recs[0]["ms"] <= (t1 - t0) / 1e6


def test_ebpf_prints_the_source():
    r = run_cli("tcpconnlat", "--ebpf")
    assert r.returncode == 0
    assert 'SEC("fentry/tcp_v4_connect")' in r.stdout and "conntrack.h" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["abc"], "abc"),
    (["nan"], "nan"),
    (["1", "2"], "2"),
    (["-p", "-3"], "-p"),
    (["-p", "4194305"], "-p"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "raw_tp"], "--hook"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcpconnlat", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_loaded_after_exit(sig):
    released_on(sig, "tcpconnlat")
