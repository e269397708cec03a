"""tcptop against real loopback connections: per-flow byte counts to the byte,
the PID and family filters, sorting, rows and the screen refresh."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime

import pytest

from helpers import PY_COMM, PYTRACE, Cli, bpf_prog_ids, released, run_cli
from ready import n_programs, started
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.tcptop import TcpTop

MY_COMM = open("/proc/self/comm").read().strip()
ME = os.getpid()


def exchange(host: str, up: int, down: int, peek: bool = True) -> tuple[int, int]:
    """One connection in this process: the client sends `up` bytes in several
    writes, the server reads them all and sends `down` back; the client peeks
    at the reply before reading it (a peek must not count).  Returns
    (client port, server port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname()[:2], timeout=5)
    acc, _ = srv.accept()
    acc.settimeout(5)
    try:
        sent = 0
        while sent < up:
            n = min(up - sent, 30000)
            cli.sendall(b"u" * n)
            sent += n
        got = 0
        while got < up:
            got += len(acc.recv(1 << 16))
        acc.sendall(b"d" * down)
        if peek and down:
            assert cli.recv(down, socket.MSG_PEEK | socket.MSG_WAITALL)
        got = 0
        while got < down:
            got += len(cli.recv(1 << 16))
        return cli.getsockname()[1], srv.getsockname()[1]
    finally:
        for s in (cli, acc, srv):
            s.close()


def key(f) -> tuple:
    return (f.pid, f.comm, str(f.laddr), f.lport, str(f.raddr), f.rport, f.rx_bytes, f.tx_bytes)


def expected(host: str, cport: int, sport: int, up: int, down: int, pid: int = ME,
             comm: str = MY_COMM) -> set[tuple]:
    return {(pid, comm, host, cport, host, sport, down, up),      # the client
            (pid, comm, host, sport, host, cport, up, down)}      # the accepted socket


@pytest.mark.parametrize("hook", variants(TcpTop))
def test_bytes_per_flow_exact(hook):
    with opened(TcpTop, hook, pid=ME) as top:
        assert top.variant.hook == hook
        c, s = exchange("127.0.0.1", 100000, 12345)
        flows = top.read()
        assert top.missed == 0
    # the PID filter leaves only this process's two sockets
    assert {key(f) for f in flows} == expected("127.0.0.1", c, s, 100000, 12345)
    assert all(f.family == socket.AF_INET for f in flows)


@pytest.mark.parametrize("family,keep,drop", [(socket.AF_INET6, "::1", "127.0.0.1"),
                                              (socket.AF_INET, "127.0.0.1", "::1")])
def test_family_filter(family, keep, drop):
    with TcpTop(pid=ME, family=family) as top:
        c, s = exchange(keep, 5000, 7000)
        exchange(drop, 3000, 2000)
        flows = top.read()
    assert {key(f) for f in flows} == expected(keep, c, s, 5000, 7000)


def test_read_takes_the_period_out_of_the_table():
    with TcpTop(pid=ME) as top:
        c1, s1 = exchange("127.0.0.1", 4000, 1000)
        first = top.read()
        empty = top.read()
        c2, s2 = exchange("127.0.0.1", 2000, 3000, peek=False)
        second = top.read()
    assert {key(f) for f in first} == expected("127.0.0.1", c1, s1, 4000, 1000)
    assert empty == []
    assert {key(f) for f in second} == expected("127.0.0.1", c2, s2, 2000, 3000)


CHILD = """
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname()); acc, _ = srv.accept()
sys.stdout.write(f"{cli.getsockname()[1]} {srv.getsockname()[1]}\\n"); sys.stdout.flush()
sys.stdin.readline()
cli.sendall(b"c" * 6000); n = 0
while n < 6000: n += len(acc.recv(65536))
acc.sendall(b"s" * 900); n = 0
while n < 900: n += len(cli.recv(65536))
"""


def test_pid_filter_keeps_only_that_process():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        cport, sport = map(int, child.stdout.readline().split())
        with TcpTop(pid=child.pid) as theirs, TcpTop(pid=ME) as mine:
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.wait(10) == 0
            c, s = exchange("127.0.0.1", 1500, 2500)
            t, m = theirs.read(), mine.read()
    finally:
        child.kill()
        child.wait()
    child_comm = os.path.basename(sys.executable)[:15]      # what execve names the task
    assert {key(f) for f in t} == expected("127.0.0.1", cport, sport, 6000, 900, child.pid, child_comm)
    assert {key(f) for f in m} == expected("127.0.0.1", c, s, 1500, 2500)


