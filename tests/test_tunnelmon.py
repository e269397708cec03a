"""tunnelmon on a simulated VXLAN overlay: exact per-key counts, anomalies, CLI, cleanup.

The simulation (pytrace.tunnelmon.simulate) builds hosts in network
namespaces with static neighbours and forwarding entries, so the only frames
on a host's underlay device are the pings the generator sends and the
replies: every count is predicted exactly from the plan (count x frame size,
in each direction).  Malformed frames are crafted with an AF_PACKET socket on
another host's underlay device and sent to the monitored host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess

import pytest

from helpers import Cli, bpf_prog_names, run_cli, wait_until
from matrix import opened, variants
from pytrace.core.netattach import in_netns
from pytrace.tools.tunnelmon import TunnelMon
from pytrace.tunnelmon.simulate import Flow, FlowResult, Simulation

PING = 100                       # ICMP payload bytes
ETH, IP4, IP6, UDP, VXLAN, ICMP = 14, 20, 40, 8, 8, 8


def frame_bytes(ipv6_underlay: bool, ipv6_inner: bool = False) -> int:
    """One ping frame on the underlay: outer Ethernet/IP/UDP/VXLAN + inner Ethernet/IP/ICMP."""
    return ETH + (IP6 if ipv6_underlay else IP4) + UDP + VXLAN + ETH + (IP6 if ipv6_inner else IP4) + ICMP + PING


def expected(sim: Simulation, results: list[FlowResult], host: int = 0, rx_only: bool = False) -> dict:
    """What a monitor on `host`'s underlay device must count, per key, from the plan:
    requests src->dst and as many replies dst->src, for flows that cross it."""
    acc: dict[tuple, list[int]] = {}
    me = sim.hosts[host].addr
    for r in results:
        f: Flow = r.flow
        assert r.sent == r.received == f.count, f"{f.src.name}->{f.dst.name}: {r}"
        if f.src.host == host:       # our client asks: requests out, replies in
            key = (me, sim.hosts[f.dst.host].addr, f.src.vni, f.src_addr, f.dst_addr)
        elif f.dst.host == host:     # our client answers: requests in, replies out
            key = (me, sim.hosts[f.src.host].addr, f.src.vni, f.dst_addr, f.src_addr)
        else:
            continue                 # between two other hosts: never on our device
        pkts = acc.setdefault(key, [0, 0, frame_bytes(sim.ipv6, f.ipv6)])
        pkts[0] += 0 if rx_only else r.sent
        pkts[1] += r.sent
    return {k: (tx, tx * size, rx, rx * size) for k, (tx, rx, size) in acc.items()}


def counts(snap) -> dict:
    return {f.key: (f.tx_pkts, f.tx_bytes, f.rx_pkts, f.rx_bytes) for f in snap.flows}


@pytest.fixture(scope="module")
def sim4():
    with Simulation(hosts=3, clients=3, vnis=(100, 200), name=f"pt-tm{os.getpid()}a") as sim:
        yield sim


@pytest.fixture(scope="module")
def sim6():
    with Simulation(hosts=3, clients=2, vnis=(300, 400, 500), ipv6=True, inner_ipv6=True,
                    name=f"pt-tm{os.getpid()}b") as sim:
        yield sim


def all_zero(snap) -> bool:
    return not any(snap.skipped.values()) and not any(snap.malformed.values())


def test_counts_exact_per_key_both_directions_every_vni(sim4):
    """Every client pings every peer of its VNI on the other hosts; h0c1 is
    five times louder.  The monitor on h0 sees exactly the flows that cross h0."""
    flows = sim4.plan(rate=400, count=4, size=PING, loud="h0c1", loud_factor=5)
    with TunnelMon("eth0", sim4.hosts[0].netns) as mon:
        assert mon.variant.hook == "tc"
        results = sim4.run(flows)
        snap = mon.snapshot()
    want = expected(sim4, results)
    assert counts(snap) == want
    assert {k[2] for k in want} == {100, 200}                    # every VNI
    assert {k[1] for k in want} == {sim4.hosts[1].addr, sim4.hosts[2].addr}
    loud = sim4.client("h0c1")
    assert all(v[0] == 5 * 4 + 4 for k, v in want.items() if k[3] == loud.addr)   # 20 requests + 4 replies
    assert all_zero(snap)


def test_deltas_between_snapshots(sim4):
    h0c0, h1c0 = sim4.client("h0c0"), sim4.client("h1c0")
    with TunnelMon("eth0", sim4.hosts[0].netns) as mon:
        sim4.run([Flow(h0c0, h1c0, 500, 3, PING, 1)])
        first = mon.snapshot()
        results = sim4.run([Flow(h1c0, h0c0, 500, 5, PING, 2)])
        delta = mon.snapshot() - first
    size = frame_bytes(False)
    key = (sim4.hosts[0].addr, sim4.hosts[1].addr, 100, h0c0.addr, h1c0.addr)
    assert counts(first) == {key: (3, 3 * size, 3, 3 * size)}
    assert counts(delta) == {key: (5, 5 * size, 5, 5 * size)} == expected(sim4, results)


def test_ipv6_underlay_with_ipv4_and_ipv6_overlay(sim6):
    with TunnelMon("eth0", sim6.hosts[0].netns) as mon:
        results = sim6.run(sim6.plan(rate=400, count=3, size=PING, loud="h1c0", loud_factor=4))
        results += sim6.run(sim6.plan(rate=400, count=2, size=PING, ipv6=True, rates={"h2c1": 100}))
        snap = mon.snapshot()
    want = expected(sim6, results)
    assert counts(snap) == want
    assert {k[2] for k in want} == {300, 400}       # clients c0, c1 per host: VNIs 300 and 400
    assert all(isinstance(k[0], ipaddress.IPv6Address) for k in want)
    inner6 = {k: v for k, v in want.items() if k[3].version == 6}
    assert len(inner6) == len(want) // 2 == 4
    assert all(v[1] == v[0] * (ETH + IP6 + UDP + VXLAN + ETH + IP6 + ICMP + PING) for v in inner6.values())
    assert all(v[1] == v[0] * (ETH + IP6 + UDP + VXLAN + ETH + IP4 + ICMP + PING)
               for k, v in want.items() if k not in inner6)
    # IPv6 underlay: the only non-VXLAN frames are ICMPv6 (neighbour/listener), if any
    assert not any(snap.malformed.values())
    assert snap.skipped["not_ip"] == snap.skipped["other_port"] == snap.skipped["fragment"] == 0


def test_xdp_counts_received_traffic(sim4):
    flows = sim4.plan(rate=400, count=3, size=PING, sources=["h0c0", "h1c1", "h2c2"])
    with TunnelMon("eth0", sim4.hosts[0].netns, xdp=True) as mon:
        assert mon.variant.hook == "xdp"
        assert "xdp" in subprocess.run(["ip", "-n", sim4.hosts[0].netns, "link", "show", "eth0"],
                                       capture_output=True, text=True).stdout
        results = sim4.run(flows)
        snap = mon.snapshot()
    assert counts(snap) == expected(sim4, results, rx_only=True)
    assert all_zero(snap)
    assert "xdp" not in subprocess.run(["ip", "-n", sim4.hosts[0].netns, "link", "show", "eth0"],
                                       capture_output=True, text=True).stdout


# -- crafted frames ------------------------------------------------------------------

def _csum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ipv4(src, dst, proto: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return head[:10] + struct.pack("!H", _csum(head)) + head[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def vxlan(vni: int, flags: int = 0x08) -> bytes:
    return struct.pack("!B3xI", flags, vni << 8)


@pytest.mark.parametrize("hook", variants(TunnelMon))
def test_malformed_frames_counted_by_kind_and_stats_stay_exact(sim4, hook):
    """Frames crafted on h1's underlay device, sent to h0, with pings going on."""
    h0, h1 = sim4.hosts[0], sim4.hosts[1]
    eth = _mac(h0.mac) + _mac(h1.mac)
    inner_eth = bytes.fromhex("02540000ffff02540000fffe")

    def outer(dport: int, payload: bytes) -> bytes:
        return eth + b"\x08\x00" + ipv4(h1.addr, h0.addr, 17, udp(40000, dport, payload))

    inner_ip = ipv4("203.0.113.200", "203.0.113.201", 1, b"\x08\0\0\0\0\0\0\0")
    crafted = {
        # kind: (frame, how many)
        "trunc_vxlan": (outer(4789, b"\x08\0\0\0"), 3),                       # 4 of 8 header bytes
        "other_port": (outer(4790, vxlan(100) + inner_eth + b"\x08\x00" + inner_ip), 2),
        "inner_not_ip": (outer(4789, vxlan(999) + inner_eth + b"\x88\xb5" + b"\0" * 46), 4),
        "bad_vxlan": (outer(4789, vxlan(100, flags=0) + inner_eth + b"\x08\x00" + inner_ip), 1),
        "trunc_inner_ip": (outer(4789, vxlan(999) + inner_eth + b"\x08\x00" + inner_ip[:12]), 5),
        "trunc_ip": (eth + b"\x08\x00" + b"\x45" + b"\0" * 9, 6),             # 10 of 20 IPv4 bytes
    }
    flows = sim4.plan(rate=400, count=3, size=PING, sources=["h0c0", "h1c1", "h2c0"])
    with opened(TunnelMon, hook, "eth0", h0.netns) as mon:
        assert mon.variant.hook == hook
        with in_netns(h1.netns):
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            raw.bind(("eth0", 0))
            for frame, n in crafted.values():
                for _ in range(n):
                    raw.send(frame)
        finally:
            raw.close()
        results = sim4.run(flows)
        snap = mon.snapshot()
    assert counts(snap) == expected(sim4, results, rx_only=hook == "xdp")
    want_malformed = {k: 0 for k in snap.malformed}
    want_malformed.update({k: n for k, (_, n) in crafted.items() if k != "other_port"})
    assert snap.malformed == want_malformed
    assert snap.skipped["other_port"] == 2
    assert snap.skipped["not_ip"] == snap.skipped["fragment"] == 0
    # h0 may answer the port-4790 frames with ICMP port unreachable: IP, not UDP
    assert snap.skipped["not_udp"] <= 2


