"""Text lines formatted in BPF by the reader (core/kerneltext.py,
src/bpf/textfmt.h, src/bpf/tcpstates_text.bpf.c) against the CPython rows
they stand in for: the same bytes, record for record, whatever the record."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import socket
import struct
import time
from types import SimpleNamespace

import pytest

from helpers import Cli, captured_output, free_port, printed_lines, tcp_roundtrip, wait_until
from pytrace.core import cliutil
from pytrace.core.cliutil import Output
from pytrace.core.kerneltext import KernelLines, ipv6_plan
from pytrace.core.ringbuf import HDR, RawBatch
from pytrace.tools import tcpstates
from pytrace.tools.tcpstates import TcpStates

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6


def text_renderer(tracer: TcpStates, wide: bool = False) -> KernelLines:
    args = SimpleNamespace(json=False, timestamp=False, time=False, wide=wide, ipv6=False)
    render = tcpstates.renderer(tracer, args, Output(False, io.StringIO()))
    assert isinstance(render, KernelLines)
    return render


def start(render: KernelLines) -> None:
    """Load the text object now; a kernel that refuses it has no BPF path to test."""
    if not render.start():
        pytest.skip(f"the kernel refuses SEC(\"syscall\") programs or bpf_loop: {render._result}")


def v6(text: str) -> bytes:
    return socket.inet_pton(AF_INET6, text)


def v4(text: str) -> bytes:
    return socket.inet_pton(AF_INET, text).ljust(16, b"\0")


# Addresses whose text takes a rule of inet_ntop(): runs of zero groups
# (first longest wins, a single zero is not compressed), IPv4 endings.
V6_EDGES = ["::", "::1", "::2", "1::", "1::1", "::ffff:1.2.3.4", "::1.2.3.4", "::ffff:0:1.2.3.4",
            "::0.0.1.0", "::0.1.0.0", "0:0:1::", "1:0:0:2:0:0:3:4", "1:0:0:1:0:0:0:1", "1:0:1:0:1:0:1:0",
            "2001:db8::1", "2001:db8:0:1:1:1:1:1", "fe80::1:0:0:1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255", "::ffff:0.0.0.0", "0:0:0:0:0:ffff::", "0:0:0:0:ffff:ffff::1",
            "a:b:c:d:e:f:0:0", "0:0:a:0:0:0:b:0"]


def all_zero_patterns(rng: random.Random) -> list[bytes]:
    """One address per pattern of zero groups (256), the other groups random
    (with 0xffff in group 5 half the time, for ::ffff:a.b.c.d)."""
    out = []
    for zeros in range(256):
        groups = [0 if zeros >> i & 1 else rng.choice([1, 0xf, 0x10, 0xff, 0x100, 0xfff, 0x1000,
                                                        rng.randrange(1, 65536)])
                  for i in range(8)]
        if not zeros >> 5 & 1 and rng.random() < 0.5:
            groups[5] = 0xffff
        out.append(struct.pack(">8H", *groups))
    return out


def records(rng: random.Random, n: int) -> list[dict]:
    comms = [b"", b"a", b"python3", b"x" * 15, b"y" * 16, b"sshd: root@pts/0", b"kworker/u4:2",
             b"caf\xc3\xa9", b"bad\xff\xfe", b"\x80"]
    v6s = [v6(a) for a in V6_EDGES] + all_zero_patterns(rng)
    out = []
    for k in range(n):
        fam = rng.choice([AF_INET] * 5 + [AF_INET6] * 4 + [0, 7])
        if fam == AF_INET6:
            sa, da = rng.choice(v6s), rng.choice(v6s + [rng.randbytes(16)])
        else:
            sa = bytes(rng.choice([0, 1, 9, 10, 99, 100, 127, 255, rng.randrange(256)]) for _ in range(4))
            sa, da = sa.ljust(16, b"\0"), rng.randbytes(4).ljust(16, b"\0")
        out.append({
            "skaddr": rng.choice([0, 1, 0xf, 0xffff888012345678, rng.getrandbits(64), rng.getrandbits(36)]),
            "ts_ns": rng.getrandbits(63),
            "delta_us": rng.choice([0, 1, 999, 1000, 1001, 123456789, 2 ** 64 - 1, rng.getrandbits(40)]),
            "saddr": sa, "daddr": da,
            "comm": rng.choice(comms).ljust(16, b"\0")[:16],
            "pid": rng.choice([0, 1, 4242, 9999999, 10000000, 2 ** 32 - 1]),
            "family": fam,
            "sport": rng.choice([0, 1, 22, 9999, 10000, 65535]),
            "dport": rng.randrange(65536),
            "oldstate": rng.choice([0, 1, 10, 12, 13, 15, 16, 255, rng.randrange(256)]),
            "newstate": rng.randrange(256),
        })
    return out


def ring_bytes(tracer: TcpStates, recs: list[dict]) -> bytes:
    """The records as the ring holds them: 8-byte header, record, padding."""
    layout, ring = tracer.layout, tracer.ring
    body = struct.Struct(layout.format)
    pad = bytes(ring.stride - HDR - body.size)
    hdr = struct.pack("<II", body.size, 0)
    return b"".join(hdr + body.pack(*[r[name] for name in layout.names]) + pad for r in recs)


def cpython(render: KernelLines, batch: RawBatch) -> bytes:
    return b"".join(render.rows(list(batch)))


def assert_formats_as_cpython(tracer, render: KernelLines, recs: list[dict]) -> None:
    """recs through the text program (started now) give the CPython rows'
    bytes; the non-ASCII command names (which recs must have) are refused
    and formatted by CPython in place."""
    start(render)
    batch = RawBatch(ring_bytes(tracer, recs), len(recs), tracer.ring)
    got = render(batch)
    want = cpython(render, batch)
    assert got.splitlines() == want.splitlines()    # a difference shows as one line
    assert got == want
    not_ascii = sum(1 for r in recs if any(b >= 0x80 for b in r["comm"].split(b"\0", 1)[0]))
    assert not_ascii > 0
    assert (render.kernel_lines, render.refused) == (len(recs) - not_ascii, not_ascii)


def cli_storm(tmp_path, tool: str, port: int, connect, n: int, first: int, printed) -> tuple[list, list[str]]:
    """`pytrace tool -v -L port` through a storm: `first` connections
    (connect()) printed, 0.5 s for the text object's load (~30 ms), then the
    CLI paused while n more happen, let go, and stopped once printed(line,
    connection) shows the last.  The connections and the lines printed;
    skips where the kernel refuses the text program, and checks it was used.
    (-v's log goes to a file: a pipe nobody reads would fill and stop the CLI.)"""
    log = tmp_path / "stderr"
    cli = Cli(tool, "-v", "-L", str(port), prefix=["sh", "-c", f'exec "$@" 2>{log}', "sh"])
    conns = [connect() for _ in range(first)]
    if conns:
        assert cli.read_until(lambda l: printed(l, conns[-1]))
    time.sleep(0.5)
    os.kill(cli.proc.pid, signal.SIGSTOP)
    try:
        conns += [connect() for _ in range(n)]
    finally:
        os.kill(cli.proc.pid, signal.SIGCONT)
    assert cli.read_until(lambda l: printed(l, conns[-1]), timeout=10)
    rc, lines, _ = cli.stop()
    err = log.read_text()
    assert rc == 0, err[-2000:]
    if f"{tool}_text: formatting in CPython" in err:
        pytest.skip("the kernel refuses SEC(\"syscall\") programs or bpf_loop")
    assert f"{tool}_text: formatting in BPF" in err, err[-2000:]
    return conns, lines


@pytest.fixture(scope="module")
def tracer():
    with TcpStates(lports=[free_port()]) as t:      # loaded and attached; sees none of our records
        yield t


@pytest.mark.parametrize("wide", [False, True])
def test_every_kind_of_record_formats_to_the_cpython_bytes(tracer, wide):
    recs = records(random.Random(5952 + wide), 3000)     # three runs of the program (1024 a run)
    assert_formats_as_cpython(tracer, text_renderer(tracer, wide), recs)


def test_ipv6_text_is_inet_ntop_for_every_zero_pattern(tracer):
    """The address columns alone, against inet_ntop() itself (the CPython rows
    use it too, so this pins the rule, not just the agreement)."""
    rng = random.Random(6)
    addrs = [v6(a) for a in V6_EDGES] + all_zero_patterns(rng)
    recs = records(rng, len(addrs))
    for r, a in zip(recs, addrs):
        r.update(family=AF_INET6, saddr=a, daddr=a, comm=b"t".ljust(16, b"\0"))
    render = text_renderer(tracer, wide=True)
    start(render)
    lines = render(RawBatch(ring_bytes(tracer, recs), len(recs), tracer.ring)).decode().splitlines()
    assert [line.split()[3] for line in lines] == [socket.inet_ntop(AF_INET6, a) for a in addrs]
    assert render.kernel_lines == len(recs)


def test_ipv6_plan_compresses_the_first_longest_run():
    plan = ipv6_plan()                                       # index: bit i set if group i is 0
    assert plan[0] == 0                                      # no zero group: every group printed
    assert plan[0xff] == 0x2 | 0x5554 | 1 << 16              # "::": run from 0, skip 1-7, trailing ":"
    assert plan[0b00111111] & (1 << 17)                      # ::a.b.c.d
    assert plan[0b00011111] & (1 << 18)                      # ::ffff:a.b.c.d, if group 5 is ffff
    assert plan[0b01100110] == 0x2 << 2 | 0x1 << 4           # 1:0:0:1:1:0:0:1: the first run
    assert plan[0b00000001] == 0                             # one zero group: not compressed


def test_spare_records_keep_their_place_among_the_raw_runs(tracer):
    """Spare-ring records arrive decoded and are inserted into the raw batch
    (RawBatch.insert); the lines come out in that order, the decoded ones
    formatted by CPython."""
    rng = random.Random(7)
    recs = [r for r in records(rng, 600) if all(b < 0x80 for b in r["comm"])]
    render = text_renderer(tracer)
    start(render)
    batch = RawBatch(ring_bytes(tracer, recs), len(recs), tracer.ring)
    plain = list(batch)
    extra = [list(batch)[i] for i in (5, 6, 100)]
    for i, rec in [(len(plain), extra[0]), (300, extra[1]), (0, extra[2]), (1, extra[0])]:
        batch.insert(i, rec)
        plain.insert(i, rec)
    assert len(batch) == len(plain) and list(batch) == plain
    assert render(batch) == b"".join(render.rows(plain))
    assert render.kernel_lines == len(recs)


def test_where_the_object_does_not_load_cpython_formats_everything():
    with TcpStates(lports=[free_port()]) as tracer:
        render = text_renderer(tracer)
        render.name = "no_such_text"                 # as on a kernel that refuses the program
        rng = random.Random(8)
        recs = records(rng, 300)
        tuples = list(RawBatch(ring_bytes(tracer, recs), len(recs), tracer.ring))
        render(tuples)                               # starts the loading thread
        assert wait_until(lambda: render._result is not None, 5)
        out = render(tuples)                         # sees it failed
        assert render.tried and render.kernel is None and not tracer.ring.raw_batches
        assert isinstance(render._result, Exception) and "no_such_text" in str(render._result)
        assert out == b"".join(render.rows(tuples))


def test_a_quiet_tracer_loads_its_text_object_before_the_first_event():
    """The CLI loop's quiet ticks load the object and switch to it, so the
    verifier's time is spent before traffic comes, not in its first burst;
    the first connection after that is formatted in BPF."""
    port = free_port()
    with TcpStates(lports=[port]) as tracer:
        render = text_renderer(tracer)
        out = captured_output()
        cliutil.stream_events(tracer, out, render, duration=1.0)      # no traffic at all
        if isinstance(render._result, Exception):
            pytest.skip(f"the kernel refuses SEC(\"syscall\") programs or bpf_loop: {render._result}")
        assert render.kernel is not None and tracer.ring.raw_batches and render.kernel_lines == 0
        conn = tcp_roundtrip("127.0.0.1", port)
        cliutil.stream_events(tracer, out, render, duration=0.3)
    assert render.kernel_lines == 7 and render.refused == 0          # 2 listener + 5 child changes
    rows = [l.split() for l in printed_lines(out)]
    assert sorted(int(r[6]) for r in rows if r[6] != "0") == [conn.client_port] * 5


def test_the_loading_thread_switches_the_ring_and_is_closed_with_the_tracer():
    with TcpStates(lports=[free_port()]) as tracer:
        render = text_renderer(tracer)
        render([])                                   # the first batch starts the load
        assert wait_until(lambda: render._result is not None, 10)
        if isinstance(render._result, Exception):
            pytest.skip(f"the kernel refuses SEC(\"syscall\") programs or bpf_loop: {render._result}")
        render([])
        assert render.kernel is not None and tracer.ring.raw_batches
        fd = render.kernel.prog_fd
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-prog"
    assert render.kernel is None and not os.path.exists(f"/proc/self/fd/{fd}")


def test_a_storm_through_the_cli_is_formatted_in_bpf_and_exact(tmp_path):
    """One connection, printed first, then the CLI
    paused while 450 more happen (3150 records), then let go: the storm is
    formatted in BPF, and every line is there, exact."""
    port, n = free_port(), 450
    conns, lines = cli_storm(tmp_path, "tcpstates", port, lambda: tcp_roundtrip("127.0.0.1", port), n, 1,
                             lambda l, c: f" {c.client_port} " in l and "LAST_ACK" in l and "-> CLOSE" in l)
    rows = [l for l in lines if re.match(r"[0-9a-f]{16} ", l)]
    line = re.compile(r"([0-9a-f]{16}) (\d+) +(.{16}) (\S+) +(\d+) +(\S+) +(\d+) +(\S+) +-> (\S+) +(\d+\.\d{3})$")
    parsed = [line.match(l) for l in rows]
    assert all(parsed), [l for l, m in zip(rows, parsed) if not m][:3]
    child = {}
    for m in parsed:
        laddr, lport, raddr, rport = m[4], int(m[5]), m[6], int(m[7])
        assert (laddr, lport) == ("127.0.0.1", port) and raddr == ("0.0.0.0" if rport == 0 else "127.0.0.1")
        child.setdefault(rport, []).append((m[8], m[9]))
    listener = child.pop(0)
    assert listener == [("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")] * (n + 1)
    expect = [("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED"), ("ESTABLISHED", "CLOSE_WAIT"),
              ("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSE")]
    assert child == {c.client_port: expect for c in conns}
