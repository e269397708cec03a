"""udpconnect: this process's UDP connects (and not its TCP ones)."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

from helpers import free_port
from ready import n_programs, started
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.udpconnect import UdpConnect

ME = os.getpid()


def workload() -> list[tuple]:
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u4.bind(("127.0.0.1", 0))
    u4.connect(("127.0.0.1", 5353))
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u6.connect(("::1", 53))
    t = socket.socket()
    t.connect_ex(("127.0.0.1", free_port()))              # TCP: not reported
    # the local port once connect() has bound the socket: u6's is autobound
    out = [(socket.AF_INET, ipaddress.ip_address("127.0.0.1"), 5353, u4.getsockname()[1]),
           (socket.AF_INET6, ipaddress.ip_address("::1"), 53, u6.getsockname()[1])]
    for s in (u4, u6, t):
        s.close()
    return out


@pytest.mark.parametrize("hook", variants(UdpConnect))
def test_udp_connects_exact(hook):
    with opened(UdpConnect, hook, pid=ME) as t:
        expected = workload()
        events = list(t.events(duration=0.3))
    assert [(e.family, e.raddr, e.rport, e.lport) for e in events] == expected
    assert all(e.pid == ME and e.protocol == 17 for e in events)


def test_kprobe_variant_passes_the_verifier():
    variant = UdpConnect.VARIANTS[0]
    assert variant.hook == "kprobe"
    with BpfObject("udpconnect", programs=variant.programs, rodata={"targ_tgid": ME}):
        pass


def test_cli_text():
    cli = started("udpconnect", "-p", str(ME), links=n_programs(UdpConnect, "tracepoint"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect(("127.0.0.1", 7777))
    assert cli.read_until(lambda line: "7777" in line)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0].split() == ["TIME", "PID", "COMM", "IP", "RADDR", "RPORT"]
    assert lines[1].split()[1:] == [str(ME), open("/proc/self/comm").read().strip(), "4", "127.0.0.1", "7777"]