# -- the command line ------------------------------------------------------------------

def tc_state(ns: str) -> str:
    """tc qdiscs/filters and XDP on eth0 in ns (empty: nothing of ours is attached)."""
    out = []
    for cmd in (["tc", "-n", ns, "filter", "show", "dev", "eth0", "ingress"],
                ["tc", "-n", ns, "filter", "show", "dev", "eth0", "egress"]):
        out.append(subprocess.run(cmd, capture_output=True, text=True).stdout.strip())
    qdisc = subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True).stdout
    if "clsact" in qdisc:
        out.append(qdisc.strip())
    link = subprocess.run(["ip", "-n", ns, "link", "show", "eth0"], capture_output=True, text=True).stdout
    if "xdp" in link:
        out.append(link.strip())
    return "\n".join(o for o in out if o)


def none_of_ours_loaded() -> bool:
    """No tunnelmon program left in the kernel.  The kernel drops a program
    array's entries in a work item once its last user is gone, so the IP
    parser may outlive the process by a moment: wait for it (bounded)."""
    return wait_until(lambda: not any(n.startswith("tunnelmon_") for n in bpf_prog_names()), 5, 0.1)


def test_cli_json_deltas_add_up_and_nothing_stays_attached(sim4, tmp_path):
    ns = sim4.hosts[0].netns
    assert tc_state(ns) == ""
    recording = tmp_path / "tunnelmon.rec"
    cli = Cli("tunnelmon", "--netns", ns, "--dev", "eth0", "-i", "1", "--json", "--record", str(recording),
              ready=False)
    try:
        assert wait_until(lambda: "tunnelmon_tc_in" in tc_state(ns) or cli.proc.poll() is not None, 15)
        assert "tunnelmon_tc_eg" in tc_state(ns)
        results = sim4.run(sim4.plan(rate=50, count=10, size=PING, sources=["h0c0", "h2c1"]))
        want = expected(sim4, results)
        total = sum(v[0] + v[2] for v in want.values())
        got: dict[tuple, list[int]] = {}

        def add(line: str) -> bool:
            rec = json.loads(line)
            if rec["type"] == "flow":
                key = (ipaddress.ip_address(rec["outer_src"]), ipaddress.ip_address(rec["outer_dst"]), rec["vni"],
                       ipaddress.ip_address(rec["inner_src"]), ipaddress.ip_address(rec["inner_dst"]))
                acc = got.setdefault(key, [0, 0, 0, 0])
                for i, name in enumerate(("tx_pkts", "tx_bytes", "rx_pkts", "rx_bytes")):
                    acc[i] += rec[name]
            return sum(v[0] + v[2] for v in got.values()) >= total
        assert cli.read_until(add, timeout=10) is not None
    finally:
        rc, _, err = cli.stop(signal.SIGTERM)
    assert rc == 0 and err == ""
    assert {k: tuple(v) for k, v in got.items()} == want
    assert tc_state(ns) == ""
    assert none_of_ours_loaded()
    # the recording replays the same records
    replay = run_cli("replay", str(recording))
    assert replay.returncode == 0, replay.stderr
    live = [line for line in cli.seen if line.startswith("{")]
    assert live and replay.stdout.splitlines() == live


