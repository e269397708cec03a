"""Ctrl-C or SIGTERM that lands while the CLI is still starting its tool
(after attach, before the tool's loop) still prints what was traced: the
final snapshot of an aggregating tool, the queued events of an event tool.

A stop sent "right after the links exist" lands in that window only by luck
(the CI flake this guards against), so the CLI is paused inside it: a
launcher runs the real `pytrace` CLI (cli.main) with the tool class's
setup(), which runs right after attach, wrapped to report and then wait for
the test.  While it waits, its links exist and its loop has not started; the
test makes the traffic, sends the signal and lets it go on.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import tcp_roundtrip
from ready import bpf_links, n_programs
from pytrace.tools.tcpconnect import TcpConnect
from pytrace.tools.tcptop import TcpTop

ME = os.getpid()
MY_COMM = open("/proc/self/comm").read().strip()

# argv: module class ready_fd go_fd pytrace-args...
PAUSED_CLI = """
import os, sys
from pytrace import cli
module, name, ready, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cls = getattr(__import__(module, fromlist=[name]), name)
setup = cls.setup

def paused(self):
    setup(self)
    os.write(ready, b"!")
    os.read(go, 1)

cls.setup = paused
sys.exit(cli.main(sys.argv[5:]))
"""


def stopped_at_startup(cls: type, args: list[str], hook: str, traffic, sigs: tuple[int, ...],
                       go: bool = True) -> tuple[int, str, str, object]:
    """Run `pytrace args --hook hook` paused after its tracer's set-up, make
    traffic(), send sigs (one after another), then let the start-up go on
    (unless go is False).  Returns (status, stdout, stderr, traffic's result)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_CLI, cls.__module__, cls.__name__, str(ready_w),
                             str(go_r), *args, "--hook", hook], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, pass_fds=(ready_w, go_r))
    os.close(ready_w)
    os.close(go_r)
    try:
        ready = select.select([ready_r], [], [], 20)[0] and os.read(ready_r, 1)
        assert ready == b"!", f"pytrace {' '.join(args)} did not reach its set-up"
        assert bpf_links(proc.pid) == n_programs(cls, hook)     # attached: inside the window
        result = traffic()
        for n, sig in enumerate(sigs):
            if n:
                time.sleep(0.2)     # the last one handled first (standard signals do not queue)
            proc.send_signal(sig)
        if go:
            try:
                os.write(go_w, b"!")
            except BrokenPipeError:
                pass                # it ended already: what it printed says how
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(ready_r)
        os.close(go_w)
    return proc.returncode, out, err, result


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_aggregating_tool_prints_its_final_snapshot(sig):
    rc, out, err, conn = stopped_at_startup(
        TcpTop, ["tcptop", "-p", str(ME), "--json", "30"], "tp_btf",
        lambda: tcp_roundtrip("127.0.0.1", send=b"x" * 3000, reply=b"y" * 700), (sig,))
    assert rc == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert {(r["pid"], r["comm"], r["laddr"], r["lport"], r["raddr"], r["rport"], r["rx_bytes"], r["tx_bytes"])
            for r in recs} == \
        {(ME, MY_COMM, "127.0.0.1", conn.client_port, "127.0.0.1", conn.server_port, 700, 3000),
         (ME, MY_COMM, "127.0.0.1", conn.server_port, "127.0.0.1", conn.client_port, 3000, 700)}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_event_tool_prints_the_queued_events(sig):
    # the port filter is set before load: the listener's port must be known first
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def traffic() -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                return c.getsockname()[1]
        rc, out, err, lport = stopped_at_startup(TcpConnect, ["tcpconnect", "--json", "-P", str(port)],
                                                 "tp_btf", traffic, (sig,))
    assert rc == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert [(r["phase"], r["pid"], r["laddr"], r["lport"], r["raddr"], r["rport"], r["result"]) for r in recs] == \
        [("connect", ME, "127.0.0.1", lport, "127.0.0.1", port, None),
         ("result", ME, "127.0.0.1", lport, "127.0.0.1", port, "OK")]


def test_a_second_ctrl_c_stops_a_start_up_that_does_not_end():
    """The first Ctrl-C is held; one more is not ignored, even if the loop never starts."""
    start = time.monotonic()
    rc, out, err, _ = stopped_at_startup(TcpTop, ["tcptop", "-p", str(ME), "--json", "30"], "tp_btf",
                                         lambda: None, (signal.SIGINT, signal.SIGINT), go=False)
    assert rc == 0, err
    assert out == ""
    assert time.monotonic() - start < 10
