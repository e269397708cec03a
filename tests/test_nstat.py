"""nstat against a network namespace the test owns: its counters move only with
the test's own connections, so the deltas are exact."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from helpers import Cli, netns, run_cli, sh, wait_until
from pytrace.core.netattach import in_netns
from pytrace.tools.nstat import NetStat, is_key, parse, read_counters


@pytest.fixture
def ns():
    with netns(f"pt-nstat-{os.getpid()}") as name:
        sh(f"ip -n {name} link set lo up")
        yield name


def connections(ns: str, n: int) -> None:
    """n complete loopback TCP connections inside the namespace."""
    with in_netns(ns):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(n)
        port = srv.getsockname()[1]
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            a, _ = srv.accept()
            c.sendall(b"x")
            assert a.recv(1) == b"x"
            c.close()
            a.close()
        srv.close()


def test_parse_pairs_and_snmp6():
    text = "Tcp: ActiveOpens PassiveOpens\nTcp: 5 7\nUdp: InDatagrams\nUdp: 3\n"
    assert parse(text, "snmp") == {"TcpActiveOpens": 5, "TcpPassiveOpens": 7, "UdpInDatagrams": 3}
    assert parse("Ip6InReceives   \t499\nUdp6InErrors 2\n", "snmp6") == {"Ip6InReceives": 499,
                                                                         "Udp6InErrors": 2}
    assert is_key("TcpExtListenOverflows") and is_key("TcpRetransSegs") and is_key("TcpOutRsts")
    assert not is_key("TcpActiveOpens")


def test_deltas_are_the_tests_connections_and_listen_overflow(ns):
    n = 5
    stat = NetStat(["Tcp*"], netns=ns)
    stat.sample()
    connections(ns, n)
    # a listener with backlog 0 that never accepts: the first connection fills
    # its queue, the second one's SYN overflows it
    with in_netns(ns):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        first = socket.create_connection(("127.0.0.1", port), timeout=5)
        second = socket.socket()
        second.setblocking(False)
        assert second.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
    try:
        assert wait_until(lambda: read_counters(ns)["TcpExtListenOverflows"] >= 1, 5)
        sample = stat.sample()
    finally:
        for s in (first, second, srv):
            s.close()
    d = sample.deltas()
    assert d["TcpActiveOpens"] == n + 2
    assert d["TcpPassiveOpens"] == n + 1
    assert d["TcpExtListenOverflows"] >= 1
    assert d["TcpExtListenDrops"] >= d["TcpExtListenOverflows"]
    assert sample.get("TcpExtListenOverflows").key and not sample.get("TcpActiveOpens").key
    assert all(c.name.startswith("Tcp") and c.delta != 0 for c in sample)
    assert sample.interval is not None and sample.get("TcpActiveOpens").rate > 0


def test_absolute_json_in_a_fresh_namespace(ns):
    connections(ns, 3)
    r = run_cli("nstat", "-a", "--json", "--netns", ns, "TcpActiveOpens", "TcpPassiveOpens", "Udp*")
    assert r.returncode == 0, r.stderr
    import json
    recs = {rec["name"]: rec for rec in map(json.loads, r.stdout.splitlines())}
    assert set(recs) == {"TcpActiveOpens", "TcpPassiveOpens"}    # zero Udp counters left out
    assert recs["TcpActiveOpens"]["total"] == recs["TcpActiveOpens"]["delta"] == 3
    assert recs["TcpPassiveOpens"]["total"] == 3
    assert recs["TcpActiveOpens"]["key"] is False


def test_cli_intervals_add_up_to_the_connections_made(ns):
    cli = Cli("nstat", "--netns", ns, "-i", "1", "-z", "TcpActiveOpens", ready=False)
    assert cli.read_until(lambda line: line.startswith("#kernel"), 10)
    connections(ns, 4)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    rows = [line.split() for line in lines if "TcpActiveOpens" in line]
    assert rows, lines
    assert sum(int(r[1]) for r in rows) == 4


@pytest.mark.parametrize("argv", [["-i", "0"], ["-i", "x"], ["-c", "-1"], ["bad pattern"],
                                  ["--netns", "pt-no-such-ns"]])
def test_bad_input_exits_2_with_one_line(argv):
    r = run_cli("nstat", *argv)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
