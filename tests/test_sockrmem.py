"""sockrmem: the receive buffer fill of this process's sockets, and the full
queue of a ping socket the test floods."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import struct

import pytest

from helpers import netns, run_cli, sh, wait_until
from ready import n_programs, started
from test_influx import ENV as INFLUX_ENV, influx  # noqa: F401 (the fixture: a private InfluxDB)
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.core.netattach import in_netns
from pytrace.tools.sockrmem import EVENTS, SockRmem

ME = os.getpid()


def replayed(*args: str) -> str:
    r = run_cli("replay", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout
SO_MEMINFO = 55
RMEM_ALLOC, RCVBUF, DROPS = 0, 1, 8     # SK_MEMINFO_* indices


def meminfo(s: socket.socket) -> tuple[int, ...]:
    return struct.unpack("<9I", s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))


@contextlib.contextmanager
def small_ping_socket(tag: str):
    """(socket, its SO_RCVBUF): an unprivileged ICMP echo socket in a namespace
    of its own, asked for 3001 bytes of receive buffer (the kernel doubles it)
    so that a few echo replies fill its queue."""
    with netns(f"pt-sockrmem{tag}-{ME}") as ns:
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv4.ping_group_range='0 0'")
        with in_netns(ns):
            ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        with ping:
            ping.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 3001)
            yield ping, ping.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


@pytest.mark.parametrize("hook", variants(SockRmem))
def test_fill_and_limit_at_each_receive(hook):
    with opened(SockRmem, hook, pid=ME) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        for _ in range(4):
            tx.sendto(b"z" * 100, rx.getsockname())
        seen = []
        for _ in range(3):
            seen.append(meminfo(rx))                          # as the receive will find it
            assert len(rx.recv(200)) == 100
        alloc, limit = t.histograms()
    assert alloc.count == limit.count == 3
    assert alloc.sum == sum(m[RMEM_ALLOC] for m in seen)
    assert all(m[RMEM_ALLOC] > 0 for m in seen)
    assert limit.sum == 3 * seen[0][RCVBUF]
    assert limit.slots[seen[0][RCVBUF].bit_length() - 1] == 3


def test_full_ping_queue_events_equal_its_drops():
    n = 40
    with small_ping_socket("") as (ping, rcvbuf), SockRmem(pid=ME) as t:
        ping.setblocking(False)
        drops = flood(ping, n)          # asserts drops > 0 and replies read + drops == n
        events = [e for e in t.events(duration=0.3) if e.rcvbuf == rcvbuf]
    assert len(events) == drops
    for e in events:
        assert e.probe == EVENTS[0] and e.rmem_alloc >= rcvbuf and e.truesize > 300


def test_kprobe_variant_passes_the_verifier():
    variant = SockRmem.VARIANTS[0]
    assert variant.hook == "kprobe"
    with BpfObject("sockrmem", programs=variant.programs, rodata={"targ_tgid": ME}):
        pass


def test_cli_json_histograms():
    cli = started("sockrmem", "-p", str(ME), "--json", links=n_programs(SockRmem, "tracepoint"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"z", rx.getsockname())
        rcvbuf = meminfo(rx)[RCVBUF]
        rx.recv(10)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = {r["name"]: r for r in cli.json_records() if "buckets" in r}       # the histograms
    assert recs["rmem_limit"]["count"] == 1 and recs["rmem_limit"]["sum"] == rcvbuf
    assert recs["rmem_alloc"]["count"] == 1 and recs["rmem_alloc"]["sum"] > 0


def flood(ping: socket.socket, n: int) -> int:
    """n echo requests to a ping socket whose queue holds a few: returns how
    many replies it dropped (each a queue-full event), after reading the rest."""
    before = meminfo(ping)[DROPS]
    for seq in range(n):
        ping.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, seq) + b"p" * 300, ("127.0.0.1", 0))
    drops = meminfo(ping)[DROPS] - before
    got = 0
    try:
        while True:
            ping.recv(1000)
            got += 1
    except BlockingIOError:
        pass
    assert drops > 0 and got + drops == n
    return drops


def udp_receives(n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        for _ in range(n):
            tx.sendto(b"z" * 50, rx.getsockname())
            assert len(rx.recv(100)) == 50


def test_record_holds_events_and_intervals_and_replays_them_in_order(tmp_path):
    """--record keeps the queue-full events and each interval's histograms in
    one 'mixed' recording; replay prints them byte for byte, in the order they
    were printed (the first flood's events before the first interval)."""
    path = str(tmp_path / "sockrmem.db")
    with small_ping_socket("-r") as (ping, rcvbuf):
        ping.setblocking(False)
        cli = started("sockrmem", "-p", str(ME), "-i", "1", "-T", "--record", path,
                      links=n_programs(SockRmem, "tracepoint"))
        first = flood(ping, 30)
        udp_receives(2)
        assert cli.read_until(lambda line: line.startswith("@rmem_limit"), 10)
        second = flood(ping, 30)
        udp_receives(1)
        # stop once every event of ours is printed (what was printed is what must replay)
        mine = f"> rcvbuf {rcvbuf},"
        left = [first + second - sum(mine in line for line in cli.seen)]

        def all_seen(line: str) -> bool:
            left[0] -= mine in line
            return left[0] <= 0
        assert left[0] <= 0 or cli.read_until(all_seen, 10)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    assert replayed(path) == "".join(line + "\n" for line in lines)
    js = [json.loads(line) for line in replayed(path, "--json").splitlines()]
    ours = [i for i, r in enumerate(js) if "buckets" not in r and r.get("rcvbuf") == rcvbuf]
    hists = [i for i, r in enumerate(js) if "buckets" in r]
    assert len(ours) == first + second
    assert ours[first - 1] < hists[0] < ours[first]
    assert all(js[i]["probe"] == EVENTS[0] and js[i]["truesize"] > 300 for i in ours)
    limits = [js[i] for i in hists if js[i]["name"] == "rmem_limit"]
    # every receive call of this process: the 3 UDP datagrams, and per flood the
    # echo replies that fitted plus the one call that found the queue empty
    assert sum(h["count"] for h in limits) == 3 + (30 - first + 1) + (30 - second + 1)
    db = sqlite3.connect(path)
    assert db.execute("SELECT kind FROM header").fetchone() == ("mixed",)
    db.close()


def test_influx_gets_the_events_and_the_histograms(influx):
    """--influx: a point per queue-full event and one per histogram (tag name)."""
    db = "pt_sockrmem"
    with small_ping_socket("-i") as (ping, rcvbuf):
        ping.setblocking(False)
        cli = started("sockrmem", "-p", str(ME), "--json", "--influx", influx.url(db, flush="0.2"),
                      env=INFLUX_ENV, links=n_programs(SockRmem, "tracepoint"))
        drops = flood(ping, 30)
        udp_receives(2)
        left = [drops]

        def all_seen(line: str) -> bool:
            left[0] -= f'"rcvbuf":{rcvbuf},' in line
            return left[0] <= 0
        assert cli.read_until(all_seen, 10)
        rc, lines, err = cli.stop()
    assert rc == 0, err
    ours = f"SELECT * FROM sockrmem WHERE rcvbuf = {rcvbuf}"
    hist_rows = "SELECT * FROM sockrmem WHERE \"name\" <> ''"
    assert wait_until(lambda: len(influx.query(ours, db)) == drops and len(influx.query(hist_rows, db)) == 2, 10)
    assert all(r["probe"] == EVENTS[0] and r["truesize"] > 300 for r in influx.query(ours, db))
    hists = {r["name"]: r for r in influx.query(hist_rows, db)}
    assert hists["rmem_limit"]["count"] == 2 + (30 - drops + 1) and hists["rmem_limit"]["unit"] == "bytes"
