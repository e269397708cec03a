"""--influx URL against a real InfluxDB 1.x server (Debian's influxd) that
this module starts on loopback, with authentication on, and stops.

Exact: what the server holds equals what the live --json stream printed; an
outage within the buffer bound loses nothing; a longer one drops exactly the
points that did not fit, and says how many."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from helpers import Cli, free_port, run_cli, tcp_roundtrip, wait_until
from influxlab import ENV, PASSWORD, USER, influx_server
from ready import n_programs, started
from pytrace.tools.tcptop import TcpTop

PER_CONNECTION = 7     # tcpstates -L port: 2 listener + 5 accepted-socket changes


@pytest.fixture(scope="module")
def influx(tmp_path_factory):
    with influx_server(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


def events_of(rows: list[dict]) -> list[dict]:
    """Influx rows -> the live JSON's shape (time is the point's, not a field)."""
    return sorted(({k: v for k, v in r.items() if k != "time"} for r in rows), key=lambda d: d["ts_ns"])


def live_events(lines: list[str]) -> list[dict]:
    """The live JSON's events without their wall-clock "time" (the point's time
    is that, in InfluxDB: test_influx_holds_exactly_the_events_printed)."""
    return sorted(({k: v for k, v in json.loads(l).items() if k != "time"} for l in lines), key=lambda d: d["ts_ns"])


def wait_printed(cli: Cli, n: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(cli.seen) < n:
        cli.read_until(lambda l: True, 0.2)
    assert len(cli.seen) == n, cli.seen


def test_influx_holds_exactly_the_events_printed(influx):
    db = "pt_events"
    port = free_port()
    cli = Cli("tcpstates", "--json", "-L", str(port), "--influx", influx.url(db, flush="0.2"), env=ENV)
    cmdline = Path(f"/proc/{cli.proc.pid}/cmdline").read_bytes()
    for _ in range(3):
        tcp_roundtrip("127.0.0.1", port)
    wait_printed(cli, 3 * PER_CONNECTION)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert PASSWORD.encode() not in cmdline and USER.encode() not in cmdline
    assert "dropped" not in err and "rejected" not in err, err
    rows = influx.query("SELECT * FROM tcpstates", db)
    assert events_of(rows) == live_events(lines)
    # strings are tags (GROUP BY-able), numbers fields; the time is the event's own
    tags = influx.query("SHOW TAG KEYS FROM tcpstates", db)
    assert {t["tagKey"] for t in tags} == {"comm", "family", "laddr", "raddr", "oldstate", "newstate", "skaddr"}
    offsets = {r["time"] - r["ts_ns"] for r in rows}
    assert len(offsets) == 1 and abs(offsets.pop() - (time.time_ns() - time.monotonic_ns())) < 1e9


def test_short_outage_loses_nothing(influx):
    db = "pt_short"
    port = free_port()
    cli = Cli("tcpstates", "--json", "-L", str(port), "--influx", influx.url(db, flush="0.2", buffer="1000"),
              env=ENV)
    try:
        tcp_roundtrip("127.0.0.1", port)
        wait_printed(cli, PER_CONNECTION)
        assert wait_until(lambda: influx.count(db) == PER_CONNECTION, 15)
        influx.stop()
        for _ in range(5):
            tcp_roundtrip("127.0.0.1", port)
        wait_printed(cli, 6 * PER_CONNECTION)
        time.sleep(1.0)             # several flush intervals: the writer meets the outage
    finally:
        influx.start()
    assert wait_until(lambda: influx.count(db) == 6 * PER_CONNECTION, 20)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert "cannot write" in err and "reachable again" in err, err
    assert "dropped" not in err, err
    assert events_of(influx.query("SELECT * FROM tcpstates", db)) == live_events(lines)


def test_long_outage_drops_the_oldest_and_says_exactly_how_many(influx):
    db = "pt_long"
    port = free_port()
    bound = 20
    cli = Cli("tcpstates", "--json", "-L", str(port), "--influx",
              influx.url(db, flush="0.2", buffer=str(bound), batch="5"), env=ENV)
    try:
        tcp_roundtrip("127.0.0.1", port)
        wait_printed(cli, PER_CONNECTION)
        assert wait_until(lambda: influx.count(db) == PER_CONNECTION, 15)
        influx.stop()
        for _ in range(10):
            tcp_roundtrip("127.0.0.1", port)
        wait_printed(cli, 11 * PER_CONNECTION)
        time.sleep(1.0)
    finally:
        influx.start()
    assert wait_until(lambda: influx.count(db) == PER_CONNECTION + bound, 20)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    m = re.search(r"(\d+) points dropped", err)
    assert m, err
    dropped = int(m.group(1))
    live = live_events(lines)
    # (what was printed and the sink's report, should this fail again: it did once, 52 for 50)
    assert dropped == 10 * PER_CONNECTION - bound, (len(live), err)
    stored = events_of(influx.query("SELECT * FROM tcpstates", db))
    assert len(stored) == len(live) - dropped
    # what survived: everything before the outage, and the newest `bound` of it
    assert stored == sorted(live[:PER_CONNECTION] + live[-bound:], key=lambda d: d["ts_ns"])


def test_tcprtt_intervals_become_fields(influx):
    db = "pt_rtt"
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    import threading

    def talk():
        for _ in range(100):
            c.sendall(b"q")
            a.recv(1)
            a.sendall(b"a")
            c.recv(1)
    t = threading.Timer(0.8, talk)
    t.start()
    r = run_cli("tcprtt", "-d", "2", "-p", str(port), "--json", "--influx", influx.url(db, flush="0.2"), env=ENV)
    t.join()
    for s in (c, a, srv):
        s.close()
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    rows = influx.query("SELECT * FROM tcprtt", db)
    assert len(rows) == len(recs) == 1
    row, rec = rows[0], recs[0]
    assert row["count"] == rec["count"] >= 100 and row["sum"] == rec["sum"] and row["unit"] == "usecs"
    buckets = {k: v for k, v in row.items() if k.startswith("bucket_") and v is not None}
    assert buckets == {f"bucket_{b['low']}_{b['high']}": b["count"] for b in rec["buckets"]}


def test_tcptop_flows_are_tagged_points_and_the_load_average_one_more(influx):
    """An aggregating tool through cli/aggregate.print_loop: each flow is a
    point tagged by its connection, the interval's load average and missed
    count one point without tags, all at the interval's time."""
    db = "pt_top"
    cli = started("tcptop", "-p", str(os.getpid()), "--json", "30", "--influx", influx.url(db, flush="0.2"),
                  env=ENV, links=n_programs(TcpTop, "tp_btf"))
    conn = tcp_roundtrip("127.0.0.1", send=b"x" * 3000, reply=b"y" * 700)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = [json.loads(l) for l in lines]
    assert {(r["lport"], r["rx_bytes"], r["tx_bytes"]) for r in recs} == \
        {(conn.client_port, 700, 3000), (conn.server_port, 3000, 700)}
    assert wait_until(lambda: len(influx.query("SELECT * FROM tcptop", db)) == 3, 10)
    rows = influx.query("SELECT * FROM tcptop", db)
    flows = {(r["lport"], r["rport"], r["rx_bytes"], r["tx_bytes"]) for r in rows if r["pid"]}
    assert flows == {(str(conn.client_port), str(conn.server_port), 700, 3000),
                     (str(conn.server_port), str(conn.client_port), 3000, 700)}
    (load,) = [r for r in rows if not r["pid"]]
    assert load["missed"] == 0 and load["load1"] >= 0 and load["threads"] >= 1
    assert len({r["time"] for r in rows}) == 1


@pytest.mark.parametrize("url,needle", [
    ("http://someone:secret@127.0.0.1:8086/db", "INFLUX_USERNAME"),
    ("ftp://127.0.0.1/db", "--influx"),
    ("http://127.0.0.1:8086/db?buffer=0", "buffer"),
    ("http://127.0.0.1:8086/db?bogus=1", "bogus"),
])
def test_bad_url_is_one_line_and_exit_2(url, needle):
    r = run_cli("tcpstates", "--influx", url)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr
    assert "secret" not in r.stderr
