"""tcptracer against real connections: C/A/X with the right process for each,
a reset handled in softirq, filters (PID, netns, family), CLI."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from helpers import PY_COMM, Cli, released_on, run_cli, usage_error
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.core.netattach import in_netns
from pytrace.tools.tcptracer import TcpTracer

ME = os.getpid()
MY_COMM = open("/proc/self/comm").read().strip()

# accept one connection; print port, then the peer's port; then either close
# when told ("close") or block in recv() until the peer resets it ("recv"),
# and then, "recvclose", close it only when told
SERVER = """
import socket, sys
host, mode = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
srv.bind((host, 0))
srv.listen(4)
print(srv.getsockname()[1], flush=True)
conn, peer = srv.accept()
print(peer[1], flush=True)
if mode == "close":
    sys.stdin.readline()
    conn.close()
else:
    try:
        conn.recv(10)
    except ConnectionResetError:
        pass
    if mode == "recvclose":                 # reset; close only when told
        print("reset", flush=True)
        sys.stdin.readline()
        conn.close()
print("done", flush=True)
"""


class Server:
    """A child process that accepts one connection from this process."""

    def __init__(self, host: str, mode: str = "close"):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, host, mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.host, self.port = host, int(self.proc.stdout.readline())

    def connect(self) -> socket.socket:
        c = socket.create_connection((self.host, self.port), timeout=5)
        assert int(self.proc.stdout.readline()) == c.getsockname()[1]    # accepted
        return c

    def close(self) -> None:
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()

    def wait(self) -> None:
        assert self.proc.stdout.readline().strip() == "done"
        self.proc.wait(10)


def rows(events, *ports) -> list[tuple]:
    return sorted((e.type, e.pid, e.comm, e.sport, e.dport) for e in events if e.sport in ports or e.dport in ports)


@pytest.mark.parametrize("hook,host", variants(TcpTracer, each=["127.0.0.1", "::1"]))
def test_connect_accept_close_exact(hook, host):
    addr = ipaddress.ip_address(host)
    with opened(TcpTracer, hook) as tracer:
        srv = Server(host)
        c = srv.connect()
        cport = c.getsockname()[1]
        c.close()                       # ESTABLISHED -> FIN_WAIT1, in this process
        srv.close()                     # CLOSE_WAIT -> LAST_ACK, in the child
        srv.wait()
        events = [e for e in tracer.events(duration=0.3) if srv.port in (e.sport, e.dport)]
        assert tracer.lost == 0
    child = srv.proc.pid
    assert sorted((e.type, e.pid, e.comm, e.sport, e.dport) for e in events) == sorted([
        ("C", ME, MY_COMM, cport, srv.port), ("X", ME, MY_COMM, cport, srv.port),
        ("A", child, PY_COMM, srv.port, cport), ("X", child, PY_COMM, srv.port, cport)])
    fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    assert {(e.family, e.saddr, e.daddr) for e in events} == {(fam, addr, addr)}
    assert {e.netns for e in events} == {os.stat("/proc/self/ns/net").st_ino}
    client = [e.type for e in events if e.sport == cport]
    server = [e.type for e in events if e.sport == srv.port]
    assert client == ["C", "X"] and server == ["A", "X"]


def test_reset_handled_in_softirq_names_the_owner():
    """The client aborts (SO_LINGER 0): its X is this process's close().  The
    server's side is reset in softirq, which runs in this process too, but the
    X names the child that accepted the connection, not the current task."""
    with TcpTracer() as tracer:
        srv = Server("127.0.0.1", mode="recv")
        c = srv.connect()
        cport = c.getsockname()[1]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        srv.wait()
        got = rows(tracer.events(duration=0.3), srv.port)
    child = srv.proc.pid
    assert got == sorted([("C", ME, MY_COMM, cport, srv.port), ("X", ME, MY_COMM, cport, srv.port),
                          ("A", child, PY_COMM, srv.port, cport), ("X", child, PY_COMM, srv.port, cport)])


def test_reset_of_a_connection_made_before_the_tracer_names_its_closer():
    """The reset side's X comes at its close (the child's exit here), in the child, as BCC's tcp_close()."""
    srv = Server("127.0.0.1", mode="recv")
    c = srv.connect()
    cport = c.getsockname()[1]
    with TcpTracer() as tracer:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        srv.wait()
        got = rows(tracer.events(duration=0.3), srv.port)
    assert got == sorted([("X", srv.proc.pid, PY_COMM, srv.port, cport), ("X", ME, MY_COMM, cport, srv.port)])


def test_reset_by_the_peer_is_an_x_at_close_time():
    """Issue 20: BCC reports X for a connection reset by the peer when its process
    closes it (tcp_close), not when the RST arrives."""
    srv = Server("127.0.0.1", mode="recvclose")
    with TcpTracer(pid=srv.proc.pid) as tracer:
        c = srv.connect()
        cport = c.getsockname()[1]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()                                           # RST: the child's recv() sees the reset
        assert srv.proc.stdout.readline().strip() == "reset"
        before = rows(tracer.events(duration=0.5), srv.port)
        srv.close()                                         # now the child closes its socket
        srv.wait()
        after = rows(tracer.events(duration=0.3), srv.port)
    child = srv.proc.pid
    assert before == [("A", child, PY_COMM, srv.port, cport)]
    assert after == [("X", child, PY_COMM, srv.port, cport)]


