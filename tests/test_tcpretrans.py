"""tcpretrans against real losses: segments dropped at the receiver's ingress
(tc, in test namespaces joined by a veth pair), checked against the segment
the dropper removed and the kernel's own counters (TCP_INFO, TcpExt)."""

from __future__ import annotations

import ipaddress
import json
import random
import signal
import socket
import subprocess
import time

import pytest

from dropper import Dropper, TwoHosts, netstat, total_retrans
from helpers import Cli, released_on, run_cli, usage_error
from matrix import opened, variants
from pytrace.core.net import TcpState
from pytrace.tools.tcpretrans import Flow, TcpRetrans

FAMILIES = [socket.AF_INET, socket.AF_INET6]
SEG = 1000


class Conn:
    """A connection from host A to host B; B's port is random, so flows of other
    tests (in other namespaces, maybe with the same addresses) do not match."""

    def __init__(self, net: TwoHosts, family: int):
        self.net, self.family = net, family
        self.a, self.b = net.addrs(family)
        self.port = random.randint(20000, 60000)
        srv = net.socket_b(family)
        srv.bind((self.b, self.port))
        srv.listen(1)
        self.cli = net.socket_a(family)
        self.cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cli.settimeout(10)
        self.cli.connect((self.b, self.port))
        self.acc, _ = srv.accept()
        self.acc.settimeout(10)
        srv.close()
        self.cport = self.cli.getsockname()[1]

    def send(self, nseg: int) -> None:
        """nseg segments of SEG bytes, one write each, all read at B (so every loss was repaired)."""
        for _ in range(nseg):
            self.cli.send(b"d" * SEG)
        got = 0
        while got < nseg * SEG:
            got += len(self.acc.recv(65536))

    def mine(self, e) -> bool:
        return (e.lport, e.rport) == (self.cport, self.port) and str(e.laddr) == self.a

    def flow(self) -> Flow:
        return Flow(self.family, ipaddress.ip_address(self.a), self.cport, ipaddress.ip_address(self.b), self.port)

    def close(self) -> None:
        self.cli.close()
        self.acc.close()


def collect(tracer: TcpRetrans, conn: Conn, want: int, timeout: float = 5.0) -> list:
    """This connection's events: wait (bounded) for `want` of them, then a little longer for extras."""
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(got) < want:
        got += [e for e in tracer.events(duration=0.05) if conn.mine(e)]
    got += [e for e in tracer.events(duration=0.1) if conn.mine(e)]
    return got


def check_event(e, conn: Conn, kind: str, seq: int) -> None:
    assert (e.family, str(e.laddr), e.lport, str(e.raddr), e.rport) == \
        (conn.family, conn.a, conn.cport, conn.b, conn.port)
    assert (e.kind, e.state, e.seq) == (kind, TcpState.ESTABLISHED, seq)


@pytest.mark.parametrize("hook", variants(TcpRetrans))
@pytest.mark.parametrize("family", FAMILIES)
def test_fast_retransmit_is_the_dropped_segment(family, hook):
    """10 segments, the 3rd dropped at B's ingress: the dupacks of the next 7 make A resend
    exactly that segment, once; TCP_INFO agrees."""
    with TwoHosts("rtx") as net, opened(TcpRetrans, hook) as tracer:
        assert tracer.variant.hook == hook
        conn = Conn(net, family)
        with Dropper(conn.port, skip=2, count=1, dev=net.dev_b, ns=net.ns_b) as drop:
            conn.send(10)
            evs = collect(tracer, conn, 1)
            assert drop.dropped == 1
            seq = drop.dropped_seqs[0]
        assert total_retrans(conn.cli) == 1
        conn.close()
    assert len(evs) == 1, evs
    check_event(evs[0], conn, "R", seq)


@pytest.mark.parametrize("family", FAMILIES)
def test_tail_loss_probe_shown_with_l_only(family):
    """A lone segment dropped: no dupacks can come, so the loss probe timer resends it.
    With -l that is an L line then its R line; without -l only the R."""
    with TwoHosts("tlp") as net, TcpRetrans(lossprobe=True) as with_l, TcpRetrans() as without:
        conn = Conn(net, family)
        probes = netstat(net.ns_a, "TCPLossProbes")
        with Dropper(conn.port, count=1, dev=net.dev_b, ns=net.ns_b) as drop:
            conn.send(1)
            evs = collect(with_l, conn, 2)
            plain = collect(without, conn, 1, timeout=1)
            seq = drop.dropped_seqs[0]
        assert netstat(net.ns_a, "TCPLossProbes") - probes == 1
        conn.close()
    assert [e.kind for e in evs] == ["L", "R"]
    for e, kind in zip(evs, "LR"):
        check_event(e, conn, kind, seq)
    assert len(plain) == 1
    check_event(plain[0], conn, "R", seq)


