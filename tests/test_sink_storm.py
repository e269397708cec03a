"""Sinks that keep up, and that never hold a stop back.

A storm of short loopback connections traced by `tcplife -L PORT --json`
with --record and --influx at once: every connection is printed, in the
recording and in InfluxDB (a real influxd, started here), exactly once; and
the kernel lost nothing.  With InfluxDB unreachable (nothing listening, or a
listener whose backlog is full so that connecting hangs), Ctrl-C ends the
command within a second, and the points it could not write are counted; with
one that accepts the connection and never answers, InfluxDB delays the exit
by less than a second too, and the points are counted in one line."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from helpers import Cli, free_port, tcp_roundtrip
from influxlab import ENV, influx_server

N = 4000        # connections: one tcplife -L event each, well within the 8 MiB ring
WORKERS = 2

# argv: port n workers.  A server that accepts, answers and closes; `workers`
# client processes making n connections between them; prints when done.
STORM = """
import os, socket, sys
port, n, k = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1024)
kids = []
for w in range(k):
    pid = os.fork()
    if pid == 0:
        srv.close()
        for _ in range(n // k + (w < n % k)):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"q")
            c.recv(1)
            c.close()
        os._exit(0)
    kids.append(pid)
for _ in range(n):
    a, _ = srv.accept()
    a.recv(1)
    a.sendall(b"a")
    a.close()
for pid in kids:
    os.waitpid(pid, 0)
print("done")
"""


def storm(port: int, n: int = N, workers: int = WORKERS) -> float:
    """n connections to 127.0.0.1:port; returns how long they took."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", STORM, str(port), str(n), str(workers)], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout == "done\n", out.stderr
    return time.monotonic() - start


@pytest.fixture(scope="module")
def influx(tmp_path_factory):
    with influx_server(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


def test_a_storm_reaches_the_recording_and_influxdb_exactly(influx, tmp_path):
    port = free_port()
    db, path = "pt_storm", str(tmp_path / "storm.db")
    cli = Cli("tcplife", "--json", "-L", str(port), "--record", path, "--influx", influx.url(db), env=ENV)
    try:
        took = storm(port)
        assert took < 30
        deadline = time.monotonic() + 20
        while len(cli.seen) < N and time.monotonic() < deadline:
            cli.read_until(lambda line: True, 0.5)
    finally:
        rc, lines, err = cli.stop(signal.SIGINT, timeout=60)
    assert rc == 0, err
    assert err == "", err                                   # no loss, no drop, nothing to report
    printed = [json.loads(line) for line in lines]
    assert len(printed) == N
    assert {e["lport"] for e in printed} == {port}
    ids = {(e["ts_ns"], e["rport"]) for e in printed}
    assert len(ids) == N                                     # N distinct connections
    rec = sqlite3.connect(path)
    assert rec.execute("SELECT count(*) FROM events").fetchone() == (N,)
    assert rec.execute("SELECT count(*) FROM lost").fetchone() == (0,)
    assert rec.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events_t'").fetchone() == (1,)
    rec.close()
    rows = influx.query('SELECT "ts_ns", "rport" FROM tcplife', db)
    assert {(r["ts_ns"], r["rport"]) for r in rows} == ids
    assert len(rows) == N


def refusing() -> tuple[int, None]:
    return free_port(), None             # nothing listens there: connections are refused


def hanging() -> tuple[int, list[socket.socket]]:
    """A listener whose accept queue is full: a new connect() hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    held = [srv]
    for _ in range(4):                   # more than the queue takes: the rest never completes
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        held.append(c)
    time.sleep(0.1)
    return port, held


def silent() -> tuple[int, list[socket.socket]]:
    """A listener that accepts every connection and never reads from it nor
    answers: the request is sent, and its answer never comes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    held = [srv]

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:              # the test closed the listener
                return
            held.append(conn)
    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1], held


@pytest.mark.parametrize("server,limit", [(refusing, 1.0), (hanging, 1.0), (silent, 1.5)],
                         ids=["refused", "hanging-connect", "accepts-never-answers"])
def test_ctrl_c_with_influxdb_unreachable_exits_within_a_second(server, limit):
    influx_port, held = server()
    port = free_port()
    try:
        cli = Cli("tcpstates", "--json", "-L", str(port), "--influx",
                  f"http://127.0.0.1:{influx_port}/pt?flush=0.1", env=ENV)
        for _ in range(3):
            tcp_roundtrip("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while len(cli.seen) < 3 * 7 and time.monotonic() < deadline:
            cli.read_until(lambda line: True, 0.2)
        assert len(cli.seen) == 21
        time.sleep(0.5)                  # the writer has tried, and is waiting to retry (or for an answer)
        if server is silent:
            assert len(held) == 2        # the request's connection was accepted, and waits
        start = time.monotonic()
        cli.proc.send_signal(signal.SIGINT)
        rc = cli.proc.wait(10)
        took = time.monotonic() - start
        _, _, err = cli.stop()
    finally:
        for s in held or ():
            s.close()
    assert rc == 0, err
    assert took < limit, (took, err)
    assert "Traceback" not in err
    assert "21 points dropped" in err, err
    if server is silent:                 # nothing to say before the stop: one line, after it
        assert err.splitlines() == [f"pytrace: influx http://127.0.0.1:{influx_port}/pt: 21 points dropped "
                                    "(21 not written when the command ended (server did not answer)); "
                                    "0 points written"], err
