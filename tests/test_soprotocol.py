"""soprotocol: the transport protocols of the connects and accepts this process makes."""

from __future__ import annotations

import os
import socket
import pytest

from collections import Counter

from ready import n_programs, started
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.soprotocol import SoProtocol

ME = os.getpid()


def workload() -> Counter:
    """TCP, UDP (v4 and v6) and unix connects, TCP accepts: (kind, protocol, kproto) -> calls."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    tcp = [socket.socket() for _ in range(2)]
    for c in tcp:
        c.connect(srv.getsockname())
    accepted = [srv.accept()[0] for _ in tcp]
    udp = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for u in udp:
        u.connect(("127.0.0.1", 9))
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.connect(("::1", 9))
    usrv = socket.socket(socket.AF_UNIX)
    usrv.bind(f"\0pt-soprotocol-{ME}")
    usrv.listen(1)
    ucli = socket.socket(socket.AF_UNIX)
    ucli.connect(usrv.getsockname())
    for s in (srv, *tcp, *accepted, *udp, udp6, usrv, ucli):
        s.close()
    return Counter({("connect", 6, "TCP"): 2, ("connect", 17, "UDP"): 3, ("connect", 17, "UDPv6"): 1,
                    ("connect", 0, unix_stream_proto()): 1, ("accept", 6, "TCP"): 2})


def unix_stream_proto() -> str:
    """The kernel's name of a stream unix socket's struct proto: UNIX-STREAM
    since it got one of its own (5.12), plain UNIX before (/proc/net/protocols)."""
    with open("/proc/net/protocols") as fh:
        names = {line.split()[0] for line in fh}
    return "UNIX-STREAM" if "UNIX-STREAM" in names else "UNIX"


@pytest.mark.parametrize("hook", variants(SoProtocol))
def test_protocols_of_the_tests_connects_and_accepts(hook):
    with opened(SoProtocol, hook, pid=ME) as sp:
        expected = workload()
        counts = sp.counts()
    got = Counter()
    for c in counts:
        assert c.pid == ME
        got[(c.kind, c.protocol, c.kproto)] += c.count
    assert got == expected
    by = {(c.kind, c.kproto): c for c in counts}
    assert by[("connect", "UDPv6")].type == socket.SOCK_DGRAM and by[("connect", "UDPv6")].family == 10
    assert by[("accept", "TCP")].protocol.name == "IPPROTO_TCP"


def test_kprobe_variant_passes_the_verifier():
    variant = SoProtocol.VARIANTS[0]
    assert variant.hook == "kprobe"
    with BpfObject("soprotocol", programs=variant.programs, rodata={"targ_tgid": ME}):
        pass


def test_cli_json():
    cli = started("soprotocol", "-p", str(ME), "--json", links=n_programs(SoProtocol, "tracepoint"))
    expected = workload()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    got = Counter()
    for r in cli.json_records():
        number = {"IPPROTO_IP": 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17}[r["protocol"]]    # JSON: the name
        got[(r["kind"], number, r["kproto"])] += r["count"]
    assert got == expected
