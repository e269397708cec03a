"""tcplife's text lines formatted in BPF by the reader (src/bpf/tcplife_text.bpf.c,
on core/kerneltext.py and src/bpf/textfmt.h) against the CPython rows they
stand in for: the same bytes, record for record, whatever the record."""

from __future__ import annotations

import io
import os
import random
import re
import socket
from types import SimpleNamespace

import pytest

from helpers import free_port, tcp_roundtrip
from test_kerneltext import V6_EDGES, all_zero_patterns, assert_formats_as_cpython, cli_storm, v6
from pytrace.core.cliutil import Output
from pytrace.core.kerneltext import KernelLines
from pytrace.tools import tcplife
from pytrace.tools.tcplife import TcpLife

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6


def text_renderer(tracer: TcpLife) -> KernelLines:
    args = SimpleNamespace(json=False, csv=False, wide=False, time=False, timestamp=False)
    render = tcplife.renderer(tracer, args, Output(False, io.StringIO()))
    assert isinstance(render, KernelLines)
    return render


def records(rng: random.Random, n: int) -> list[dict]:
    comms = [b"", b"a", b"python3", b"tenletters", b"elevenchars", b"x" * 15, b"y" * 16,
             b"sshd: root@pts/0", b"caf\xc3\xa9", b"bad\xff\xfe", b"\x80"]
    v6s = [v6(a) for a in V6_EDGES] + all_zero_patterns(rng)
    big = [0, 1, 1023, 1024, 1025, 99999 << 10, 100000 << 10, 2 ** 32, 2 ** 42, 2 ** 64 - 1]
    out = []
    for _ in range(n):
        fam = rng.choice([AF_INET] * 5 + [AF_INET6] * 4 + [0, 7])
        if fam == AF_INET6:
            sa, da = rng.choice(v6s), rng.choice(v6s + [rng.randbytes(16)])
        else:
            sa, da = rng.randbytes(4).ljust(16, b"\0"), rng.randbytes(4).ljust(16, b"\0")
        out.append({
            "ts_ns": rng.getrandbits(63),
            # MS is rounded to hundredths: the roundings' edges, and the top of the range
            "span_us": rng.choice([0, 4, 5, 14, 15, 994, 995, 999, 1000, 123456789, 2 ** 64 - 1, 2 ** 64 - 5,
                                   rng.getrandbits(40)]),
            "rx_b": rng.choice(big + [rng.getrandbits(30)]),
            "tx_b": rng.choice(big + [rng.getrandbits(30)]),
            "pid": rng.choice([0, 1, 4242, 99999, 100000, 2 ** 32 - 1]),
            "family": fam,
            "lport": rng.choice([0, 1, 22, 9999, 10000, 65535]),
            "rport": rng.randrange(65536),
            "pad": 0,
            "saddr": sa, "daddr": da,
            "comm": rng.choice(comms).ljust(16, b"\0")[:16],
        })
    return out


@pytest.fixture(scope="module")
def tracer():
    with TcpLife(lports=[free_port()]) as t:        # loaded and attached; sees none of our records
        yield t


def test_every_kind_of_record_formats_to_the_cpython_bytes(tracer):
    recs = records(random.Random(7041), 3000)       # three runs of the program (1024 a run)
    assert_formats_as_cpython(tracer, text_renderer(tracer), recs)


def test_a_storm_through_the_cli_is_formatted_in_bpf_and_exact(tmp_path):
    """The CLI, quiet at first (its text object loads on a quiet tick), then
    paused while 300 connections happen, then let go: formatted in BPF,
    every session there with its exact ports and bytes."""
    port = free_port()
    send, reply = b"q" * 3000, b"r" * 70000         # 2 KB and 68 KB: BCC rounds down
    conns, lines = cli_storm(tmp_path, "tcplife", port, lambda: tcp_roundtrip("127.0.0.1", port, send, reply),
                             300, 0, lambda l, c: f" {c.client_port} " in l)
    line = re.compile(r"(\d+) +(.{10}) (\S+) +(\d+) +(\S+) +(\d+) +(\d+) +(\d+) (\d+\.\d\d)$")
    parsed = [line.match(l) for l in lines[1:]]
    assert all(parsed), [l for l, m in zip(lines[1:], parsed) if not m][:3]
    assert sorted(int(m[6]) for m in parsed) == sorted(c.client_port for c in conns)
    for m in parsed:          # the server's side of each session: it sent the reply
        assert (int(m[1]), m[3], int(m[4]), m[5]) == (os.getpid(), "127.0.0.1", port, "127.0.0.1")
        assert (int(m[7]), int(m[8])) == (len(reply) >> 10, len(send) >> 10)
