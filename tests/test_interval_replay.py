"""The aggregating tools and the sinks (cli/aggregate.print_loop): each one,
run with --record FILE over real connections of this process, stores its
intervals as snapshots whose rows are exactly the traffic made, and
`pytrace replay FILE` prints them again byte for byte (text), and as the
tool's --json."""

from __future__ import annotations

import contextlib
import json
import time
import os
import socket
import sqlite3
from collections import Counter
from typing import Callable

import pytest

from helpers import Cli, inside, netns, run_cli, sh
from ready import n_programs, started
from pytrace.tools.so1stbyte import So1stByte
from pytrace.tools.socketio import SocketIO
from pytrace.tools.socksize import SockSize
from pytrace.tools.sockstat import SockStat
from pytrace.tools.soconnlat import SoConnLat
from pytrace.tools.sofamily import SoFamily
from pytrace.tools.softirqs import SoftIrqs
from pytrace.tools.soprotocol import SoProtocol
from pytrace.tools.tcpsubnet import TcpSubnet
from pytrace.tools.tcptop import TcpTop

ME = os.getpid()
N, UP, DOWN = 3, 3000, 700      # connections, bytes client -> server, bytes back

def connections(ns: str | None = None) -> list[tuple[int, int]]:
    """N connections made by this process (in namespace ns if given): one
    socket() for the listener and one per client, a bind, a connect and an
    accept each, UP bytes sent and read in one call each, DOWN back.
    Returns (client port, server port) per connection."""
    with inside(ns) if ns else contextlib.nullcontext():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(N)
        clients = [socket.create_connection(srv.getsockname()) for _ in range(N)]
    ports = []
    for c in clients:
        a, _ = srv.accept()
        c.sendall(b"u" * UP)
        assert len(a.recv(UP, socket.MSG_WAITALL)) == UP
        a.sendall(b"d" * DOWN)
        assert len(c.recv(DOWN, socket.MSG_WAITALL)) == DOWN
        ports.append((c.getsockname()[1], srv.getsockname()[1]))
        c.close()
        a.close()
    srv.close()
    return ports


def rows_of(path: str) -> list[dict]:
    db = sqlite3.connect(path)
    snaps = [json.loads(d) for (d,) in db.execute("SELECT data FROM snapshots ORDER BY id")]
    db.close()
    return [dict(s["labels"], **s["values"], hist=s.get("hist")) for snap in snaps for s in snap["series"]]