@pytest.mark.parametrize("how", ["duration", "sigint", "xdp-sigterm"])
def test_cli_table_and_cleanup(sim4, how):
    ns = sim4.hosts[0].netns
    args = ["tunnelmon", "--netns", ns, "--dev", "eth0", "--cumulative", "--sort", "INNER_DST"]
    if how == "duration":
        args += ["-i", "1", "-d", "2"]
    if how.startswith("xdp"):
        args += ["--xdp"]
    cli = Cli(*args, ready=False)
    try:
        assert cli.read_until(lambda line: line.startswith("Tracing VXLAN"), timeout=15) is not None
        h0c2, h1c0, h2c2 = sim4.client("h0c2"), sim4.client("h1c0"), sim4.client("h2c2")
        results = sim4.run([Flow(h0c2, h1c0, 500, 2, PING, 1), Flow(h0c2, h2c2, 500, 3, PING, 2)])
        want = expected(sim4, results, rx_only=how.startswith("xdp"))
        rows = [" ".join(str(x) for x in (*k, *v)) for k, v in sorted(want.items(), key=lambda kv: kv[0][4])]
        seen: list[str] = []

        def table_done(line: str) -> bool:
            if line.startswith("OUTER_SRC"):
                seen.clear()
                seen.append(line)
            elif seen:
                seen.append(" ".join(line.split()))
            return [s for s in seen[1:] if s] == rows
        assert cli.read_until(table_done, timeout=10) is not None, cli.seen
        assert seen[0].split() == ["OUTER_SRC", "OUTER_DST", "VNI", "INNER_SRC", "INNER_DST",
                                   "TX_PKTS", "TX_BYTES", "RX_PKTS", "RX_BYTES"]
        if how == "duration":
            assert cli.proc.wait(10) == 0      # ends by itself
        else:
            assert "tunnelmon_" in tc_state(ns) or "xdp" in tc_state(ns)
    finally:
        rc, _, err = cli.stop({"sigint": signal.SIGINT}.get(how, signal.SIGTERM))
    assert rc == 0 and err == ""
    assert tc_state(ns) == ""
    assert none_of_ours_loaded()


