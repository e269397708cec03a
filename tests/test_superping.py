"""superping against pings (raw ICMP sockets) between two test namespaces:
one reply per request, with the test's own id/seq, addresses, namespace and
process, and a kernel latency no larger than the round trip the test timed."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time

import pytest

from netlab import (QuietHosts, bad_input, forced_hook_fails_cleanly, kprobe_programs_verify, ping,
                    released_after_exit)
from ready import started
from matrix import opened, variants
from pytrace.tools.superping import SuperPing


def replies(tracer: SuperPing, ident: int, n: int, netns: int, timeout: float = 3.0) -> list:
    """The replies to the test's own pings (its id, from its namespace)."""
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(got) < n:
        got += [e for e in tracer.events(duration=0.05) if (e.id, e.netns) == (ident, netns)]
    return got + [e for e in tracer.events(duration=0.1) if (e.id, e.netns) == (ident, netns)]


@pytest.mark.parametrize("hook", variants(SuperPing))
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_ping_between_namespaces(hook, family):
    ident = random.randint(1, 0xFFFF)
    with QuietHosts("sping") as net:
        a, b = net.addrs(family)
        sock = net.raw_icmp(net.ns_a, family)
        with opened(SuperPing, hook) as tracer:
            assert tracer.variant.hook == hook
            rtts = [ping(sock, b, ident, seq) for seq in range(4)]
            ns_a = net.inode(net.ns_a)
            evs = replies(tracer, ident, 4, ns_a)
        sock.close()
    assert [e.seq for e in evs] == [0, 1, 2, 3]
    for e, rtt in zip(evs, rtts):
        assert (e.family, str(e.saddr), str(e.daddr), e.netns, e.pid) == (family, a, b, ns_a, os.getpid())
        assert e.comm == open("/proc/self/comm").read().strip()
        # measured inside the round trip the test timed around sendto/recv
        assert 0 < e.latency_ns <= rtt * 1e9


def test_pid_and_family_filters():
    ident = random.randint(1, 0xFFFF)
    with QuietHosts("spingf") as net:
        s4, s6 = net.raw_icmp(net.ns_a), net.raw_icmp(net.ns_a, socket.AF_INET6)
        with SuperPing(pid=os.getpid(), family=socket.AF_INET6) as mine6, SuperPing(pid=1) as other:
            ping(s4, net.V4[1], ident, 1)
            ping(s6, net.V6[1], ident, 2)
            ns_a = net.inode(net.ns_a)
            got6 = replies(mine6, ident, 1, ns_a)
            got_other = replies(other, ident, 0, ns_a, timeout=0.2)
        s4.close()
        s6.close()
    assert [(e.family, e.seq) for e in got6] == [(socket.AF_INET6, 2)]
    assert got_other == []


def test_cli_text_and_json():
    ident = random.randint(1, 0xFFFF)
    with QuietHosts("spingc") as net:
        sock = net.raw_icmp(net.ns_a)
        cli = started("superping", "-w", "-4", links=2)
        cj = started("superping", "--json", links=2)
        try:
            for seq in (7, 8):
                ping(sock, net.V4[1], ident, seq)
            pat = re.compile(rf"IPv4 ping, ID {ident} seq 8: (\d+) us  192\.0\.2\.1 -> 192\.0\.2\.2 "
                             rf"netns {net.inode(net.ns_a)} pid {os.getpid()} \S+$")
            line = cli.read_until(lambda s: bool(pat.match(s)))
            jline = cj.read_until(lambda s: (json.loads(s)["id"], json.loads(s)["seq"]) == (ident, 8))
        finally:
            rc, lines, err = cli.stop()
            rcj, _, errj = cj.stop()
        sock.close()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing ICMP echo request latency. Hit Ctrl-C to end."
    assert line, lines
    assert any(re.match(rf"IPv4 ping, ID {ident} seq 7: \d+ us ", s) for s in lines)
    rec = json.loads(jline)
    assert (rec["ip"], rec["saddr"], rec["daddr"], rec["pid"]) == (4, "192.0.2.1", "192.0.2.2", os.getpid())
    assert rec["latency_us"] > 0


def test_kprobe_variant_verifies():
    kprobe_programs_verify("superping", {"superping_kprobe_ip_send", "superping_kprobe_ip6_send",
                                         "superping_kprobe_icmp_rcv", "superping_kprobe_icmpv6_rcv"})
    forced_hook_fails_cleanly("superping", "kprobe")


@pytest.mark.parametrize("args", [["-p", "0"], ["-p", "x"], ["-4", "-6"], ["--hook", "tc"], ["extra"]])
def test_bad_input(args):
    bad_input("superping", *args)


def test_nothing_left_attached():
    released_after_exit("superping")