def test_count_mode_matches_the_kernels_counters():
    """Fast retransmits, a loss probe and a timeout on one flow: the in-kernel per-flow count
    equals the socket's tcpi_total_retrans, the TLP count the namespace's TCPLossProbes."""
    with TwoHosts("cnt") as net, TcpRetrans(count=True) as tracer:
        conn = Conn(net, socket.AF_INET)
        probes = netstat(net.ns_a, "TCPLossProbes")
        with Dropper(conn.port, skip=2, count=3, dev=net.dev_b, ns=net.ns_b):
            conn.send(12)                      # segments 3-5 lost: fast retransmits
        with Dropper(conn.port, count=2, dev=net.dev_b, ns=net.ns_b):
            conn.send(1)                       # lost, its probe lost too: then the RTO
        time.sleep(0.05)
        expected = total_retrans(conn.cli)
        tlps = netstat(net.ns_a, "TCPLossProbes") - probes
        counts = tracer.counts()
        assert tracer.drain() == []            # count mode streams nothing
        conn.close()
    assert expected >= 5
    mine = counts[conn.flow()]
    assert (mine.retransmits, mine.tlps) == (expected, tlps)
    assert not [f for f in counts if f.rport == conn.port and f != conn.flow()]


def test_count_mode_flows_beyond_the_map_are_counted_as_lost():
    """Room for one flow, retransmits on two: the second flow's are counted in lost."""
    with TwoHosts("cntl") as net, TcpRetrans(count=True, max_flows=1) as tracer:
        first, second = Conn(net, socket.AF_INET), Conn(net, socket.AF_INET)
        for c in (first, second):
            with Dropper(c.port, skip=2, count=2, dev=net.dev_b, ns=net.ns_b):
                c.send(10)
        time.sleep(0.05)
        n1, n2 = total_retrans(first.cli), total_retrans(second.cli)
        counts, lost = tracer.counts(), tracer.lost
        first.close()
        second.close()
    assert (n1, n2) == (2, 2)
    # The one slot goes to the first flow to retransmit (ours, unless another test's flow
    # elsewhere on this kernel got there first): a flow is counted whole or not at all.
    assert len(counts) == 1
    mine = {c.flow(): n for c, n in ((first, n1), (second, n2))}
    for flow, c in counts.items():
        if flow in mine:
            assert c.retransmits == mine.pop(flow)
    assert lost >= sum(mine.values()) > 0


def test_family_filter():
    with TwoHosts("fam") as net, TcpRetrans(family=socket.AF_INET6) as v6:
        c4, c6 = Conn(net, socket.AF_INET), Conn(net, socket.AF_INET6)
        for c in (c4, c6):
            with Dropper(c.port, skip=2, count=1, dev=net.dev_b, ns=net.ns_b):
                c.send(10)
        got6 = collect(v6, c6, 1)
        got4 = [e for e in v6.events(duration=0.1) if c4.mine(e)]
        assert total_retrans(c4.cli) == 1 and total_retrans(c6.cli) == 1
        c4.close()
        c6.close()
        # the droppers took their tc filter and clsact qdisc with them
        qdiscs = subprocess.run(["tc", "-n", net.ns_b, "qdisc", "show", "dev", net.dev_b],
                                capture_output=True, text=True, check=True).stdout
        assert "clsact" not in qdiscs
    assert [e.kind for e in got6] == ["R"] and got4 == []


def test_cli_sequence_and_lossprobe_columns():
    with TwoHosts("cli") as net:
        conn = Conn(net, socket.AF_INET)
        cli = Cli("tcpretrans", "-s", "-l")
        assert cli.read_until(lambda l: l.startswith("TIME")).split() == \
            ["TIME", "PID", "IP", "LADDR:LPORT", "T>", "RADDR:RPORT", "STATE", "SEQ"]
        with Dropper(conn.port, count=1, dev=net.dev_b, ns=net.ns_b) as drop:
            conn.send(1)
            mark = f"{conn.b}:{conn.port}"
            first = cli.read_until(lambda l: mark in l)
            second = cli.read_until(lambda l: mark in l)
            seq = drop.dropped_seqs[0]
        rc, _, err = cli.stop()
        conn.close()
    assert rc == 0, err
    for line, kind in ((first, "L>"), (second, "R>")):
        cols = line.split()
        time.strptime(cols[0], "%H:%M:%S")
        assert cols[2:] == ["4", f"{conn.a}:{conn.cport}", kind, mark, "ESTABLISHED", str(seq)]


def test_cli_count_mode_prints_flows_at_exit():
    with TwoHosts("clic") as net:
        conn = Conn(net, socket.AF_INET6)
        cli = Cli("tcpretrans", "-c")
        cli_json = Cli("tcpretrans", "-c", "--json", "-6")
        with Dropper(conn.port, skip=2, count=2, dev=net.dev_b, ns=net.ns_b):
            conn.send(10)
        time.sleep(0.05)
        expected = total_retrans(conn.cli)
        rc, lines, err = cli.stop()
        rcj, _, errj = cli_json.stop()
        conn.close()
    assert rc == 0 and rcj == 0, err + errj
    recs = [r for r in cli_json.json_records() if r.get("rport") == conn.port]
    assert [{k: v for k, v in r.items() if k not in ("time", "ts_ns")} for r in recs] == [
        {"family": "AF_INET6", "laddr": conn.a, "lport": conn.cport, "raddr": conn.b, "rport": conn.port,
         "retransmits": expected, "tlps": 0}]
    assert lines[0].startswith("Tracing retransmits")
    assert lines[2].split() == ["LADDR:LPORT", "RADDR:RPORT", "RETRANSMITS"]
    row = [line for line in lines if f"[{conn.b}]#{conn.port}" in line]
    assert [r.split() for r in row] == [[f"[{conn.a}]#{conn.cport}", "<->", f"[{conn.b}]#{conn.port}",
                                         str(expected)]]
    assert expected == 2


