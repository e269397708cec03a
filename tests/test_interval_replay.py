"""The aggregating tools and the sinks (core/aggregate.print_loop): each one,
run with --record FILE over real connections of this process, stores its
intervals as snapshots whose rows are exactly the traffic made, and
`pytrace replay FILE` prints them again byte for byte (text), and as the
tool's --json."""

from __future__ import annotations

import contextlib
import json
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
        got[(r["kind"], r["family_name"])] += r["count"]
    assert got == {("socket", "AF_INET"): N + 1, ("connect", "AF_INET"): N, ("accept", "AF_INET"): N}
    assert sum(int(r["count"]) for r in rows) == 3 * N + 1


def soprotocol(rows, js, ports) -> None:
    got = Counter()
    for r in js:
        got[(r["kind"], r["kproto"], r["protocol_name"])] += r["count"]
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
        total.update({k: v for k, v in r.items() if k != "ts"})
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
        total.update(r["entries"])
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
    js = [json.loads(line) for line in replayed(path, "--json").splitlines()]
    for r in js:     # -f K in JSON is a true division, like BCC
        r["entries"] = {k: round(v * 1024) for k, v in r["entries"].items()}
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
