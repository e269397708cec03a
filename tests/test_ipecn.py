"""ipecn against UDP between two test namespaces: datagrams sent with the ECN
field set to CE (IP_TOS / IPV6_TCLASS = 3) are reported, exactly those, with
their addresses, ports, length and receiving device; unmarked ones are not."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest

from helpers import Cli, run_cli
from netlab import QuietHosts, bad_input, forced_hook_fails_cleanly, kprobe_programs_verify, released_after_exit
from matrix import opened, variants
from pytrace.tools.ipecn import IpEcn

PAYLOAD = 100


def send_udp(net: QuietHosts, family: int, tos: int, dport: int, n: int) -> int:
    """n datagrams A -> B with the given TOS/traffic class; returns the source port."""
    a, b = net.addrs(family)
    s = net.udp_socket(net.ns_a, family)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    s.bind((a, 0))
    for _ in range(n):
        s.sendto(b"e" * PAYLOAD, (b, dport))
    port = s.getsockname()[1]
    s.close()
    return port


def collect(tracer: IpEcn, n: int, timeout: float = 3.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(got) < n:
        got += list(tracer.events(duration=0.05))
    return got + list(tracer.events(duration=0.2))


@pytest.mark.parametrize("hook", variants(IpEcn))
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_ce_marked_udp_is_seen_and_unmarked_is_not(hook, family):
    dport = random.randint(20000, 60000)
    with QuietHosts("ecn") as net:
        with opened(IpEcn, hook, netns=net.inode(net.ns_b)) as tracer:
            assert tracer.variant.hook == hook
            plain = send_udp(net, family, 0, dport, 3)
            ect = send_udp(net, family, 2, dport, 2)
            marked = send_udp(net, family, 3, dport, 4)
            evs = collect(tracer, 4)
        ino = net.inode(net.ns_b)
    a, b = net.addrs(family)
    iplen = PAYLOAD + 8 + (20 if family == socket.AF_INET else 40)
    assert {e.sport for e in evs} == {marked} and plain != marked != ect
    assert len(evs) == 4
    for e in evs:
        assert (e.family, str(e.saddr), str(e.daddr), e.dport, e.protocol) == (family, a, b, dport, 17)
        assert (e.ecn, e.dscp, e.length, e.dev, e.netns) == ("CE", 0, iplen, "b0", ino)


def test_all_ect_adds_ect_marks():
    dport = random.randint(20000, 60000)
    with QuietHosts("ecna") as net:
        with IpEcn(all_ect=True, family=socket.AF_INET, netns=net.inode(net.ns_b)) as tracer:
            send_udp(net, socket.AF_INET6, 3, dport, 1)        # other family: filtered
            plain = send_udp(net, socket.AF_INET, 0, dport, 1)
            ect0 = send_udp(net, socket.AF_INET, 2, dport, 2)
            ect1 = send_udp(net, socket.AF_INET, 1 | (10 << 2), dport, 1)   # DSCP 10 + ECT(1)
            evs = collect(tracer, 3)
    got = sorted((e.sport, e.ecn, e.dscp) for e in evs)
    assert got == sorted([(ect0, "ECT(0)", 0), (ect0, "ECT(0)", 0), (ect1, "ECT(1)", 10)])
    assert plain not in {e.sport for e in evs}


def test_cli_text_and_json():
    dport = random.randint(20000, 60000)
    with QuietHosts("ecnc") as net:
        ino = str(net.inode(net.ns_b))
        cli = Cli("ipecn", "--netns-id", ino)
        cj = Cli("ipecn", "--json", "--netns-id", ino)
        try:
            sport = send_udp(net, socket.AF_INET, 3, dport, 1)
            want = f" ECN CE from: 192.0.2.1 to: 192.0.2.2 UDP {sport} > {dport} dev b0"
            line = cli.read_until(lambda s: s.endswith(want))
            jline = cj.read_until(lambda s: s.startswith("{"))
        finally:
            rc, lines, err = cli.stop()
            rcj, _, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing inbound IPv4/IPv6 ECN Congestion Encountered packets. Hit Ctrl-C to end."
    assert line and time.strptime(line.split()[0], "%H:%M:%S"), lines
    rec = json.loads(jline)
    assert {k: rec[k] for k in ("family", "ecn", "protocol", "saddr", "sport", "daddr", "dport", "length", "dev")} == \
        {"family": "AF_INET", "ecn": "CE", "protocol": "IPPROTO_UDP", "saddr": "192.0.2.1", "sport": sport,
         "daddr": "192.0.2.2", "dport": dport, "length": PAYLOAD + 28, "dev": "b0"}


def test_replay_keeps_the_intro(tmp_path):
    """pytrace replay printed ipecn's records without its intro line (issue 20)."""
    path = str(tmp_path / "ecn.db")
    dport = random.randint(20000, 60000)
    with QuietHosts("ecnr") as net:
        cli = Cli("ipecn", "--record", path, "--netns-id", str(net.inode(net.ns_b)))
        try:
            sport = send_udp(net, socket.AF_INET, 3, dport, 2)
            want = f" ECN CE from: 192.0.2.1 to: 192.0.2.2 UDP {sport} > {dport} dev b0"
            assert cli.read_until(lambda s: s.endswith(want))
            assert cli.read_until(lambda s: s.endswith(want))
        finally:
            rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0] == "Tracing inbound IPv4/IPv6 ECN Congestion Encountered packets. Hit Ctrl-C to end."
    assert len(lines) == 3
    replayed = run_cli("replay", path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == lines


def test_kprobe_variant_verifies():
    kprobe_programs_verify("ipecn", {"ipecn_kprobe_ip_rcv", "ipecn_kprobe_ipv6_rcv"})
    forced_hook_fails_cleanly("ipecn", "kprobe")


@pytest.mark.parametrize("args", [["--netns-id", "x"], ["-4", "-6"], ["--hook", "xdp"], ["-z"]])
def test_bad_input(args):
    bad_input("ipecn", *args)


def test_nothing_left_attached():
    released_after_exit("ipecn")
