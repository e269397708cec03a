"""tcpsubnet against real TCP sends from a client namespace to test hosts in a
server namespace, reached over a veth: totals per subnet to the byte."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import Cli, bpf_prog_ids, inside, released, run_cli
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.tcpsubnet import TcpSubnet


# the client namespace holds .1 of each range, the server namespace .2
V4_NETS = ("192.0.2", "198.51.100", "203.0.113")
SUBNETS = "192.0.2.0/24,198.51.100.0/24,2001:db8::/32,192.0.2.2/32,0.0.0.0/0"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def hosts():
    """Namespaces client <-veth-> server; yields (client, server) names."""
    cli, srv = f"pt-tcpsubnet-c-{os.getpid()}", f"pt-tcpsubnet-s-{os.getpid()}"
    ip("netns", "add", cli)
    try:
        ip("netns", "add", srv)
        try:
            ip("link", "add", "vc", "netns", cli, "type", "veth", "peer", "name", "vs", "netns", srv)
            for ns, dev, host in ((cli, "vc", "1"), (srv, "vs", "2")):
                for net in V4_NETS:
                    ip("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev)
                ip("-n", ns, "addr", "add", f"2001:db8::{host}/64", "dev", dev, "nodad")
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
            yield cli, srv
        finally:
            subprocess.run(["ip", "netns", "del", srv], check=False)
    finally:
        subprocess.run(["ip", "netns", "del", cli], check=False)


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


class Server:
    """A dual-stack listener in the server namespace that reads everything sent to it."""

    def __init__(self, ns: str):
        with inside(ns):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.bind(("::", 0))
            self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def send(ns: str, dest: str, port: int, nbytes: int, server: socket.socket | None = None,
         reply: int = 0) -> None:
    """From namespace ns, connect to dest:port and send nbytes; the accepting
    side (server's listener, or a listener made here) reads them all and
    optionally sends `reply` bytes back, which the client reads."""
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    with inside(ns):
        local = None
        if server is None:
            local = socket.socket(family, socket.SOCK_STREAM)
            local.bind((dest, 0))
            local.listen(1)
            port = local.getsockname()[1]
        c = socket.create_connection((dest, port), timeout=5)
    lst = server or local
    a, _ = lst.accept()
    try:
        c.sendall(b"x" * nbytes)
        got = 0
        while got < nbytes:
            chunk = a.recv(1 << 16)
            assert chunk
            got += len(chunk)
        if reply:
            a.sendall(b"y" * reply)
            left = reply
            while left:
                left -= len(c.recv(1 << 16))
    finally:
        for s in (c, a, local):
            if s is not None:
                s.close()


def workload(cli: str, srv: Server) -> dict[str, int]:
    """The test's sends; returns the bytes each subnet of SUBNETS must show."""
    send(cli, "192.0.2.2", srv.port, 10000, srv.sock, reply=777)   # the reply is sent in srv
    send(cli, "192.0.2.2", srv.port, 2345, srv.sock)
    send(cli, "198.51.100.2", srv.port, 7000, srv.sock)
    send(cli, "::ffff:198.51.100.2", srv.port, 3000, srv.sock)      # v6 socket, v4-mapped peer
    send(cli, "2001:db8::2", srv.port, 5555, srv.sock)
    send(cli, "203.0.113.2", srv.port, 4321, srv.sock)             # no subnet but 0.0.0.0/0
    send(cli, "127.0.0.1", 0, 1111)                                # the client's own loopback
    send(cli, "::1", 0, 999)                                       # in no subnet of the list
    return {"192.0.2.0/24": 12345, "198.51.100.0/24": 10000, "2001:db8::/32": 5555,
            "0.0.0.0/0": 5432}


@pytest.mark.parametrize("hook", variants(TcpSubnet))
def test_totals_per_subnet_exact(hosts, hook):
    cli, srv_ns = hosts
    srv = Server(srv_ns)
    try:
        with opened(TcpSubnet, hook, SUBNETS, netns=netns_inode(cli)) as t:
            assert t.variant.hook == hook
            expected = workload(cli, srv)
            rows = t.read()
    finally:
        srv.close()
    got = {r.subnet: r.bytes for r in rows}
    # 192.0.2.2/32 comes after 192.0.2.0/24: first match wins, so it gets nothing
    assert got == expected
    assert [r.subnet for r in rows] == [s for s in SUBNETS.split(",") if s in expected]
    assert [r.index for r in rows] == [0, 1, 2, 4]


def test_first_match_wins_in_list_order(hosts):
    cli, srv_ns = hosts
    srv = Server(srv_ns)
    try:
        with TcpSubnet("192.0.2.2/32,192.0.2.0/24,0.0.0.0/0,2001:db8::2/128,2001:db8::/32",
                       netns=netns_inode(cli)) as t:
            send(cli, "192.0.2.2", srv.port, 1000, srv.sock)
            send(cli, "192.0.2.1", 0, 300)          # the client itself: in the /24, not the /32
            send(cli, "2001:db8::2", srv.port, 2000, srv.sock)
            send(cli, "2001:db8::1", 0, 400)
            got = {r.subnet: r.bytes for r in t.read()}
    finally:
        srv.close()
    assert got == {"192.0.2.2/32": 1000, "192.0.2.0/24": 300,
                   "2001:db8::2/128": 2000, "2001:db8::/32": 400}


def test_netns_filter_excludes_the_other_namespace(hosts):
    """The server's replies to 192.0.2.1 are TCP sends too, but from the server
    namespace: counted there, and not with the client's filter."""
    cli, srv_ns = hosts
    srv = Server(srv_ns)
    try:
        with TcpSubnet("192.0.2.0/24", netns=netns_inode(cli)) as tc, \
                TcpSubnet("192.0.2.0/24", netns=netns_inode(srv_ns)) as ts:
            send(cli, "192.0.2.2", srv.port, 1500, srv.sock, reply=2500)
            rc, rs = tc.read(), ts.read()
    finally:
        srv.close()
    assert [(r.subnet, r.bytes) for r in rc] == [("192.0.2.0/24", 1500)]
    assert [(r.subnet, r.bytes) for r in rs] == [("192.0.2.0/24", 2500)]


def test_periods_are_differences(hosts):
    cli, srv_ns = hosts
    srv = Server(srv_ns)
    try:
        with TcpSubnet("198.51.100.0/24", netns=netns_inode(cli)) as t:
            send(cli, "198.51.100.2", srv.port, 100, srv.sock)
            peek = t.read(reset=False)
            first = t.read()
            empty = t.read()
            send(cli, "198.51.100.2", srv.port, 200, srv.sock)
            second = t.read()
    finally:
        srv.close()
    assert [r.bytes for r in peek] == [r.bytes for r in first] == [100]
    assert empty == [] and [r.bytes for r in second] == [200]


def test_cli_json_and_text_units(hosts):
    cli, srv_ns = hosts
    srv = Server(srv_ns)
    try:
        j = Cli("tcpsubnet", "-J", "-N", cli, SUBNETS)
        b = Cli("tcpsubnet", "-f", "b", "-i", "30", "--netns", f"/run/netns/{cli}", SUBNETS)
        k = Cli("tcpsubnet", "-J", "-f", "K", "-N", str(netns_inode(cli)), SUBNETS)
        js = Cli("tcpsubnet", "--json", "-N", str(netns_inode(cli)), SUBNETS)
        expected = workload(cli, srv)
        time.sleep(0.1)
        results = [x.stop() for x in (j, b, k, js)]
    finally:
        srv.close()
    for rc, _, err in results:
        assert rc == 0, err
    # JSON: one object per interval, {"date", "time", "entries": {subnet: value}}
    totals: dict[str, float] = {}
    for line in results[0][1]:
        rec = json.loads(line)
        assert set(rec) == {"date", "time", "entries"}
        for subnet, v in rec["entries"].items():
            totals[subnet] = totals.get(subnet, 0) + v
    assert totals == expected
    # text in bits: one period (interval 30 s, ended by Ctrl-C), largest first
    lines = results[1][1]
    assert lines[0] == "Tracing... Output every 30 secs. Hit Ctrl-C to end"
    assert lines[1].startswith("[") and lines[1].endswith("]")
    rows = [line.split() for line in lines[2:]]
    assert rows == [[s, str(n * 8)] for s, n in sorted(expected.items(), key=lambda kv: -kv[1])]
    # KBytes in JSON are true divisions, like BCC
    ktot: dict[str, float] = {}
    for line in results[2][1]:
        for subnet, v in json.loads(line)["entries"].items():
            ktot[subnet] = ktot.get(subnet, 0) + v
    assert ktot == pytest.approx({s: n / 1024 for s, n in expected.items()})
    # --json: pytrace's convention, an object per subnet and interval, the library's names
    per_row: dict[str, int] = {}
    for line in results[3][1]:
        rec = json.loads(line)
        assert list(rec) == ["time", "ts_ns", "index", "subnet", "bytes"]
        assert SUBNETS.split(",")[rec["index"]] == rec["subnet"]
        per_row[rec["subnet"]] = per_row.get(rec["subnet"], 0) + rec["bytes"]
    assert per_row == expected


def test_v_prints_the_subnets_and_the_program_then_traces():
    """BCC's -v: the subnet evaluation and the BPF program (logged, on stderr)."""
    c = Cli("tcpsubnet", "-v", "192.0.2.0/24,2001:db8::/32")
    assert c.read_until(lambda line: line.startswith("Tracing..."))
    rc, _, err = c.stop()
    assert rc == 0, err
    assert "subnet 0: 192.0.2.0/24 -> 192.0.2.0/24\nsubnet 1: 2001:db8::/32 -> 2001:db8::/32\n" in err
    assert 'SEC("kprobe/tcp_sendmsg")' in err


def test_kprobe_variant_passes_the_verifier():
    """kprobe/tcp_sendmsg is the preferred variant where kprobes exist; here it
    cannot attach, but it must load, and forcing it says why it cannot run."""
    from pytrace.core import features
    with BpfObject("tcpsubnet", programs={"tcpsubnet_kprobe"},
                   rodata=TcpSubnet(SUBNETS).rodata()) as obj:
        assert obj.program_fd("tcpsubnet_kprobe") > 0
    usable, _ = features.probe("kprobe")
    if not usable:
        r = run_cli("tcpsubnet", "--hook", "kprobe")
        assert r.returncode == 1 and "kprobe" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [["10.0.0.0"], ["10.0.0.0/33"], ["nonsense/8"], ["2001:db8::/129"],
                                  [",".join(["10.0.0.0/8"] * 33)], ["-f", "x"], ["-i", "0"],
                                  ["-N", "no-such-netns-here"], ["--nope"]])
def test_bad_input(args):
    r = run_cli("tcpsubnet", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_attached(sig):
    c = Cli("tcpsubnet")
    mine = bpf_prog_ids(c.proc.pid)     # (other tracers may run at the same time)
    assert mine
    assert c.read_until(lambda line: line.startswith("Tracing..."))   # set up and waiting
    rc, lines, err = c.stop(sig)
    assert rc == 0, err
    assert lines[0].startswith("Tracing...") and len(lines) > 1     # the last period is printed
    assert released(mine)
