"""sockrmem: the receive buffer fill of this process's sockets, and the full
queue of a ping socket the test floods."""

from __future__ import annotations

import os
import socket
import struct

from helpers import netns, sh
from ready import n_programs, started
from pytrace.core.bpfobject import BpfObject
from pytrace.core.netattach import in_netns
from pytrace.tools.sockrmem import EVENTS, SockRmem

ME = os.getpid()
SO_MEMINFO = 55
RMEM_ALLOC, RCVBUF, DROPS = 0, 1, 8     # SK_MEMINFO_* indices


def meminfo(s: socket.socket) -> tuple[int, ...]:
    return struct.unpack("<9I", s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))


def test_fill_and_limit_at_each_receive():
    with SockRmem(pid=ME) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        assert t.variant.hook == "tracepoint"                 # no kprobes here
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
    with netns(f"pt-sockrmem-{ME}") as ns:
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv4.ping_group_range='0 0'")
        with in_netns(ns):
            ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        ping.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 3001)   # the kernel doubles it: 6002
        rcvbuf = ping.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with ping, SockRmem(pid=ME) as t:
            for seq in range(n):
                ping.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, seq) + b"p" * 300, ("127.0.0.1", 0))
            events = [e for e in t.events(duration=0.3) if e.rcvbuf == rcvbuf]
            drops = meminfo(ping)[DROPS]
            ping.setblocking(False)
            got = 0
            try:
                while True:
                    ping.recv(1000)
                    got += 1
            except BlockingIOError:
                pass
    assert drops > 0 and got + drops == n
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
    recs = {r["name"]: r for r in cli.json_records() if r["type"] == "histogram"}
    assert recs["rmem_limit"]["count"] == 1 and recs["rmem_limit"]["sum"] == rcvbuf
    assert recs["rmem_alloc"]["count"] == 1 and recs["rmem_alloc"]["sum"] > 0