def test_pid_filter_keeps_only_that_process():
    srv = Server("::1")
    with TcpTracer(pid=srv.proc.pid) as tracer:
        c = srv.connect()
        cport = c.getsockname()[1]
        c.close()
        srv.close()
        srv.wait()
        got = rows(tracer.events(duration=0.3), srv.port)
    child = srv.proc.pid
    assert got == [("A", child, PY_COMM, srv.port, cport), ("X", child, PY_COMM, srv.port, cport)]


def test_netns_and_family_filters():
    ns = f"pt-tcptracer-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        inode = os.stat(f"/run/netns/{ns}").st_ino
        with in_netns(ns):
            srv4, cli4 = socket.socket(), socket.socket()
            srv6, cli6 = socket.socket(socket.AF_INET6), socket.socket(socket.AF_INET6)
        host_srv = socket.socket()
        with TcpTracer(netns=inode, family=socket.AF_INET) as tracer:
            ports = []
            for srv, c, host in ((srv4, cli4, "127.0.0.1"), (srv6, cli6, "::1"), (host_srv, socket.socket(), "127.0.0.1")):
                srv.bind((host, 0))
                srv.listen(1)
                c.connect((host, srv.getsockname()[1]))
                a, _ = srv.accept()
                ports.append((srv.getsockname()[1], c.getsockname()[1]))
                for s in (c, a, srv):
                    s.close()
            events = list(tracer.events(duration=0.3))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    (p4, c4) = ports[0]
    # the host's loopback connection and the namespace's IPv6 one are filtered out
    assert sorted((e.type, e.sport, e.dport, e.netns) for e in events) == sorted([
        ("C", c4, p4, inode), ("A", p4, c4, inode), ("X", c4, p4, inode), ("X", p4, c4, inode)])


def test_kprobe_variant_passes_the_verifier():
    """Even where kprobes cannot attach (the matrix attaches it where they can)."""
    with BpfObject("tcptracer", programs=set(TcpTracer.VARIANTS[0].programs)):
        pass


# -- CLI ------------------------------------------------------------------------

def test_cli_columns_and_time():
    srv = Server("127.0.0.1")
    cli = Cli("tcptracer", "-t", "-p", str(srv.proc.pid))
    header = cli.read_until(lambda l: "DPORT" in l)
    assert header.split() == ["TIME(s)", "T", "PID", "COMM", "IP", "SADDR", "DADDR", "SPORT", "DPORT"]
    c = srv.connect()
    cport = c.getsockname()[1]
    c.close()
    srv.close()
    srv.wait()
    cli.read_until(lambda l: l.split()[1:2] == ["X"])
    rc, lines, err = cli.stop()
    assert rc == 0, err
    got = [l.split() for l in lines if l.split()[1:2] in (["A"], ["X"])]
    pid = str(srv.proc.pid)
    assert [g[1:] for g in got] == [["A", pid, PY_COMM, "4", "127.0.0.1", "127.0.0.1", str(srv.port), str(cport)],
                                    ["X", pid, PY_COMM, "4", "127.0.0.1", "127.0.0.1", str(srv.port), str(cport)]]
    assert got[0][0] == "0.000"


def test_cli_verbose_words_netns_and_brackets():
    srv = Server("::1")
    cli = Cli("tcptracer", "-v", "-p", str(srv.proc.pid))
    header = cli.read_until(lambda l: "DPORT" in l)
    assert header.split() == ["TYPE", "PID", "COMM", "IP", "SADDR", "DADDR", "SPORT", "DPORT", "NETNS"]
    c = srv.connect()
    cport = c.getsockname()[1]
    line = cli.read_until(lambda l: l.startswith("accept"))
    c.close()
    srv.close()
    srv.wait()
    cli.stop()
    assert line.split() == ["accept", str(srv.proc.pid), PY_COMM, "6", "[::1]", "[::1]", str(srv.port), str(cport),
                            str(os.stat("/proc/self/ns/net").st_ino)]


def test_ebpf_prints_the_source():
    r = run_cli("tcptracer", "--ebpf")
    assert r.returncode == 0
    assert 'SEC("kretprobe/inet_csk_accept")' in r.stdout and "conntrack.h" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["-N", "x"], "-N"),
    (["-N", "4294967296"], "-N"),
    (["-p", "0"], "-p"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "tp_btf"], "--hook"),
    (["-T"], "-T"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcptracer", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_loaded_after_exit(sig):
    held = released_on(sig, "tcptracer")
    assert len(held) == 4       # state change, socket destroyed, accept4, accept


def test_record_replays_the_live_output(tmp_path):
    srv = Server("127.0.0.1")
    rec = tmp_path / "tcptracer.db"
    cli = Cli("tcptracer", "-t", "-p", str(srv.proc.pid), "--record", str(rec))
    c = srv.connect()
    c.close()
    srv.close()
    srv.wait()
    assert cli.read_until(lambda l: l.split()[1:2] == ["X"])
    rc, lines, err = cli.stop()
    assert rc == 0, err
    live = "".join(line + "\n" for line in lines)
    assert live.startswith("Tracing TCP established connections.")
    replayed = run_cli("replay", str(rec))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == live