def test_bad_arguments_exit_2_with_one_line(sim4):
    ns = sim4.hosts[0].netns
    cases = [
        ["--dev", "nosuchdev0"],
        ["--netns", ns, "--dev", "nosuchdev0"],
        ["--netns", f"{ns}-nosuch", "--dev", "eth0"],
        ["--dev", "lo", "--port", "0"],
        ["--dev", "lo", "--port", "65536"],
        ["--dev", "lo", "--port", "http"],
        ["--dev", "lo", "--web", "localhost:8080"],
        ["--dev", "lo", "--web", "99999"],
        ["--dev", "lo", "--sort", "nosuchcolumn"],
        [],
        ["simulate", "--hosts", "1"],
        ["simulate", "--vnis", "100,0"],
        ["simulate", "--loud", "h9c9"],
    ]
    for case in cases:
        proc = run_cli("tunnelmon", *case)
        assert proc.returncode == 2, (case, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and proc.stdout == "", (case, proc.stderr)
    assert tc_state(ns) == ""


def test_simulate_command_runs_bounded_and_cleans_up():
    proc = run_cli("tunnelmon", "simulate", "--hosts", "2", "--clients", "2", "--count", "3", "--rate", "100",
                   "--name", f"pt-tms{os.getpid()}", "--loud", "h1c1", "--loud-factor", "2", timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Simulated VXLAN overlay pt-tms{os.getpid()}: 2 hosts, 4 clients")
    table = {line.split()[0]: line.split()[1:] for line in lines[lines.index(next(
        l for l in lines if l.startswith("CLIENT"))) + 1:]}
    # each client pings its one peer (same VNI, other host) 3 times; h1c1 twice as much
    assert table == {"h0c0": ["100", "1", "3", "3"], "h0c1": ["200", "1", "3", "3"],
                     "h1c0": ["100", "1", "3", "3"], "h1c1": ["200", "1", "6", "6"]}
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"pt-tms{os.getpid()}-")]