def cli_period(*args: str, up: int = 300000, down: int = 70000) -> tuple[list[str], tuple[int, int]]:
    """Run the CLI over one long period, make traffic, end it with Ctrl-C."""
    cli = started("tcptop", "-p", str(ME), *args, "30", links=n_programs(TcpTop, "tp_btf"))
    ports = exchange("127.0.0.1", up, down)
    time.sleep(0.05)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    return lines, ports


def test_cli_table():
    lines, (c, s) = cli_period()
    assert lines[0] == "Tracing... Output every 30 secs. Hit Ctrl-C to end"
    assert lines[1] == ""                                  # not a terminal: no clearing
    assert lines[2].split()[1] == "loadavg:" and lines[3] == ""
    time.strptime(lines[2].split()[0], "%H:%M:%S")
    assert lines[4].split() == ["PID", "COMM", "LADDR", "RADDR", "RX_KB", "TX_KB"]
    rows = [line.split() for line in lines[5:] if line]
    assert rows == [[str(ME), MY_COMM[:12], f"127.0.0.1:{c}", f"127.0.0.1:{s}", "68", "292"],
                    [str(ME), MY_COMM[:12], f"127.0.0.1:{s}", f"127.0.0.1:{c}", "292", "68"]] or \
        rows == [[str(ME), MY_COMM[:12], f"127.0.0.1:{s}", f"127.0.0.1:{c}", "292", "68"],
                 [str(ME), MY_COMM[:12], f"127.0.0.1:{c}", f"127.0.0.1:{s}", "68", "292"]]


def test_cli_ipv6_table_and_no_summary():
    cli = started("tcptop", "-p", str(ME), "-S", "-C", "30", links=n_programs(TcpTop, "tp_btf"))
    c, s = exchange("::1", 4096, 2048)
    time.sleep(0.05)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert not any("loadavg" in line for line in lines)
    head = lines.index(next(line for line in lines if line.startswith("PID")))
    assert lines[head].split() == ["PID", "COMM", "LADDR6", "RADDR6", "RX_KB", "TX_KB"]
    assert lines[head - 1] == ""
    rows = {tuple(line.split()) for line in lines[head + 1:] if line}
    assert rows == {(str(ME), MY_COMM[:12], f"::1:{c}", f"::1:{s}", "2", "4"),
                    (str(ME), MY_COMM[:12], f"::1:{s}", f"::1:{c}", "4", "2")}


@pytest.mark.parametrize("sort,side", [("sent", "client"), ("received", "server")])
def test_cli_sort_and_rows(sort, side):
    lines, (c, s) = cli_period("-s", sort, "-r", "1", "-S")
    rows = [line.split() for line in lines if line.startswith(str(ME))]
    # the client sent most, the server received most: with one row, only that one
    assert len(rows) == 1
    assert rows[0][2] == f"127.0.0.1:{c if side == 'client' else s}"
    assert "(1 more connection not shown: -r 1)" in lines      # and it says a row was cut


def test_cli_prints_every_row_by_default():
    """Issue 20: at most 20 rows were printed, silently; BCC prints every session."""
    cli = started("tcptop", "-p", str(ME), "-S", "30", links=n_programs(TcpTop, "tp_btf"))
    ports = [exchange("127.0.0.1", 1000 + i, 500) for i in range(12)]        # 24 flows
    time.sleep(0.05)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    rows = {tuple(line.split()[2:4]) for line in lines if line.startswith(str(ME))}
    assert rows == {(f"127.0.0.1:{a}", f"127.0.0.1:{b}") for c, s in ports for a, b in ((c, s), (s, c))}
    assert not any("not shown" in line for line in lines)


CG_CHILD = """
import socket, sys
sys.stdin.readline()                         # moved into the cgroup by now
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
c.sendall(b"x" * 3333); got = 0
while got < 3333:
    got += len(a.recv(65536))
print(c.getsockname()[1], srv.getsockname()[1], flush=True)
for s in (c, a, srv):
    s.close()
"""


