"""vnet records through a real InfluxDB 1.x server (Debian's influxd) on loopback:
they come back from a query exactly as the SQLite store has them, also when
the server was down for a few seconds in the middle of the run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from helpers import run_cli, wait_until
from influxlab import influx_server
from pytrace.cli import cliutil
from pytrace.cli.argparser import ArgParser
from pytrace.vnet import store
from pytrace.vnet.demo import Topology
from test_vnet import _recorder

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


def _has_influx_flag() -> bool:
    p = ArgParser()
    cliutil.add_common(p, [])
    return any("--influx" in a.option_strings for a in p._actions)


pytestmark = [
    pytest.mark.skipif(not os.access(INFLUXD, os.X_OK), reason="influxd not installed (Debian package influxdb)"),
    pytest.mark.skipif(not _has_influx_flag(), reason="this tree has no --influx sink (pytrace.sinks.influx)"),
]


@pytest.fixture
def influxd(tmp_path):
    with influx_server(tmp_path / "influxdb", auth=False) as server:
        yield server


def test_records_reach_influx_and_survive_an_outage(influxd, tmp_path):
    with Topology(f"ifx{os.getpid()}") as topo:
        pts = [p for p in topo.points() if p.label in ("cA.eth0.out", "hB.ul0.in", "cB.eth0.in", "cA.eth0.in")]
        url = f"http://127.0.0.1:{influxd.port}/vnet{os.getpid()}"
        db = str(tmp_path / "r.db")
        rec = _recorder(tmp_path, "r", "nodeA", pts, "-o", db, "--influx", url)
        try:
            p1 = topo.udp_echo(20, client_port=43001)
            assert wait_until(lambda: len(_query(url)) == 4 * 20, 10)    # the server has phase 1
            influxd.stop()                                               # ... then goes away
            p2 = topo.udp_echo(20, client_port=43002)
            time.sleep(2)                                                # the writer retries meanwhile
            influxd.start()
            p3 = topo.udp_echo(20, client_port=43003)
        finally:
            rc, _, err = rec.stop(signal.SIGINT, timeout=30)
        assert rc == 0, err
        assert "cannot write" in err and "dropped" not in err
    local = store.read_sqlite(db)
    remote = store.read_influx(url)
    assert len(local) == 4 * (p1.sent + p2.sent + p3.sent) == 240
    assert sorted(remote) == sorted(local)           # every field of every record, nothing lost
    res = run_cli("vnet", "report", "--from-influx", url, "--json")
    assert res.returncode == 0, res.stderr
    paths = {tuple(p["path"]): p["count"] for p in json.loads(res.stdout)["paths"]}
    assert paths == {("cA.eth0.out", "hB.ul0.in", "cB.eth0.in"): 60, ("cA.eth0.in",): 60}


def _query(url: str) -> list:
    try:
        return store.read_influx(url)
    except Exception:
        return []
