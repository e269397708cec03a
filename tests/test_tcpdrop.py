"""tcpdrop against real drops between two test namespaces: a SYN to a port nobody
listens on (NO_SOCKET, no socket, dropped in tcp_v4_rcv/tcp_v6_rcv), and a
spurious retransmission dropped by an established socket (TCP_OLD_DATA)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time

import pytest

from dropper import Dropper, TwoHosts
from helpers import Cli, released_on, run_cli, usage_error, wait_until
from matrix import opened, refusal_first, variants
from pytrace.core.kernel_btf import drop_reasons
from pytrace.core.net import TcpState
from pytrace.tools.tcpdrop import TcpDrop

RCV = {socket.AF_INET: "tcp_v4_rcv", socket.AF_INET6: "tcp_v6_rcv"}


def inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def refused_syn(net: TwoHosts, family: int) -> tuple[int, int]:
    """connect() from A to a port of B where nothing listens; returns (client port, port)."""
    a, b = net.addrs(family)
    cport, port = random.randint(20000, 40000), random.randint(40001, 60000)
    s = net.socket_a(family)
    s.bind((a, cport))
    s.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        s.connect((b, port))
    s.close()
    return cport, port


def events_until(tracer: TcpDrop, n: int, timeout: float = 5.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(got) < n:
        got += list(tracer.events(duration=0.05))
    return got + list(tracer.events(duration=0.1))


def functions(stack) -> list[str]:
    return [frame.split("+")[0] for frame in stack]


@pytest.mark.parametrize("hook,family", variants(TcpDrop, each=[socket.AF_INET, socket.AF_INET6]))
def test_syn_to_closed_port_is_no_socket(family, hook):
    refusal_first(TcpDrop, hook)
    with TwoHosts("drop") as net:
        ino = inode(net.ns_b)
        with opened(TcpDrop, hook, netns=ino, no_socket=True) as tracer:
            assert tracer.variant.hook == hook
            cport, port = refused_syn(net, family)
            evs = events_until(tracer, 1)
    a, b = net.addrs(family)
    assert len(evs) == 1, evs
    e = evs[0]
    assert (e.family, str(e.saddr), e.sport, str(e.daddr), e.dport) == (family, a, cport, b, port)
    assert (e.state, e.flags, e.reason, e.skaddr, e.netns) == (None, "SYN", "NO_SOCKET", 0, ino)
    assert "NO_SOCKET" in drop_reasons().values()
    fns = functions(e.stack)
    assert RCV[family] in fns
    # the stack starts at the function that freed the packet, not in the tracing machinery
    assert not fns[0].startswith(("bpf_", "__bpf", "__traceiter", "perf_"))
    assert fns.index(RCV[family]) <= 3


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_dropped_ack_then_old_data_with_socket_state(family):
    """The ACK of A's segment is dropped at A's ingress (reason TC_INGRESS, in A); A's loss
    probe resends the segment, which B already has: B's socket drops it as TCP_OLD_DATA."""
    with TwoHosts("old") as net:
        a, b = net.addrs(family)
        port = random.randint(20000, 60000)
        srv = net.socket_b(family)
        srv.bind((b, port))
        srv.listen(1)
        cli = net.socket_a(family)
        cli.connect((b, port))
        acc, _ = srv.accept()
        cport = cli.getsockname()[1]
        with TcpDrop(netns=inode(net.ns_a), no_socket=True) as in_a, TcpDrop(netns=inode(net.ns_b)) as in_b, \
                Dropper(cport, count=1, data_only=False, dev=net.dev_a, ns=net.ns_a) as drop:
            cli.send(b"o" * 500)
            assert len(acc.recv(1000)) == 500
            evs_b = events_until(in_b, 1)
            evs_a = events_until(in_a, 1, timeout=0.5)
            assert drop.dropped == 1
        for s in (cli, acc, srv):
            s.close()
    assert [(str(e.saddr), e.sport, str(e.daddr), e.dport, e.state, e.flags, e.reason) for e in evs_b] == \
        [(a, cport, b, port, TcpState.ESTABLISHED, "PSH|ACK", "TCP_OLD_DATA")]
    assert evs_b[0].skaddr != 0 and "tcp_data_queue" in functions(evs_b[0].stack)
    assert [(str(e.saddr), e.sport, str(e.daddr), e.dport, e.flags, e.reason) for e in evs_a] == \
        [(b, port, a, cport, "ACK", "TC_INGRESS")]


def test_family_and_netns_filters():
    with TwoHosts("filt") as net:
        with TcpDrop(family=socket.AF_INET6, netns=inode(net.ns_b), no_socket=True) as v6, \
                TcpDrop(netns=inode(net.ns_a), no_socket=True) as other_ns:
            refused_syn(net, socket.AF_INET)
            c6, p6 = refused_syn(net, socket.AF_INET6)
            got6 = events_until(v6, 1)
            got_a = list(other_ns.events(duration=0.1))
    assert [(e.family, e.sport, e.dport, e.reason) for e in got6] == [(socket.AF_INET6, c6, p6, "NO_SOCKET")]
    assert got_a == []


