"""tcplife against real loopback sessions: exact payload bytes both ways, the
owner's PID even when the close runs in another task's softirq, lifespan,
filters, CLI formats."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import (Cli, bpf_prog_ids, free_port, kernel_map_flags, netns, released_on, run_cli, usage_error,
                     wait_until)
from matrix import opened, variants
from pytrace.core.barelibbpf import BPF_F_NO_PREALLOC
from pytrace.core.netattach import in_netns
from pytrace.tools.tcplife import TcpLife

MY_COMM = open("/proc/self/comm").read().strip()
HOLD = 0.1      # seconds each test session stays open, so its lifespan is measurable


def recv_exact(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "peer closed early"
        got += chunk
    return got


class Session:
    """One loopback TCP session run by this process, with what each side wrote and read."""

    def __init__(self, host: str, port: int, c2s: int, s2c: int, close: str = "client"):
        self.host, self.port, self.c2s, self.s2c = host, port, c2s, s2c
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(4)
        self.t_start = time.monotonic_ns()
        cli = socket.create_connection((host, port), timeout=5)
        acc, _ = srv.accept()
        self.client_port = cli.getsockname()[1]
        cli.sendall(b"c" * c2s)
        recv_exact(acc, c2s)
        acc.sendall(b"s" * s2c)
        recv_exact(cli, s2c)
        time.sleep(HOLD)
        if close == "client":          # client FIN first: it ends FIN_WAIT2, the server LAST_ACK
            cli.close()
            assert acc.recv(16) == b""
            acc.close()
        elif close == "server":
            acc.close()
            assert cli.recv(16) == b""
            cli.close()
        elif close == "shutdown":      # half-closes, then both read EOF before close()
            cli.shutdown(socket.SHUT_WR)
            assert acc.recv(16) == b""
            acc.shutdown(socket.SHUT_WR)
            assert cli.recv(16) == b""
            cli.close()
            acc.close()
        srv.close()
        self.t_end = time.monotonic_ns()


def sessions_of(tracer: TcpLife, s: Session, settle: float = 0.3) -> dict[str, object]:
    """{'client': event, 'server': event} of one session (exactly one event per socket)."""
    evs = [e for e in tracer.events(duration=settle)
           if s.port in (e.lport, e.rport) and s.client_port in (e.lport, e.rport)]
    client = [e for e in evs if e.lport == s.client_port]
    server = [e for e in evs if e.lport == s.port]
    assert len(client) == 1 and len(server) == 1, evs
    return {"client": client[0], "server": server[0]}


def check(ev: dict, s: Session, pid: int = os.getpid()) -> None:
    addr = ipaddress.ip_address(s.host)
    c, sv = ev["client"], ev["server"]
    assert (c.laddr, c.lport, c.raddr, c.rport) == (addr, s.client_port, addr, s.port)
    assert (sv.laddr, sv.lport, sv.raddr, sv.rport) == (addr, s.port, addr, s.client_port)
    assert (c.tx_bytes, c.rx_bytes) == (s.c2s, s.s2c)
    assert (sv.tx_bytes, sv.rx_bytes) == (s.s2c, s.c2s)
    for e in (c, sv):
        assert e.pid == pid and e.comm == MY_COMM
        assert e.family == (socket.AF_INET6 if addr.version == 6 else socket.AF_INET)
        # the session was held open HOLD s, and lived inside the test's own timestamps
        assert HOLD * 1000 <= e.ms <= (s.t_end - s.t_start) / 1e6
        assert s.t_start <= e.ts_ns <= s.t_end


@pytest.mark.parametrize("close", ["client", "server", "shutdown"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_bytes_each_way_owner_and_lifespan(host, close):
    """3000 B one way, 700 B the other: both sockets report exactly that, whoever closes first
    (which decides whose FIN is counted where in the kernel's counters)."""
    port = free_port(socket.AF_INET6 if ":" in host else socket.AF_INET)
    with TcpLife() as tracer:
        s = Session(host, port, 3000, 700, close)
        ev = sessions_of(tracer, s)
        assert tracer.lost == 0
    check(ev, s)


@pytest.mark.parametrize("hook", variants(TcpLife))
def test_every_hook_variant_gives_the_same_sessions(hook):
    port = free_port()
    with opened(TcpLife, hook) as tracer:
        assert tracer.variant.hook == hook
        flags = kernel_map_flags(tracer.obj.map("conns").fd)     # as in tcpstates' same test
        assert flags & BPF_F_NO_PREALLOC == (BPF_F_NO_PREALLOC if hook == "tp_btf" else 0)
        s = Session("127.0.0.1", port, 70000, 123, "server")
        ev = sessions_of(tracer, s)
    check(ev, s)


CLIENT = r"""
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.sendall(b"q" * 3000)
got = b""
while True:
    chunk = c.recv(4096)
    if not chunk:
        break
    got += chunk
assert len(got) == 700
c.close()
"""


def run_client_process(port: int) -> int:
    """A session whose client is another process; returns the client's pid.

    The server half-closes first and stays open in FIN_WAIT2, so its change to
    CLOSE happens when the client's FIN arrives: on lo, in the client process's
    context.  Only a PID cached at our shutdown() can name us as its owner.
    """
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(port)])
    acc, _ = srv.accept()
    recv_exact(acc, 3000)
    acc.sendall(b"r" * 700)
    acc.shutdown(socket.SHUT_WR)
    assert acc.recv(16) == b""      # the client's FIN
    acc.close()
    srv.close()
    assert proc.wait(10) == 0
    return proc.pid