def test_simulate_command_cleans_up_on_signal():
    name = f"pt-tmk{os.getpid()}"
    cli = Cli("tunnelmon", "simulate", "--hosts", "2", "--clients", "1", "--rate", "20", "-d", "60",
              "--name", name, ready=False)
    try:
        assert cli.read_until(lambda line: line.startswith("Sending"), timeout=15) is not None
        made = sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{name}-"))
        assert made == sorted([f"{name}-ul", f"{name}-h0", f"{name}-h1", f"{name}-h0c0", f"{name}-h1c0"])
    finally:
        rc, _, err = cli.stop(signal.SIGTERM)
    assert rc == 0, err
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"{name}-")]


@pytest.mark.parametrize("command", ["", "simulate"])
def test_help_ends_with_examples_that_parse(command, monkeypatch):
    """`pytrace tunnelmon [simulate] -h` ends with examples (as BCC's tools
    do), each a command line the parser accepts."""
    res = run_cli("tunnelmon", *([command] if command else []), "-h")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    lines = res.stdout.rstrip("\n").splitlines()
    start = lines.index("examples:")
    assert len(lines) - start - 1 >= 2
    assert all(line.startswith(f"  pytrace tunnelmon {command}".rstrip()) and "  # " in line
               for line in lines[start + 1:])
    from pytrace.cli import cliutil
    from pytrace.cli.argparser import ArgParser
    from pytrace.tools import tunnelmon as tool
    monkeypatch.setattr(cliutil, "_check_host", False)     # an example's namespace need not exist here
    for line in lines[start + 1:]:
        parser = ArgParser(prog="pytrace tunnelmon")
        tool.add_arguments(parser)
        parser.parse_args(line.split("  # ")[0].split()[2:])     # a usage error would exit