def test_no_socket_drops_only_with_the_flag():
    """Issue 20: BCC shows no drop without a socket (a SYN to a closed port is
    NO_SOCKET); a socket's drop (TCP_OLD_DATA) is shown either way."""
    with TwoHosts("nosk") as net:
        a, b = net.addrs(socket.AF_INET)
        port = random.randint(20000, 60000)
        srv = net.socket_b(socket.AF_INET)
        srv.bind((b, port))
        srv.listen(1)
        cli = net.socket_a(socket.AF_INET)
        cli.connect((b, port))
        acc, _ = srv.accept()
        cport = cli.getsockname()[1]
        with TcpDrop(netns=inode(net.ns_b)) as default, TcpDrop(netns=inode(net.ns_b), no_socket=True) as every, \
                Dropper(cport, count=1, data_only=False, dev=net.dev_a, ns=net.ns_a) as drop:
            rcport, rport = refused_syn(net, socket.AF_INET)
            cli.send(b"o" * 500)
            assert len(acc.recv(1000)) == 500
            got_every = events_until(every, 2)
            got_default = events_until(default, 1)
            assert drop.dropped == 1
        for s in (cli, acc, srv):
            s.close()
    assert [(e.sport, e.dport, e.reason) for e in got_default] == [(cport, port, "TCP_OLD_DATA")]
    assert sorted((e.sport, e.dport, e.reason) for e in got_every) == sorted(
        [(rcport, rport, "NO_SOCKET"), (cport, port, "TCP_OLD_DATA")])


def test_cli_lines_and_stack():
    with TwoHosts("cli") as net:
        cli = Cli("tcpdrop", "--no-socket", "--netns-id", str(inode(net.ns_b)))
        assert cli.read_until(lambda l: l.startswith("TIME")).split() == \
            ["TIME", "PID", "IP", "SADDR:SPORT", ">", "DADDR:DPORT", "STATE", "(FLAGS)", "REASON"]
        cport, port = refused_syn(net, socket.AF_INET)
        a, b = net.addrs(socket.AF_INET)
        line = cli.read_until(lambda l: f"{b}:{port}" in l)
        stack = []
        while True:
            frame = cli.read_until(lambda l: True)
            if not frame:
                break
            stack.append(frame)
        rc, _, err = cli.stop()
    assert rc == 0, err
    cols = line.split()
    time.strptime(cols[0], "%H:%M:%S")
    assert cols[2:] == ["4", f"{a}:{cport}", ">", f"{b}:{port}", "-", "(SYN)", "NO_SOCKET"]
    assert stack and all(f.startswith("\t") for f in stack)
    assert "tcp_v4_rcv" in functions(f.strip() for f in stack)


def test_cli_json_and_pid_netns():
    with TwoHosts("clij") as net:
        ino = inode(net.ns_b)
        holder = subprocess.Popen(["ip", "netns", "exec", net.ns_b, "sleep", "30"])
        try:
            assert wait_until(lambda: os.path.exists(f"/proc/{holder.pid}/ns/net") and
                              os.stat(f"/proc/{holder.pid}/ns/net").st_ino == ino, 5)
            cli = Cli("tcpdrop", "--json", "-6", "--no-socket", "--pid-netns", str(holder.pid))
            cport, port = refused_syn(net, socket.AF_INET6)
            line = cli.read_until(lambda l: f'"dport":{port}' in l)
            rc, lines, err = cli.stop()
        finally:
            holder.kill()
            holder.wait()
    assert rc == 0, err
    rec = json.loads(line)
    assert {k: rec[k] for k in ("family", "sport", "state", "flags", "reason", "netns")} == \
        {"family": "AF_INET6", "sport": cport, "state": None, "flags": "SYN", "reason": "NO_SOCKET", "netns": ino}
    assert "tcp_v6_rcv" in functions(rec["stack"])
    assert len(json_lines := [l for l in lines if l.startswith("{")]) == 1, json_lines


def test_record_replays_the_live_output(tmp_path):
    """Reason names and stacks are read with this kernel's tables, which replay
    loads too (TcpDrop.prepare_replay): the live lines again, byte for byte."""
    rec = tmp_path / "tcpdrop.db"
    with TwoHosts("rec") as net:
        cli = Cli("tcpdrop", "--no-socket", "--netns-id", str(inode(net.ns_b)), "--record", str(rec))
        cport, port = refused_syn(net, socket.AF_INET)
        a, b = net.addrs(socket.AF_INET)
        assert cli.read_until(lambda l: f"{b}:{port}" in l)
        while cli.read_until(lambda l: True, 0.5):     # its stack
            pass
        rc, lines, err = cli.stop()
    assert rc == 0, err
    live = "".join(line + "\n" for line in lines)
    replayed = run_cli("replay", str(rec))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == live
    (rec_json,) = [json.loads(l) for l in run_cli("replay", str(rec), "--json").stdout.splitlines()]
    assert {k: rec_json[k] for k in ("family", "saddr", "sport", "daddr", "dport", "state", "flags", "reason")} == \
        {"family": "AF_INET", "saddr": a, "sport": cport, "daddr": b, "dport": port, "state": None, "flags": "SYN",
         "reason": "NO_SOCKET"}
    assert [f"\t{f}" for f in rec_json["stack"]] == lines[2:-1]


@pytest.mark.parametrize("args,needle", [
    (["-4", "-6"], "not allowed"),
    (["--netns-id", "abc"], "--netns-id"),
    (["--netns-id", "1", "--pid-netns", "1"], "not allowed"),
    (["--pid-netns", "999999999"], "--pid-netns"),
    (["--hook", "kprobe"], "--hook"),
    (["-c"], "-c"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcpdrop", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_attached_after_exit(sig):
    released_on(sig, "tcpdrop", "--hook", "tracepoint")