def replayed(*args: str) -> str:
    r = run_cli("replay", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


# -- what each tool must have recorded ------------------------------------------

def sofamily(rows: list[dict], js: list[dict], ports) -> None:
    got = Counter()
    for r in js:
        assert r["pid"] == ME
        got[(r["kind"], r["family"])] += r["count"]
    assert got == {("socket", "AF_INET"): N + 1, ("connect", "AF_INET"): N, ("accept", "AF_INET"): N}
    assert sum(int(r["count"]) for r in rows) == 3 * N + 1


def soprotocol(rows, js, ports) -> None:
    got = Counter()
    for r in js:
        got[(r["kind"], r["kproto"], r["protocol"])] += r["count"]
    assert got == {("connect", "TCP", "IPPROTO_TCP"): N, ("accept", "TCP", "IPPROTO_TCP"): N}


def socketio(rows, js, ports) -> None:
    got = Counter()
    for r in js:
        got[(r["dir"], r["proto"], r["lport"], r["rport"])] += r["bytes"]
    want = Counter()
    for c, s in ports:     # by remote port: the clients' sends go to the one server port
        want.update({("send", "TCP", 0, s): UP, ("recv", "TCP", 0, s): DOWN,
                     ("send", "TCP", 0, c): DOWN, ("recv", "TCP", 0, c): UP})
    assert got == want
    assert sum(r["calls"] for r in js) == 4 * N


def socksize(rows, js, ports) -> None:
    hists = {r["dir"]: r for r in js}
    assert set(hists) == {"send", "recv"} and all(r["pid"] == ME for r in js)
    for h in hists.values():
        assert (h["count"], h["sum"], h["unit"]) == (2 * N, N * (UP + DOWN), "bytes")
        assert {(b["low"], b["count"]) for b in h["buckets"] if b["count"]} == {(512, N), (2048, N)}


def so1stbyte(rows, js, ports) -> None:
    assert [(r["pid"], r["count"]) for r in js] == [(ME, N)]


def soconnlat(rows, js, ports) -> None:
    assert sum(r["count"] for r in js) == N and all(r["pid"] == ME for r in js)
    assert all("connect" in r["ustack"][0] for r in js)
    assert {r["ustack"] for r in rows} == {"\n".join(r["ustack"]) for r in js}


def sockstat(rows, js, ports) -> None:
    total = Counter()
    for r in js:
        total[r["counter"]] += r["count"]
    assert total == {"socket": N + 1, "socketpair": 0, "bind": 1, "connect": N, "accept": 0, "accept4": N,
                     "send": 2 * N, "recv": 2 * N}


def tcptop(rows, js, ports) -> None:
    got = {(r["laddr"], r["lport"], r["raddr"], r["rport"], r["rx_bytes"], r["tx_bytes"]) for r in js}
    assert got == {("127.0.0.1", c, "127.0.0.1", s, DOWN, UP) for c, s in ports} | \
        {("127.0.0.1", s, "127.0.0.1", c, UP, DOWN) for c, s in ports}
    assert all(r["pid"] == ME for r in js)


def tcpsubnet(rows, js, ports) -> None:
    total = Counter()
    for r in js:
        total[r["subnet"]] += r["bytes"]
    assert total == {"127.0.0.0/8": N * (UP + DOWN)}


def softirqs(rows, js, ports) -> None:
    # soft IRQs never stop (timers at least) and are nobody's own: what the
    # JSON replay shows is exactly what was recorded, vector by vector
    assert js and all(r["count"] >= 1 for r in js)
    assert sorted((r["softirq"], r["vec"], r["count"], r["total_ns"]) for r in js) == \
        sorted((r["softirq"], int(r["vec"]), r["count"], r["total_ns"]) for r in rows)


# tool, its flags, the tracer class and hook (to wait for every link), the check
CASES: list[tuple[str, list[str], type, str, Callable]] = [
    ("sofamily", ["-p", str(ME), "-T"], SoFamily, "tracepoint", sofamily),
    ("soprotocol", ["-p", str(ME)], SoProtocol, "tracepoint", soprotocol),
    ("socketio", ["-p", str(ME), "-T"], SocketIO, "tp_btf", socketio),
    ("socksize", ["-p", str(ME)], SockSize, "tp_btf", socksize),
    ("so1stbyte", ["-p", str(ME), "-T"], So1stByte, "tracepoint", so1stbyte),
    ("soconnlat", ["-p", str(ME)], SoConnLat, "tracepoint", soconnlat),
    ("sockstat", ["-p", str(ME), "-z"], SockStat, "tp_btf", sockstat),
    ("tcptop", ["-p", str(ME), "30"], TcpTop, "tp_btf", tcptop),
    ("softirqs", ["-T"], SoftIrqs, "tp_btf", softirqs),
]


@pytest.mark.parametrize("tool,flags,cls,hook,check", CASES, ids=[c[0] for c in CASES])
def test_recorded_intervals_replay_byte_for_byte(tmp_path, tool, flags, cls, hook, check):
    path = str(tmp_path / f"{tool}.db")
    cli = started(tool, *flags, "--record", path, links=n_programs(cls, hook))
    ports = connections()
    if tool == "softirqs":
        time.sleep(0.5)   # soft IRQs are nobody's own: give timers a moment so the interval has rows
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert replayed(path) == "".join(line + "\n" for line in lines)
    js = [json.loads(line) for line in replayed(path, "--json").splitlines()]
    check(rows_of(path), js, ports)


def test_tcpsubnet_in_a_namespace_of_its_own(tmp_path):
    """tcpsubnet counts every sender on the machine: a namespace of this test
    (-N) makes the bytes exactly ours."""
    path = str(tmp_path / "tcpsubnet.db")
    with netns(f"pt-ivreplay-{os.getpid()}") as ns:
        sh(f"ip -n {ns} link set lo up")
        cli = started("tcpsubnet", "-N", ns, "-f", "K", "127.0.0.0/8,0.0.0.0/0", "--record", path,
                      links=n_programs(TcpSubnet, "tp_btf"))
        ports = connections(ns)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[2:] == [f"{'127.0.0.0/8':<21} {N * (UP + DOWN) // 1024:>6}"]
    assert replayed(path) == "".join(line + "\n" for line in lines)
    # --json has the library's bytes (-f K is for the text and BCC's -J)
    js = [json.loads(line) for line in replayed(path, "--json").splitlines()]
    tcpsubnet(rows_of(path), js, ports)


def test_nstat_in_a_namespace_of_its_own(tmp_path):
    """nstat (no BPF) records its intervals too: a namespace's counters move
    only with this test's connections."""
    path = str(tmp_path / "nstat.db")
    with netns(f"pt-ivreplay-n-{os.getpid()}") as ns:
        sh(f"ip -n {ns} link set lo up")
        cli = Cli("nstat", "--netns", ns, "-i", "1", "-T", "TcpActiveOpens", "TcpPassiveOpens", "--record", path,
                  ready=False)
        assert cli.read_until(lambda line: line.startswith("#kernel"), 10)
        connections(ns)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    assert replayed(path) == "".join(line + "\n" for line in lines)
    total = Counter()
    for r in map(json.loads, replayed(path, "--json").splitlines()):
        total[r["name"]] += r["delta"]
    assert total == {"TcpActiveOpens": N, "TcpPassiveOpens": N}


# -- count and stackcount (their own loop over cli/aggregate.print_loop) ---------------

def test_count_replays_wildcards_typed_keys_and_processes(tmp_path):
    """The header counts what the wildcard resolved to live; ret keys come back
    as numbers (errno names in text), per-process keys with their pid."""
    from test_count import failed_connects, good_connects
    path = str(tmp_path / "count.db")
    cli = started("count", "syscalls:sys_exit_conn*", "syscalls:sys_exit_accept*", "--by", "ret", "-P", "-T",
                  "-p", str(ME), "--record", path, links=3)
    failed_connects(3)
    good_connects(2)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0] == ("Tracing 3 tracepoints for 'syscalls:sys_exit_conn* syscalls:sys_exit_accept*'..."
                        " Hit Ctrl-C to end.")
    assert replayed(path) == "".join(line + "\n" for line in lines)
    js = [json.loads(line) for line in replayed(path, "--json").splitlines()]
    comm = open(f"/proc/{ME}/comm").read().strip()
    assert all(list(r["key"]) == ["ret"] for r in js)
    assert sorted((r["tracepoint"], r["key"]["ret"], r["pid"], r["comm"], r["count"]) for r in js) == [
        ("syscalls:sys_exit_connect", -111, ME, comm, 3), ("syscalls:sys_exit_connect", 0, ME, comm, 2)]
    assert sorted((r["key.ret"], r["count"]) for r in rows_of(path)) == [("-111", 3), ("0", 2)]


