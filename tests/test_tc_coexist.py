"""pytrace's tc programs share a device with the filters already on it.

An administrator's (or a network plugin's) filters sit on the device first:
a counting filter at prio 1 handle 1 and one at prio 10 on ingress that let
the chain go on, and a counting filter at prio 10 on egress that ends it
(TC_ACT_OK, like `action ok`).  Two tunnelmons and a `vnet record` run on the
same device meanwhile.  Every frame is one of the generated pings (the
simulation's underlay carries nothing else), so every count is exact:

- the administrator's filters count every frame, while pytrace runs and
  after it is gone, and are never replaced or moved (same prio, handle and
  program), nor is the clsact qdisc that was there first removed;
- pytrace's filters come after theirs, and each monitor sees every frame
  the filters before it let through: all of ingress, none of egress;
- what pytrace adds goes when it exits, and only that.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess

import pytest

from helpers import Cli, run_cli, wait_until
from pytrace.tools.tunnelmon import TunnelMon
from pytrace.tunnelmon.simulate import Simulation
from pytrace.vnet import store
from tcfilters import AdminFilter, admin_entries, has_clsact, ours

N = 20                       # pings per flow; two flows (h0c0 <-> h1c0), so 2N frames each way


@pytest.fixture(scope="module")
def sim():
    with Simulation(hosts=2, clients=1, vnis=(100,), name=f"tco{os.getpid()}") as s:
        yield s


@pytest.fixture
def admin(sim):
    """The administrator's clsact and filters on h0's eth0, removed after the test."""
    ns = sim.hosts[0].netns
    subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "eth0", "clsact"], check=True)
    made = []
    try:
        for direction, prio, handle, verdict in (("ingress", 1, 1, "pass"), ("ingress", 10, 1, "pass"),
                                                 ("egress", 10, 1, "ok")):
            made.append(AdminFilter(ns, "eth0", direction, prio, handle, verdict))
        yield made
    finally:
        for f in made:
            f.close()
        subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", "eth0", "clsact"])


def ping(sim: Simulation) -> None:
    results = sim.run(sim.plan(rate=200, count=N))
    assert [(r.sent, r.received) for r in results] == [(N, N), (N, N)]


def flow_key(sim: Simulation) -> tuple:
    h0, h1 = sim.hosts
    return (h0.addr, h1.addr, 100, sim.client("h0c0").addr, sim.client("h1c0").addr)


def vnet_config(tmp_path, ns: str) -> str:
    path = tmp_path / "coexist.toml"
    path.write_text(f'host = "tco"\n[select]\nnet = ["203.0.113.0/24"]\n'
                    f'[[point]]\nlabel = "in"\ndevice = "eth0"\nnetns = "{ns}"\ndirection = "ingress"\nmethod = "tc"\n'
                    f'[[point]]\nlabel = "out"\ndevice = "eth0"\nnetns = "{ns}"\ndirection = "egress"\nmethod = "tc"\n')
    return str(path)


def test_admin_filters_count_everything_while_and_after_pytrace_runs(sim, admin, tmp_path):
    ns = sim.hosts[0].netns
    before = {d: admin_entries(ns, "eth0", d) for d in ("ingress", "egress")}
    assert before == {"ingress": [admin[0].entry(), admin[1].entry()], "egress": [admin[2].entry()]}

    db = tmp_path / "coexist.db"
    sock = str(tmp_path / "coexist.sock")
    rec = Cli("vnet", "record", "-q", "-c", vnet_config(tmp_path, ns), "-o", str(db), "--ctl", sock, ready=False)
    try:
        assert wait_until(lambda: os.path.exists(sock) or rec.proc.poll() is not None, 15), "vnet record"
        assert len(ours(ns, "eth0", rec.proc.pid)) == 2
        with TunnelMon("eth0", ns) as first:
            second = Cli("tunnelmon", "--netns", ns, "--dev", "eth0", "--json", "-i", "1", ready=False)
            try:
                assert wait_until(lambda: len(ours(ns, "eth0", second.proc.pid)) == 2
                                  or second.proc.poll() is not None, 15)
                mine = ours(ns, "eth0")
                assert len(mine) == 6 and all(f["prio"] > 10 for f in mine)
                # nothing of theirs replaced, moved or reordered
                assert {d: admin_entries(ns, "eth0", d) for d in before} == before
                counts = [f.count for f in admin]
                ping(sim)
                assert [f.count - c for f, c in zip(admin, counts)] == [2 * N] * 3
                snap = first.snapshot()
                # ingress: after two filters that let the chain go on; egress: after one that ends it
                assert {f.key: (f.tx_pkts, f.rx_pkts) for f in snap.flows} == {flow_key(sim): (0, 2 * N)}
                seen: dict[tuple, list[int]] = {}

                def add(line: str) -> bool:
                    rec = json.loads(line)
                    if rec["type"] == "flow":
                        key = (ipaddress.ip_address(rec["outer_src"]), ipaddress.ip_address(rec["outer_dst"]),
                               rec["vni"], ipaddress.ip_address(rec["inner_src"]),
                               ipaddress.ip_address(rec["inner_dst"]))
                        acc = seen.setdefault(key, [0, 0])
                        acc[0] += rec["tx_pkts"]
                        acc[1] += rec["rx_pkts"]
                    return sum(v[1] for v in seen.values()) >= 2 * N
                assert second.read_until(add, timeout=10) is not None, second.seen
            finally:
                rc, _, err = second.stop(signal.SIGINT)
            assert rc == 0 and err == ""
            assert seen == {flow_key(sim): [0, 2 * N]}
            # the second monitor left; the first and vnet record go on with their filters
            assert len(ours(ns, "eth0")) == 4
            ping(sim)
            assert {f.key: (f.tx_pkts, f.rx_pkts) for f in first.snapshot().flows} == {flow_key(sim): (0, 4 * N)}
        assert [f["pid"] for f in ours(ns, "eth0")] == [rec.proc.pid] * 2
        ping(sim)       # vnet record still sees traffic after both monitors left
    finally:
        rc, _, err = rec.stop(signal.SIGINT)
    assert rc == 0, err
    per_point: dict[str, int] = {}
    for row in store.read_sqlite(str(db)):
        per_point[row.point] = per_point.get(row.point, 0) + 1
    assert per_point == {"in": 3 * 2 * N}          # egress: nothing gets past the OK filter

    # pytrace is gone: theirs are all there, unchanged, on the clsact that was there first
    assert ours(ns, "eth0") == []
    assert has_clsact(ns, "eth0")
    assert {d: admin_entries(ns, "eth0", d) for d in before} == before
    counts = [f.count for f in admin]
    ping(sim)
    assert [f.count - c for f, c in zip(admin, counts)] == [2 * N] * 3


def test_clsact_made_by_pytrace_stays_while_it_holds_another_filter(sim):
    """tunnelmon creates the clsact; an administrator adds a filter to it
    meanwhile: at exit only tunnelmon's filters go, the qdisc stays."""
    ns = sim.hosts[1].netns
    assert not has_clsact(ns, "eth0")
    with TunnelMon("eth0", ns) as mon:
        assert has_clsact(ns, "eth0") and len(ours(ns, "eth0")) == 2
        late = AdminFilter(ns, "eth0", "ingress", 5, 7, "ok")
        try:
            ping(sim)
            assert late.count == 2 * N
            # the late filter ends the chain before tunnelmon's: RX is hidden from it, TX is not
            key = (sim.hosts[1].addr, sim.hosts[0].addr, 100, sim.client("h1c0").addr, sim.client("h0c0").addr)
            assert {f.key: (f.tx_pkts, f.rx_pkts) for f in mon.snapshot().flows} == {key: (2 * N, 0)}
            mon.close()
            assert ours(ns, "eth0") == []
            assert has_clsact(ns, "eth0")
            assert admin_entries(ns, "eth0", "ingress") == [late.entry()]
            ping(sim)
            assert late.count == 4 * N
        finally:
            late.close()
    subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", "eth0", "clsact"], check=True)


def test_no_priority_after_the_last_filter_is_one_line_and_changes_nothing(sim):
    ns = sim.hosts[1].netns
    subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "eth0", "clsact"], check=True)
    last = AdminFilter(ns, "eth0", "egress", 0xFFFF, 3, "pass")
    try:
        res = run_cli("tunnelmon", "--netns", ns, "--dev", "eth0", "-c", "1")
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.splitlines() == [f"pytrace tunnelmon: tc egress of eth0: no priority left after the "
                                           f"existing filters (one is at 65535); pytrace never goes before them"]
        assert ours(ns, "eth0") == []
        assert admin_entries(ns, "eth0", "egress") == [last.entry()]
        assert has_clsact(ns, "eth0")
    finally:
        last.close()
        subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", "eth0", "clsact"], check=True)
