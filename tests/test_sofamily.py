"""sofamily: the families of the sockets, connects and accepts this process makes."""

from __future__ import annotations

import os
import socket
from collections import Counter

from helpers import run_cli
from ready import n_programs, started
from matrix import covers
from pytrace.tools.sofamily import SoFamily

ME = os.getpid()
AF_INET, AF_INET6, AF_UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX


def workload() -> Counter:
    """Sockets of three families, connected and accepted; returns (kind, family) -> calls."""
    srv4 = socket.socket(AF_INET)
    srv6 = socket.socket(AF_INET6)
    srvu = socket.socket(AF_UNIX)
    srv4.bind(("127.0.0.1", 0))
    srv6.bind(("::1", 0))
    srvu.bind(f"\0pt-sofamily-{ME}")
    for s in (srv4, srv6, srvu):
        s.listen(4)
    clients = [socket.socket(AF_INET), socket.socket(AF_INET), socket.socket(AF_INET6), socket.socket(AF_UNIX)]
    for c, srv in zip(clients, (srv4, srv4, srv6, srvu)):
        c.connect(srv.getsockname())
    accepted = [srv.accept()[0] for srv in (srv4, srv4, srv6, srvu)]
    for s in (srv4, srv6, srvu, *clients, *accepted):
        s.close()
    return Counter({("socket", AF_INET): 3, ("socket", AF_INET6): 2, ("socket", AF_UNIX): 2,
                    ("connect", AF_INET): 2, ("connect", AF_INET6): 1, ("connect", AF_UNIX): 1,
                    ("accept", AF_INET): 2, ("accept", AF_INET6): 1, ("accept", AF_UNIX): 1})


@covers("sofamily", "tracepoint")
def test_families_of_the_tests_sockets():
    with SoFamily(pid=ME) as sf:
        expected = workload()
        counts = sf.counts(clear=True)
        assert sf.counts() == []
    got = Counter()
    for c in counts:
        assert (c.pid, c.comm) == (ME, open("/proc/self/comm").read().strip())
        got[(c.kind, c.family)] += c.count
    assert got == expected
    assert {c.family.name for c in counts} == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_cli_json_and_text():
    cli = started("sofamily", "-p", str(ME), "--json", links=n_programs(SoFamily, "tracepoint"))
    expected = workload()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    got = Counter()
    for r in cli.json_records():
        got[(r["kind"], socket.AddressFamily[r["family"]])] += r["count"]
        assert r["pid"] == ME
    assert got == expected

    cli = started("sofamily", "-p", str(ME), links=n_programs(SoFamily, "tracepoint"))
    with socket.socket(AF_INET6):
        pass
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[1].split() == ["KIND", "PID", "COMM", "FAM", "FAMILY", "COUNT"]
    assert lines[2].split()[:2] == ["socket", str(ME)] and lines[2].split()[-3:] == ["10", "AF_INET6", "1"]


def test_bad_input_exits_2():
    for argv in (["-i", "0"], ["-p", "x"], ["--hook", "kprobe"]):
        r = run_cli("sofamily", *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