def test_pid_is_the_owner_not_the_task_running_the_close():
    port = free_port()
    with TcpLife() as tracer:
        child = run_client_process(port)
        evs = list(tracer.events(duration=0.3))
    server = [e for e in evs if e.lport == port]
    client = [e for e in evs if e.rport == port]
    assert len(server) == 1 and len(client) == 1
    assert (server[0].pid, server[0].tx_bytes, server[0].rx_bytes) == (os.getpid(), 700, 3000)
    assert (client[0].pid, client[0].tx_bytes, client[0].rx_bytes) == (child, 3000, 700)


def test_pid_filter_keeps_only_that_process():
    port = free_port()
    with TcpLife(pid=os.getpid()) as mine:
        run_client_process(port)
        evs = list(mine.events(duration=0.3))
    assert [(e.pid, e.lport) for e in evs] == [(os.getpid(), port)]


def test_port_and_family_filters_exclude_what_they_must():
    keep, other = free_port(), free_port()
    keep6 = free_port(socket.AF_INET6)
    with TcpLife(lports=[keep]) as by_l, TcpLife(rports=[keep]) as by_r, \
            TcpLife(family=socket.AF_INET6, lports=[keep6, other]) as v6:
        s1 = Session("127.0.0.1", keep, 10, 20)
        s2 = Session("127.0.0.1", other, 30, 40)
        s3 = Session("::1", keep6, 50, 60)
        got_l = list(by_l.events(duration=0.3))
        got_r = list(by_r.events(duration=0.05))
        got_6 = list(v6.events(duration=0.05))
    assert [(e.lport, e.rport, e.tx_bytes) for e in got_l] == [(keep, s1.client_port, 20)]
    assert [(e.lport, e.rport, e.tx_bytes) for e in got_r] == [(s1.client_port, keep, 10)]
    assert sorted((e.lport, e.tx_bytes) for e in got_6) == [(keep6, 60)]
    assert s2.port == other


def test_sessions_beyond_the_map_are_counted_as_lost():
    """With room for 4 open sessions, 6 concurrent client sockets: 4 reported, 2 counted lost."""
    port = free_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    with TcpLife(rports=[port], max_sessions=4) as tracer:
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        accepted = [srv.accept()[0] for _ in clients]
        for s in clients + accepted:
            s.close()
        evs = list(tracer.events(duration=0.3))
        assert (len(evs), tracer.lost) == (4, 2)
    assert {e.rport for e in evs} == {port}
    srv.close()