def test_cli_cgroup_path_filters_in_the_kernel():
    """Issue 20: `tcptop -c PATH` failed to parse; it is libbpf-tools' cgroup filter: only
    tasks in that cgroup v2 directory (and below), here a child moved into one of the test's.  It is
    filter.h's --cgroup, spelled as libbpf-tools spell it."""
    from pytrace.core.containers import cgroup2_mount
    from pytrace.core.errors import PytraceError
    try:
        mount = cgroup2_mount()
    except PytraceError:
        pytest.skip("no cgroup v2 hierarchy is mounted here")
    cg = os.path.join(mount, f"pytrace-tcptop-{ME}")
    os.mkdir(cg)
    child = subprocess.Popen([sys.executable, "-c", CG_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        with open(os.path.join(cg, "cgroup.procs"), "w") as fh:
            fh.write(str(child.pid))
        cli = started("tcptop", "-S", "-c", cg, "30", links=n_programs(TcpTop, "tp_btf"))
        exchange("127.0.0.1", 2222, 1111)                 # this process: not in the cgroup
        child.stdin.write("go\n")
        child.stdin.flush()
        cport, sport = map(int, child.stdout.readline().split())
        child.wait(10)
        time.sleep(0.05)
        rc, lines, err = cli.stop()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.rmdir(cg)
    assert rc == 0, err
    rows = {tuple(line.split()) for line in lines if line.split()[:1] == [str(child.pid)]}
    assert rows == {(str(child.pid), PY_COMM[:12], f"127.0.0.1:{cport}", f"127.0.0.1:{sport}", "0", "3"),
                    (str(child.pid), PY_COMM[:12], f"127.0.0.1:{sport}", f"127.0.0.1:{cport}", "3", "0")}
    assert not [line for line in lines if line.split()[:1] == [str(ME)]]      # ours filtered out in the kernel
    bad = run_cli("tcptop", "-c", "/proc")
    assert bad.returncode == 2 and "cgroup v2" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_cli_json_exact_bytes():
    lines, (c, s) = cli_period("--json", up=123457, down=54321)
    recs = [json.loads(line) for line in lines]
    got = {(r["pid"], r["comm"], r["family"], r["laddr"], r["lport"], r["raddr"], r["rport"],
            r["rx_bytes"], r["tx_bytes"]) for r in recs}
    assert got == {(ME, MY_COMM, "AF_INET", "127.0.0.1", c, "127.0.0.1", s, 54321, 123457),
                   (ME, MY_COMM, "AF_INET", "127.0.0.1", s, "127.0.0.1", c, 123457, 54321)}
    # the interval's end: wall clock (RFC 3339, with the zone) and the kernel's monotonic ns
    assert len({(r["time"], r["ts_ns"]) for r in recs}) == 1
    wall = datetime.fromisoformat(recs[0]["time"]).timestamp()
    assert abs(wall * 1e9 - recs[0]["ts_ns"] - (time.time_ns() - time.monotonic_ns())) < 1e6
    assert list(recs[0]) == ["time", "ts_ns", "pid", "comm", "family", "laddr", "lport", "raddr", "rport",
                             "rx_bytes", "tx_bytes", "cgroup_id", "netns"]
    assert all(r["cgroup_id"] == r["netns"] == 0 for r in recs)      # filled with --show-container only


def run_on_tty(*args: str, traffic: bool = True) -> bytes:
    """The CLI with its stdout on a pseudo-terminal, two periods of one second."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*PYTRACE, "tcptop", "-p", str(ME), *args, "1", "2"], stdout=slave,
                            stderr=subprocess.PIPE, env={**os.environ})
    os.close(slave)
    out = b""
    try:
        if traffic:
            time.sleep(0.5)
            exchange("127.0.0.1", 2048, 1024)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return out


def test_refreshes_in_place_on_a_terminal_unless_told_not_to():
    clearing = run_on_tty()
    assert clearing.count(b"\033[H\033[2J") == 2
    plain = run_on_tty("-C", traffic=False)
    assert b"\033" not in plain and plain.count(b"loadavg") == 2


def test_kprobe_variant_passes_the_verifier():
    """kprobes on tcp_sendmsg/tcp_cleanup_rbuf are the preferred variant where
    they exist; here they cannot attach, but must load, and forcing them says why."""
    from pytrace.core import features
    progs = {"tcptop_kprobe_send", "tcptop_kprobe_recv"}
    with BpfObject("tcptop", programs=progs, rodata={"targ_pid": ME}) as obj:
        assert all(obj.program_fd(p) > 0 for p in progs)
    usable, _ = features.probe("kprobe")
    if not usable:
        r = run_cli("tcptop", "--hook", "kprobe", "1", "1")
        assert r.returncode == 1 and "kprobe" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [["-p", "x"], ["-p", "0"], ["-s", "bogus"], ["-r", "0"], ["-4", "-6"],
                                  ["0"], ["1", "0"], ["1", "2", "3"], ["--nope"]])
def test_bad_input(args):
    r = run_cli("tcptop", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_attached(sig):
    cli = Cli("tcptop", "-C")
    mine = bpf_prog_ids(cli.proc.pid)     # (other tracers may run at the same time)
    assert mine
    assert cli.read_until(lambda line: line.startswith("Tracing..."))   # set up and waiting
    rc, lines, err = cli.stop(sig)
    assert rc == 0, err
    assert lines[0].startswith("Tracing...") and len(lines) > 1     # the last period is printed
    assert released(mine)
