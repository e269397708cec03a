"""The native text formatter on a live ring: real connections traced by
tcpstates, drained as the ring's bytes (RawBatch), printed by rowfmt.c, and
the same batches printed the CPython way give the same bytes; a command name
that is not ASCII is handed back to CPython and printed as it would be."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from helpers import Cli, captured_output, free_port, run_cli, tcp_roundtrip
from pytrace.core import rowfmt
from pytrace.core.ringbuf import RawBatch
from pytrace.tools import tcpstates
from pytrace.cli.argparser import ArgParser

pytestmark = pytest.mark.skipif(rowfmt.library() is None, reason=f"native formatter: {rowfmt.why_not}")

# A child whose command name is not UTF-8 connects to the port given: its
# CLOSE -> SYN_SENT line carries that name (the change is made in its connect())
ODD_NAME = b"caf\xc3\xa9\xff"
CHILD = f"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, ctypes.c_char_p({ODD_NAME!r}), 0, 0, 0)   # PR_SET_NAME
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.recv(1)
s.close()
"""


def odd_client(srv: socket.socket) -> tuple[int, int]:
    """(pid, client port) of a child named ODD_NAME that connected to srv and closed."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(srv.getsockname()[1])])
    acc, peer = srv.accept()
    acc.close()
    child.wait(timeout=10)
    return child.pid, peer[1]


def test_a_live_rings_batches_print_the_same_both_ways():
    parser = ArgParser(prog="pytrace tcpstates")
    tcpstates.SPEC.add_arguments(parser)
    args = parser.parse_args([])
    with tcpstates.TcpStates() as tracer:
        render = tcpstates.SPEC.event_renderer(tracer, args, captured_output())
        assert tracer.ring.raw, "tcpstates' default lines are no longer printed natively"
        v4 = tcp_roundtrip("127.0.0.1")
        v6 = tcp_roundtrip("::1")
        srv = socket.create_server(("127.0.0.1", 0))
        odd_pid, _ = odd_client(srv)
        srv.close()
        native, raw_batches = [], 0
        for batch in tracer.batches(duration=0.5):
            if not batch:
                continue
            assert type(batch) is RawBatch
            raw_batches += 1
            text = render(batch)
            assert text == render(list(batch))
            native.append(text)
    lines = b"".join(native).decode(errors="strict").splitlines()
    assert raw_batches >= 1
    comm = open("/proc/self/comm").read().strip()
    pid = os.getpid()
    for conn, addr in ((v4, "127.0.0.1"), (v6, "::1")):
        want = re.compile(rf"^[0-9a-f]+ +{pid:<5} {re.escape(f'{comm:<10.10}')} {re.escape(f'{addr:<15}')} "
                          rf"{conn.client_port:<5} {re.escape(f'{addr:<15}')} {conn.server_port:<5} "
                          rf"SYN_SENT    -> ESTABLISHED \d+\.\d{{3}}$")
        assert [ln for ln in lines if want.match(ln)], (addr, lines[-20:])
    odd = ODD_NAME.decode(errors="replace").encode().ljust(10).decode()    # padded in bytes, as printed
    want = re.compile(rf"^[0-9a-f]+ +{odd_pid:<5} {re.escape(odd)} 127\.0\.0\.1 +0 +127\.0\.0\.1 +"
                      rf"\d+ +CLOSE       -> SYN_SENT    0\.000$")
    assert [ln for ln in lines if want.match(ln)], [ln for ln in lines if str(odd_pid) in ln]


@pytest.mark.parametrize("mode", ["native", "python"])
def test_the_command_prints_the_same_lines_either_way(mode):
    """PYTRACE_ROWFMT=python (the A/B benchmarks' switch) prints through CPython:
    doctor says which, and the lines are the same."""
    env = {rowfmt.OFF_ENV: "python"} if mode == "python" else {}
    doctor = run_cli("doctor", env=env).stdout.splitlines()
    if mode == "python":
        assert "text lines     CPython (the native formatter is turned off (PYTRACE_ROWFMT=python))" in doctor
    else:
        assert f"text lines     native ({rowfmt.NATIVE_DIR}/{rowfmt.LIBRARY})" in doctor
    port = free_port()
    cli = Cli("tcpstates", "-L", str(port), env=env)
    conn = tcp_roundtrip("127.0.0.1", port)
    last = cli.read_until(lambda ln: " LAST_ACK    -> CLOSE " in ln)
    rc, lines, err = cli.stop()
    assert rc == 0 and last is not None, (lines, err)
    comm = open("/proc/self/comm").read().strip()
    prefix = re.compile(r"^[0-9a-f]+ +(\d+) +")
    rows = [prefix.sub("", ln) for ln in lines[1:]]
    rest = f"{comm:<10.10} 127.0.0.1       {port:<5} 127.0.0.1       {conn.client_port:<5} "
    assert [re.sub(r" [0-9.]+$", "", r) for r in rows] == [
        f"{comm:<10.10} 127.0.0.1       {port:<5} 0.0.0.0         0     CLOSE       -> LISTEN     ",
        rest + "LISTEN      -> SYN_RECV   ",
        rest + "SYN_RECV    -> ESTABLISHED",
        rest + "ESTABLISHED -> CLOSE_WAIT ",
        rest + "CLOSE_WAIT  -> LAST_ACK   ",
        rest + "LAST_ACK    -> CLOSE      ",
        f"{comm:<10.10} 127.0.0.1       {port:<5} 0.0.0.0         0     LISTEN      -> CLOSE      ",
    ], rows
