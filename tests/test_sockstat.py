"""sockstat: the counts equal the socket calls this process makes (filtered by its pid)."""

from __future__ import annotations

import os
import socket

import pytest

from helpers import free_port, run_cli
from ready import n_programs, started
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.sockstat import COUNTERS, SockStat

ME = os.getpid()


def workload() -> dict[str, int]:
    """Known socket calls; returns how many of each were made."""
    srv = socket.socket()                                   # socket 1
    srv.bind(("127.0.0.1", 0))                              # bind 1
    srv.listen(4)
    clients = []
    for _ in range(3):
        c = socket.socket()                                 # socket 2..4
        c.connect(srv.getsockname())                        # connect 1..3
        clients.append(c)
    accepted = [srv.accept()[0] for _ in range(2)]          # accept4 1..2
    refused = socket.socket()                               # socket 5
    refused.bind(("127.0.0.1", 0))                          # bind 2
    refused.connect_ex(("127.0.0.1", free_port()))          # connect 4 (free_port: socket 6, bind 3)
    a, b = socket.socketpair()                              # socketpair 1
    for _ in range(5):
        a.send(b"x")                                        # send 1..5
    for _ in range(4):
        b.recv(1)                                           # recv 1..4
    for s in (srv, refused, a, b, *clients, *accepted):
        s.close()
    return {"socket": 6, "socketpair": 1, "bind": 3, "connect": 4, "accept": 0, "accept4": 2,
            "send": 5, "recv": 4}


@pytest.mark.parametrize("hook", variants(SockStat))
def test_counts_equal_the_calls_made(hook):
    with opened(SockStat, hook, pid=ME) as st:
        assert st.variant.hook == hook
        expected = workload()
        assert st.counts(clear=True) == expected
        assert st.probes["send"] == (f"{hook}:sock:sock_send_length" if hook != "kprobe" else
                                     "kprobe:inet_sendmsg+inet6_sendmsg+unix_stream_sendmsg+unix_dgram_sendmsg")
        assert st.counts() == dict.fromkeys(COUNTERS, 0)     # cleared


def test_kprobe_variant_passes_the_verifier():
    """kprobes cannot attach on this kernel; the variant must still load."""
    variant = next(v for v in SockStat.VARIANTS if v.hook == "kprobe")
    with BpfObject("sockstat", programs=variant.programs, rodata={"targ_tgid": ME}):
        pass


def test_cli_json_interval():
    cli = started("sockstat", "-p", str(ME), "--json", "-i", "1", links=n_programs(SockStat, "tp_btf"))
    expected = workload()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = cli.json_records()          # one per counter and interval
    total = {c: sum(r["count"] for r in recs if r["counter"] == c) for c in COUNTERS}
    assert total == expected


def test_cli_text_and_bad_interval():
    cli = started("sockstat", "-p", str(ME), links=n_programs(SockStat, "tp_btf"))
    a, b = socket.socketpair()
    a.send(b"1")
    b.recv(1)
    a.close()
    b.close()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0] == "Tracing sock statistics. Output every 1 second."
    got = [line for line in lines if line.startswith("@[")]
    assert sorted(got) == ["@[tp_btf:sock:sock_recv_length]: 1", "@[tp_btf:sock:sock_send_length]: 1",
                           "@[tracepoint:syscalls:sys_enter_socketpair]: 1"]
    r = run_cli("sockstat", "-i", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