def test_count_replays_string_keys(tmp_path):
    from test_count import UDP_HDRS, DummyNet
    path = str(tmp_path / "count-str.db")
    with DummyNet() as net:
        cli = started("count", "net:net_dev_xmit", "--by", "name,len", "--filter", f"name == {net.dev}",
                      "-p", str(ME), "--json", "--record", path, links=1)
        net.send(4, 100)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    assert replayed(path) == "".join(line + "\n" for line in lines)
    js = [json.loads(line) for line in lines]
    assert [(r["key"], r["count"]) for r in js] == [({"name": net.dev, "len": 100 + UDP_HDRS}, 4)]
    assert replayed(path, "--where", f"key.name={net.dev}") == replayed(path)


def test_stackcount_replays_symbolized_stacks(tmp_path):
    """Frames are stored as text: replay prints them without kallsyms."""
    from test_count import DummyNet
    path = str(tmp_path / "stackcount.db")
    with DummyNet() as net:
        cli = started("stackcount", "-K", "-T", "-p", str(ME), "--filter", f"name == {net.dev}",
                      "net:net_dev_xmit", "--record", path, links=1)
        net.send(3, 200)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    assert replayed(path) == "".join(line + "\n" for line in lines)
    js = [json.loads(line) for line in replayed(path, "--json").splitlines()]
    assert sum(r["count"] for r in js) == 3 and all(r["ustack"] is None for r in js)
    assert all(r["kstack"][0].startswith("dev_hard_start_xmit") and
               any(f.startswith("udp_sendmsg") for f in r["kstack"]) for r in js)
    assert [r["kstack"].split("\n") for r in rows_of(path)] == [r["kstack"] for r in js]


def test_stackcount_replays_user_stacks_folded(tmp_path):
    from test_count import failed_connects
    path = str(tmp_path / "stackcount-u.db")
    cli = started("stackcount", "-U", "-f", "-d", "-p", str(ME), "syscalls:sys_enter_connect",
                  "--record", path, links=1)
    failed_connects(2)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert replayed(path) == "".join(line + "\n" for line in lines)
    comm = open(f"/proc/{ME}/comm").read().strip()
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 2
    assert all(line.startswith(comm + ";") and "connect" in line.rsplit(" ", 1)[0].split(";")[-1]
               for line in lines)
