"""A traced device deleted under a running tool: tunnelmon says so in one line
and exits with status 1 (after printing the partial interval), the library
raises; `vnet record` drops that point with a one-line message and goes on
with the others.  Within about a second either way, whatever the interval.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from helpers import Cli, run_cli, wait_until
from pytrace.core.errors import PytraceError
from pytrace.tools.tunnelmon import TunnelMon
from pytrace.vnet import store
from tcfilters import ours


@pytest.fixture
def ns():
    """A namespace with two veth pairs, v0-v1 and w0-w1."""
    name = f"tco-dg-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for a, b in (("v0", "v1"), ("w0", "w1")):
            subprocess.run(["ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b], check=True)
            for dev in (a, b):
                subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


def delete(ns: str, dev: str) -> float:
    subprocess.run(["ip", "-n", ns, "link", "del", dev], check=True)
    return time.monotonic()


@pytest.mark.parametrize("hook", ["tc", "xdp"])
def test_tunnelmon_says_its_device_went_and_exits_1(ns, hook):
    cli = Cli("tunnelmon", "--netns", ns, "--dev", "v0", "-i", "30", "--hook", hook, ready=False)
    try:
        assert cli.read_until(lambda line: line.startswith("Tracing VXLAN"), timeout=15) is not None
        gone = delete(ns, "v0")
        assert wait_until(lambda: cli.proc.poll() is not None, 3)
        took = time.monotonic() - gone
    finally:
        rc, out, err = cli.stop(signal.SIGINT)
    assert rc == 1
    assert err == f"pytrace tunnelmon: device v0 in netns {ns} was deleted\n"
    assert took < 2.0
    # the partial interval was printed before the message: an empty table
    assert out[-2].split() == ["OUTER_SRC", "OUTER_DST", "VNI", "INNER_SRC", "INNER_DST",
                               "TX_PKTS", "TX_BYTES", "RX_PKTS", "RX_BYTES"]


def test_library_deltas_raise_once_the_device_is_gone(ns):
    with TunnelMon("w0", ns) as mon:
        assert mon.gone() is None
        delete(ns, "w0")
        start = time.monotonic()
        with pytest.raises(PytraceError) as exc:
            for _ in mon.deltas(interval=30):
                pass
        assert time.monotonic() - start < 2.0
    assert str(exc.value) == f"device w0 in netns {ns} was deleted"


def test_vnet_record_drops_the_point_and_goes_on(ns, tmp_path):
    cfg = tmp_path / "gone.toml"
    points = [("a", "v0", "ingress", "tc"), ("b", "v1", "ingress", "xdp"), ("c", "w0", "egress", "tracepoint"),
              ("d", "w1", "ingress", "tc")]
    cfg.write_text("".join(f'[[point]]\nlabel = "{lbl}"\ndevice = "{dev}"\nnetns = "{ns}"\ndirection = "{d}"\n'
                           f'method = "{m}"\n' for lbl, dev, d, m in points))
    sock, db = str(tmp_path / "gone.sock"), str(tmp_path / "gone.db")
    rec = Cli("vnet", "record", "-q", "-c", str(cfg), "-o", db, "--ctl", sock, ready=False)
    try:
        assert wait_until(lambda: os.path.exists(sock) or rec.proc.poll() is not None, 15)
        assert rec.proc.poll() is None
        gone = delete(ns, "v0")          # its peer v1 goes with it
        listed = lambda: run_cli("vnet", "ctl", "-s", sock, "list").stdout.split()   # noqa: E731
        assert wait_until(lambda: "a" not in listed() and "b" not in listed(), 3)
        took = time.monotonic() - gone
        assert {"c", "d"} <= set(listed()) and rec.proc.poll() is None
    finally:
        rc, _, err = rec.stop(signal.SIGINT)
    assert rc == 0, err
    assert took < 2.5
    lines = err.splitlines()
    assert f"vnet: point 'a': device v0 in netns {ns} was deleted; no longer traced" in lines
    assert f"vnet: point 'b': device v1 in netns {ns} was deleted; no longer traced" in lines
    assert [(p["label"], p["removed_ns"] is not None) for p in store.read_points(db)] == \
        [("a", True), ("b", True), ("c", False), ("d", False)]
    assert ours(ns, "w1") == []
