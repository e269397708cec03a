"""netsize against the test's own packets between two quiet test hosts: UDP
datagrams of chosen sizes land in the right buckets, with the right byte
sums, at each of the four points and on the right device and namespace; a
TCP transfer with GSO on the sender and GRO on the receiver shows
super-packets before segmentation and after merging."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import socket
import struct
import threading
import time
from typing import Iterator

import pytest

from netlab import QuietHosts, bad_input, released_after_exit
from ready import started
from matrix import opened, variants
from scaffolding import bpf_object
from pytrace.core import features, netattach
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.netsize import NetSize

SIZES = (50, 50, 400, 1000)             # UDP payloads
ETHTOOL_STSO, ETHTOOL_SGRO, SIOCETHTOOL = 0x1F, 0x2C, 0x8946


def ethtool(ns: str, dev: str, cmd: int, value: int) -> None:
    """A legacy ethtool set command (ethtool -K) through SIOCETHTOOL."""
    with netattach.in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        val = ctypes.create_string_buffer(struct.pack("II", cmd, value))
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, struct.pack("16sP", dev.encode(), ctypes.addressof(val)).ljust(40, b"\0"))
    finally:
        s.close()


@contextlib.contextmanager
def with_napi(net: QuietHosts) -> Iterator[None]:
    """GRO on b0 gives the veth a NAPI context (napi_gro_receive_entry fires);
    with TSO off on a0 its packets are eligible for it (GSO still makes
    super-packets).  Before 5.13 only XDP gave a veth NAPI: a pass-all one."""
    ethtool(net.ns_b, net.dev_b, ETHTOOL_SGRO, 1)
    ethtool(net.ns_a, net.dev_a, ETHTOOL_STSO, 0)
    if features.kernel_version() >= (5, 13):
        yield
        return
    with BpfObject(bpf_object("testdrop"), programs={"testdrop_xdp_pass"}) as obj:
        netattach.attach_xdp(obj, "testdrop_xdp_pass", net.dev_b, net.ns_b)
        yield


def slots_of(values) -> tuple[int, ...]:
    slots = [0] * 32
    for v in values:
        slots[max(v, 1).bit_length() - 1] += 1
    return tuple(slots)


def by_kind(hists, dev: str) -> dict:
    return {k.kind: h for k, h in hists.items() if k.dev == dev}


def send_udp(net: QuietHosts, sizes=SIZES) -> None:
    s = net.udp_socket(net.ns_a)
    for n in sizes:
        s.sendto(b"s" * n, (net.V4[1], 9999))
    s.close()


@pytest.mark.parametrize("hook", variants(NetSize))
def test_udp_sizes_at_the_four_points(hook):
    with QuietHosts("nsize", ipv6=False) as net, with_napi(net):
        rcv = net.udp_socket(net.ns_b)
        rcv.bind((net.V4[1], 9999))           # no ICMP port unreachable back to A
        with opened(NetSize, hook, netns=net.inode(net.ns_a)) as ta, NetSize(netns=net.inode(net.ns_b)) as tb:
            assert ta.variant.hook == hook
            send_udp(net)
            for _ in SIZES:
                rcv.recv(2000)
            time.sleep(0.05)
            ha, hb = ta.histograms(), tb.histograms()
        rcv.close()
    tx = [n + 8 + 20 + 14 for n in SIZES]    # skb->len on transmit: with the Ethernet header
    rx = [n + 8 + 20 for n in SIZES]         # on receive: without it
    a, b = by_kind(ha, "a0"), by_kind(hb, "b0")
    assert {k.dev for k in ha} == {"a0"} and {k.dev for k in hb} == {"b0"}
    assert set(a) == {"send", "nic_send"} and set(b) == {"recv", "nic_recv"}
    for h, sizes in ((a["send"], tx), (a["nic_send"], tx), (b["recv"], rx), (b["nic_recv"], rx)):
        assert (h.unit, h.count, h.sum, h.slots) == ("bytes", len(sizes), sum(sizes), slots_of(sizes))


def test_gso_and_gro_sizes_of_a_tcp_transfer():
    data = b"g" * 300_000
    with QuietHosts("nsizet", ipv6=False) as net, with_napi(net):
        srv = net.socket_b()
        srv.bind((net.V4[1], 0))
        srv.listen(1)
        got = bytearray()

        def serve():
            c, _ = srv.accept()
            while len(got) < len(data):
                chunk = c.recv(1 << 16)
                if not chunk:
                    break
                got.extend(chunk)
            c.close()

        th = threading.Thread(target=serve)
        th.start()
        cli = net.socket_a()
        cli.connect(srv.getsockname())
        with NetSize(dev="a0", netns=net.inode(net.ns_a)) as ta, NetSize(dev="b0", netns=net.inode(net.ns_b)) as tb:
            cli.sendall(data)
            th.join(10)
            time.sleep(0.05)
            a, b = by_kind(ta.histograms(), "a0"), by_kind(tb.histograms(), "b0")
        cli.close()
        srv.close()
    assert len(got) == len(data)

    def top(h) -> int:
        return h.buckets()[-1][1]
    # GSO: super-packets queued, MTU-sized frames (<= 1514 bytes) handed to the driver
    assert top(a["send"]) > 2047 and top(a["nic_send"]) <= 2047 and a["nic_send"].count > a["send"].count
    # GRO: MTU-sized packets from the device (<= 1500), merged before the stack sees them
    assert top(b["nic_recv"]) <= 2047 < top(b["recv"]) and b["recv"].count < b["nic_recv"].count


def test_dev_filter_and_clear():
    with QuietHosts("nsizef", ipv6=False) as net:
        ino_b = net.inode(net.ns_b)
        with NetSize(dev="b0") as only_b0, NetSize(dev="a0", netns=net.inode(net.ns_b)) as nothing:
            send_udp(net, (100, 100))
            time.sleep(0.05)
            first = only_b0.histograms(clear=True)
            after = only_b0.histograms()
            none = nothing.histograms()
    mine = {k: h for k, h in first.items() if k.netns == ino_b}
    assert {(k.dev, k.kind, h.count) for k, h in mine.items()} >= {("b0", "recv", 2)}
    assert {k.dev for k in first} == {"b0"}
    assert not [k for k in after if k.netns == ino_b]
    assert none == {}


def test_cli_text_and_json():
    with QuietHosts("nsizec", ipv6=False) as net:
        ino = net.inode(net.ns_a)
        cli = started("netsize", "--netns-id", str(ino), "-D", "a0", links=4)
        cj = started("netsize", "--netns-id", str(ino), "--json", links=4)
        send_udp(net, (100, 300))
        time.sleep(0.2)
        rc, lines, err = cli.stop()
        rcj, jlines, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing net device send/receive. Hit Ctrl-C to end."
    at = lines.index(f"dev a0@netns:{ino}: send_bytes (net_dev_queue, before GSO)")
    assert lines[at + 1].split() == ["bytes", ":", "count", "distribution"]
    rows = []
    for r in lines[at + 2:]:
        if "->" not in r:
            break
        if r.split()[4] != "0":
            rows.append((r.split()[0], r.split()[4]))
    assert rows == [("128", "1"), ("256", "1")]
    recs = {r["kind"]: r for r in (json.loads(s) for s in jlines if s.startswith("{"))}
    assert set(recs) == {"send", "nic_send", "recv"}   # recv: B's ICMP port unreachables
    assert (recs["send"]["dev"], recs["send"]["netns"], recs["send"]["count"], recs["send"]["sum"]) == \
        ("a0", ino, 2, 142 + 342)


@pytest.mark.parametrize("args", [["-D", "a/b"], ["-D", "x" * 16], ["--netns-id", "0"], ["-i", "x"],
                                  ["--hook", "tracepoint"], ["-c", "3"]])
def test_bad_input(args):
    bad_input("netsize", *args)


def test_nothing_left_attached():
    released_after_exit("netsize")