def test_cli_json():
    with TwoHosts("clij") as net:
        conn = Conn(net, socket.AF_INET)
        cli = Cli("tcpretrans", "--json", "-4")
        with Dropper(conn.port, skip=2, count=1, dev=net.dev_b, ns=net.ns_b) as drop:
            conn.send(10)
            line = cli.read_until(lambda l: f'"rport":{conn.port}' in l)
            seq = drop.dropped_seqs[0]
        rc, _, err = cli.stop()
        conn.close()
    assert rc == 0, err
    rec = json.loads(line)
    assert {k: rec[k] for k in ("family", "laddr", "lport", "raddr", "kind", "state", "seq")} == \
        {"family": "AF_INET", "laddr": conn.a, "lport": conn.cport, "raddr": conn.b, "kind": "R",
         "state": "ESTABLISHED", "seq": seq}


@pytest.mark.parametrize("count", [False, True])
def test_record_replays_the_live_output(tmp_path, count):
    """--record, then `pytrace replay`: the intro, the header and the lines (or,
    with -c, the table of the one snapshot) again, byte for byte."""
    rec = tmp_path / "tcpretrans.db"
    with TwoHosts("recc" if count else "rec") as net:
        conn = Conn(net, socket.AF_INET)
        mark = f"{conn.b}:{conn.port}" if not count else f"[{conn.b}]#{conn.port}"
        cli = Cli("tcpretrans", *(["-c"] if count else ["-s"]), "--record", str(rec))
        with Dropper(conn.port, skip=2, count=1, dev=net.dev_b, ns=net.ns_b) as drop:
            conn.send(10)
            if not count:
                assert cli.read_until(lambda l: mark in l)
            seq = drop.dropped_seqs[0]
        time.sleep(0.05)
        rc, lines, err = cli.stop()
        conn.close()
    assert rc == 0, err
    live = "".join(line + "\n" for line in lines)
    assert live.startswith("Tracing retransmits ... Hit Ctrl-C to end\n")
    (mine,) = [line.split() for line in lines if mark in line]
    if count:
        assert mine == [f"[{conn.a}]#{conn.cport}", "<->", mark, "1"]
    else:
        assert mine[2:] == ["4", f"{conn.a}:{conn.cport}", "R>", mark, "ESTABLISHED", str(seq)]
    replayed = run_cli("replay", str(rec))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == live


def test_kprobe_variant_works_or_is_reported():
    """kprobe (tcp_retransmit_skb/tcp_send_loss_probe) is BCC's fallback hook. Where kprobes
    work it must see the fast retransmit; where the kernel has none (as here), forcing it
    fails with one line that names the hook kind."""
    from pytrace.core import features
    usable, _ = features.probe("kprobe")
    if not usable:
        r = run_cli("tcpretrans", "--hook", "kprobe")
        assert r.returncode == 1 and "kprobe" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        return
    with TwoHosts("kp") as net, TcpRetrans(hook="kprobe") as tracer:
        conn = Conn(net, socket.AF_INET)
        with Dropper(conn.port, skip=2, count=1, dev=net.dev_b, ns=net.ns_b) as drop:
            conn.send(10)
            evs = collect(tracer, conn, 1)
            seq = drop.dropped_seqs[0]
        conn.close()
    assert len(evs) == 1
    check_event(evs[0], conn, "R", seq)


@pytest.mark.parametrize("args,needle", [
    (["-x"], "-x"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "fentry"], "--hook"),
    (["-c", "5"], "unrecognized"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcpretrans", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_attached_after_exit(sig):
    released_on(sig, "tcpretrans", "--hook", "tracepoint", "-l")


def test_count_mode_counts_segments_of_a_multi_segment_skb():
    """5000-byte writes go out as GSO skbs of several segments; two of them are lost.
    Each resent skb is one tracepoint hit (one R record) but adds its segment count
    to tcpi_total_retrans, and count mode adds the same."""
    with TwoHosts("seg") as net, TcpRetrans(count=True) as counter, TcpRetrans() as tracer:
        conn = Conn(net, socket.AF_INET)
        with Dropper(conn.port, skip=2, count=2, dev=net.dev_b, ns=net.ns_b) as drop:
            for _ in range(8):
                conn.cli.send(b"d" * 5000)
            got = 0
            while got < 8 * 5000:
                got += len(conn.acc.recv(65536))
            assert drop.dropped == 2
        time.sleep(0.05)
        expected = total_retrans(conn.cli)
        counts = counter.counts()
        records = collect(tracer, conn, 2)
        conn.close()
    assert len(records) < expected             # some resent skb carried several segments
    assert counts[conn.flow()].retransmits == expected