def test_client_filtered_by_its_ephemeral_port():
    """With -L a client is skipped at SYN_SENT (no local port yet) and followed from
    ESTABLISHED: its bytes are still exact, and map overflow still counts once per session.
    The ephemeral ports are made known by a 6-port ip_local_port_range in a test netns."""
    with netns(f"pt-tcplife-{os.getpid()}") as ns:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        first = random.randint(20000, 60000)
        eph = list(range(first, first + 6))
        with in_netns(ns):
            with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as fh:
                fh.write(f"{eph[0]} {eph[-1]}")
            srv = socket.socket()
            srv.bind(("127.0.0.1", 5000))
            srv.listen(8)
            with TcpLife(lports=eph, max_sessions=4) as tracer:
                clients = [socket.create_connection(("127.0.0.1", 5000), timeout=5) for _ in eph]
                accepted = [srv.accept()[0] for _ in clients]
                for c, a in zip(clients, accepted):
                    c.sendall(b"e" * 100)
                    recv_exact(a, 100)
                    a.sendall(b"f" * 7)
                    recv_exact(c, 7)
                for s in clients + accepted:
                    s.close()
                evs = list(tracer.events(duration=0.3))
                assert (len(evs), tracer.lost) == (4, 2)
            srv.close()
    assert {e.lport for e in evs} <= set(eph) and len({e.lport for e in evs}) == 4
    assert {(e.rport, e.tx_bytes, e.rx_bytes, e.pid) for e in evs} == {(5000, 100, 7, os.getpid())}


def test_cli_text_columns():
    port = free_port()
    cli = Cli("tcplife", "-T", "-L", str(port))
    header = cli.read_until(lambda l: "PID" in l)
    assert header.split() == ["TIME", "PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "TX_KB", "RX_KB", "MS"]
    s = Session("127.0.0.1", port, 700, 5000)
    line = cli.read_until(lambda l: f" {port} " in l)
    rc, _, err = cli.stop()
    assert rc == 0, err
    cols = line.split()
    time.strptime(cols[0], "%H:%M:%S")
    assert cols[1:9] == [str(os.getpid()), MY_COMM[:10], "127.0.0.1", str(port), "127.0.0.1",
                         str(s.client_port), "4", "0"]       # 5000 B -> 4 KB, 700 B -> 0 KB, as BCC
    assert HOLD * 1000 <= float(cols[9]) <= (s.t_end - s.t_start) / 1e6


def test_cli_csv_with_times_and_wide_ipv6():
    port = free_port(socket.AF_INET6)
    cli = Cli("tcplife", "-s", "-T", "-t", "-6", "-D", str(port))
    assert cli.read_until(lambda l: l.startswith("TIME,")) == \
        "TIME,TIME(s),PID,COMM,IP,LADDR,LPORT,RADDR,RPORT,TX_KB,RX_KB,MS"
    s = Session("::1", port, 3000, 700)
    line = cli.read_until(lambda l: f",{port}," in l)
    cli.stop()
    cols = line.split(",")
    assert cols[1] == "0.000000"
    assert cols[2:11] == [str(os.getpid()), MY_COMM, "6", "::1", str(s.client_port), "::1", str(port), "2", "0"]

    cli = Cli("tcplife", "-w", "-6", "-D", str(port))
    assert cli.read_until(lambda l: "PID" in l).split()[:3] == ["PID", "COMM", "IP"]
    Session("::1", port, 1, 2)
    line = cli.read_until(lambda l: f" {port} " in l)
    cli.stop()
    assert line.split()[2:4] == ["6", "::1"]


def test_cli_json_has_exact_bytes():
    port = free_port()
    cli = Cli("tcplife", "--json", "-L", str(port))
    s = Session("127.0.0.1", port, 3000, 700, "server")
    line = cli.read_until(lambda l: '"lport":%d' % port in l)
    rc, _, err = cli.stop()
    assert rc == 0, err
    rec = json.loads(line)
    assert (rec["pid"], rec["family"], rec["laddr"], rec["rport"]) == (os.getpid(), "AF_INET", "127.0.0.1",
                                                                      s.client_port)
    assert (rec["tx_bytes"], rec["rx_bytes"]) == (700, 3000)


@pytest.mark.parametrize("args,needle", [
    (["-p", "abc"], "-p"),
    (["-p", "0"], "-p"),
    (["-L", "70000"], "-L"),
    (["-D", "x"], "-D"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "kprobe"], "--hook"),
    (["--bogus"], "--bogus"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcplife", args, needle)


def test_ebpf_prints_the_source():
    r = run_cli("tcplife", "--ebpf")
    assert r.returncode == 0 and 'SEC("tp_btf/inet_sock_set_state")' in r.stdout and "bytes_acked" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_attached_after_exit(sig):
    released_on(sig, "tcplife", "--hook", "tracepoint")


def test_library_exception_releases_programs():
    with pytest.raises(RuntimeError):
        with TcpLife():
            mine = bpf_prog_ids(os.getpid())
            assert mine
            raise RuntimeError("boom")
    assert wait_until(lambda: not mine & bpf_prog_ids(), 5)
