"""Recovery after SIGKILL: what a killed pytrace leaves is recognisably its
own, and the next run (or `pytrace doctor --cleanup`) removes it, while a
live pytrace's state beside it is untouched.

- tunnelmon and `vnet record` leave tc filters (their programs with them);
  their handle carries the owner's PID.  Their XDP programs hang on BPF
  links and die with the process.
- `vnet demo` and `tunnelmon simulate` leave network namespaces (with the
  programs attached inside); the loopback device's alias names the owner.

Every namespace here is made by the test (or by the pytrace it runs) with a
name unique to it, and removed.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from helpers import Cli, bpf_prog_ids, released, run_cli, wait_until
from pytrace.tools.tunnelmon import TunnelMon
from pytrace.tunnelmon.simulate import Simulation
from tcfilters import has_clsact, ours, xdp_attached

PID = os.getpid()


@pytest.fixture(scope="module")
def sim():
    with Simulation(hosts=2, clients=1, vnis=(100,), name=f"tcol{PID}") as s:
        yield s


def kill(cli: Cli) -> set[int]:
    """SIGKILL a running pytrace; the IDs of the BPF programs it held."""
    progs = bpf_prog_ids(cli.proc.pid)
    assert progs
    cli.proc.kill()
    cli.proc.wait(10)
    return progs


def removal_lines(ns: str, dev: str, filters: list[dict]) -> list[str]:
    """What the cleanup says for each of these filters (tcfilters.ours() entries)."""
    return [f"removed tc filter {f['name']} ({f['direction']} prio {f['prio']} handle {f['handle']:#x}) "
            f"on {dev} in netns {ns}, left by pid {f['pid']}, which is gone" for f in filters]


def netns_of(tag: str) -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.endswith(tag) or n.startswith(tag))


def alias(ns: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "link", "show", "lo"], capture_output=True, text=True).stdout
    return out.split("alias ", 1)[1].strip() if "alias " in out else ""


def cleanup(how: str, tool: list[str], prefix: str) -> list[str]:
    """Run the next command (or doctor --cleanup): what it said it removed."""
    if how == "doctor":
        res = run_cli("doctor", "--cleanup")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        return res.stdout.splitlines()
    res = run_cli(*tool, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    said = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    return said


@pytest.mark.parametrize("how", ["next", "doctor"])
def test_killed_tunnelmon_filters_go_live_ones_stay(sim, how):
    ns = sim.hosts[0].netns
    with TunnelMon("eth0", ns) as live:
        mine = ours(ns, "eth0", PID)
        assert len(mine) == 2
        dead = Cli("tunnelmon", "--netns", ns, "--dev", "eth0", "-i", "1", ready=False)
        assert wait_until(lambda: len(ours(ns, "eth0", dead.proc.pid)) == 2 or dead.proc.poll() is not None, 15)
        progs = kill(dead)
        left = ours(ns, "eth0", dead.proc.pid)
        assert len(left) == 2 and {f["prog_id"] for f in left} <= bpf_prog_ids()
        said = cleanup(how, ["tunnelmon", "--netns", ns, "--dev", "eth0", "-c", "1", "-i", "1"],
                       "pytrace tunnelmon: ")
        assert set(removal_lines(ns, "eth0", left)) <= set(said)
        assert ours(ns, "eth0", dead.proc.pid) == []
        assert released(progs)
        # the live monitor: its filters as they were, and still counting
        assert ours(ns, "eth0", PID) == mine
        results = sim.run(sim.plan(rate=200, count=5))
        assert [(r.sent, r.received) for r in results] == [(5, 5), (5, 5)]
        assert [(f.tx_pkts, f.rx_pkts) for f in live.snapshot().flows] == [(10, 10)]
    assert ours(ns, "eth0") == [] and not has_clsact(ns, "eth0")


def vnet_config(tmp_path, name: str, points: list[tuple[str, str, str, str]], ns: str) -> str:
    path = tmp_path / f"{name}.toml"
    text = 'host = "tco"\n[select]\nnet = ["203.0.113.0/24"]\n'
    for label, dev, direction, method in points:
        text += (f'[[point]]\nlabel = "{label}"\ndevice = "{dev}"\nnetns = "{ns}"\n'
                 f'direction = "{direction}"\nmethod = "{method}"\n')
    path.write_text(text)
    return str(path)


def recorder(tmp_path, name: str, cfg: str) -> Cli:
    sock = str(tmp_path / f"{name}.sock")
    rec = Cli("vnet", "record", "-q", "-c", cfg, "-o", str(tmp_path / f"{name}.db"), "--ctl", sock, ready=False)
    assert wait_until(lambda: os.path.exists(sock) or rec.proc.poll() is not None, 15)
    assert rec.proc.poll() is None, rec.proc.stderr.read()
    return rec


@pytest.mark.parametrize("how", ["next", "doctor"])
def test_killed_vnet_record_filters_go_live_ones_stay(sim, tmp_path, how):
    ns = sim.hosts[1].netns
    live = recorder(tmp_path, "live", vnet_config(tmp_path, "live", [("l", "eth0", "ingress", "tc")], ns))
    try:
        mine = ours(ns, "eth0", live.proc.pid)
        assert len(mine) == 1
        cfg = vnet_config(tmp_path, "dead", [("i", "eth0", "ingress", "tc"), ("e", "eth0", "egress", "tc"),
                                             ("x", "eth0", "ingress", "xdp"), ("t", "eth0", "egress", "tracepoint")],
                          ns)
        dead = recorder(tmp_path, "dead", cfg)
        assert xdp_attached(ns, "eth0") and len(ours(ns, "eth0", dead.proc.pid)) == 2
        progs = kill(dead)
        left = ours(ns, "eth0", dead.proc.pid)
        assert len(left) == 2 and {f["name"] for f in left} == {"vnet_tc"}
        assert not xdp_attached(ns, "eth0")          # a link: gone with its owner
        said = cleanup(how, ["vnet", "record", "-q", "-c", cfg, "-o", str(tmp_path / "next.db"), "-d", "1"],
                       "vnet: ")
        assert set(removal_lines(ns, "eth0", left)) <= set(said)
        assert ours(ns, "eth0", dead.proc.pid) == []
        assert released(progs)
        assert ours(ns, "eth0", live.proc.pid) == mine
        assert live.proc.poll() is None
    finally:
        rc, _, err = live.stop(signal.SIGINT)
    assert rc == 0, err
    assert ours(ns, "eth0") == [] and not has_clsact(ns, "eth0") and not xdp_attached(ns, "eth0")


def long_demo() -> Cli:
    # slowed down by a tbf: it runs for ever without eating the CPU
    cli = Cli("vnet", "demo", "-n", "1000000", "--tbf", "hA:ul0", "--tbf-rate", "100kbit", ready=False)
    pid = cli.proc.pid
    # every one of the 16 points attached: a program each
    assert wait_until(lambda: len(netns_of(f"-{pid}")) == 4 and len(bpf_prog_ids(pid)) == 16
                      or cli.proc.poll() is not None, 20)
    assert cli.proc.poll() is None, cli.proc.stderr.read()
    return cli


@pytest.mark.parametrize("how", ["next", "doctor"])
def test_killed_vnet_demo_namespaces_go_live_ones_stay(how):
    live = long_demo()
    try:
        dead = long_demo()
        pid = dead.proc.pid
        progs = kill(dead)
        left = netns_of(f"-{pid}")
        assert len(left) == 4 and all(alias(ns).startswith(f"pytrace vnet-demo pid={pid} ") for ns in left)
        # the 8 tc programs stay, held by their filters in the namespaces (the others
        # hung on links: the kernel frees them, asynchronously)
        assert wait_until(lambda: len(progs & bpf_prog_ids()) == 8, 5, 0.1)
        said = cleanup(how, ["vnet", "demo", "-n", "5", "--json"], "vnet: ")
        assert {f"removed network namespace {ns} (vnet-demo of pid {pid}, which is gone)" for ns in left} <= set(said)
        assert netns_of(f"-{pid}") == []
        assert released(progs)
        assert len(netns_of(f"-{live.proc.pid}")) == 4 and live.proc.poll() is None
    finally:
        rc, _, err = live.stop(signal.SIGTERM)
    assert rc == 0, err
    assert netns_of(f"-{live.proc.pid}") == []


def long_simulation(name: str) -> Cli:
    cli = Cli("tunnelmon", "simulate", "--hosts", "2", "--clients", "1", "--rate", "5", "-d", "120",
              "--name", name, ready=False)
    assert cli.read_until(lambda line: line.startswith("Sending"), timeout=20) is not None, cli.proc.stderr.read()
    return cli


@pytest.mark.parametrize("how", ["next", "doctor"])
def test_killed_simulation_namespaces_go_and_the_name_is_free_again(how):
    name, other = f"tcok{PID}", f"tcoj{PID}"
    live = long_simulation(other)
    try:
        dead = long_simulation(name)
        dead.proc.kill()
        dead.proc.wait(10)
        left = netns_of(f"{name}-")
        assert left == sorted(f"{name}-{n}" for n in ("ul", "h0", "h1", "h0c0", "h1c0"))
        # the same name again: it starts (and ends) as if nothing had been there
        said = cleanup(how, ["tunnelmon", "simulate", "--hosts", "2", "--clients", "1", "--count", "2",
                             "--rate", "50", "--name", name], "pytrace tunnelmon simulate: ")
        assert {f"removed network namespace {ns} (tunnelmon-simulate of pid {dead.proc.pid}, which is gone)"
                for ns in left} <= set(said)
        if how == "doctor":
            res = run_cli("tunnelmon", "simulate", "--hosts", "2", "--clients", "1", "--count", "2",
                          "--rate", "50", "--name", name, timeout=60)
            assert res.returncode == 0, res.stderr
        assert netns_of(f"{name}-") == []
        assert len(netns_of(f"{other}-")) == 5 and live.proc.poll() is None
    finally:
        rc, _, err = live.stop(signal.SIGTERM)
    assert rc == 0, err
    assert netns_of(f"{other}-") == []


def test_doctor_cleanup_with_nothing_left_says_so():
    res = run_cli("doctor", "--cleanup")
    assert res.returncode == 0 and res.stderr == ""
    assert all(line.startswith(("removed ", "kept ", "nothing left")) for line in res.stdout.splitlines())
