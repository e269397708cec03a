"""skbdrop against drops the test causes in its own namespace: UDP to a closed
port (NO_SOCKET, v4 and v6), a TCP SYN shot by a tc ingress program
(TC_INGRESS), and UDP to an IPv6 multicast group nobody joined (a plain
kfree_skb in ip6_mc_input: NOT_SPECIFIED).  Counts are exact per reason and
protocol, and the stacks name the function that dropped the packet."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest

from dropper import Dropper
from helpers import Cli
from netlab import QuietHosts, bad_input, released_after_exit
from matrix import opened, refusal_first, variants
from pytrace.core import netattach
from pytrace.tools.skbdrop import SkbDrop


def udp_to_closed_port(net: QuietHosts, family: int, n: int) -> None:
    s = net.udp_socket(net.ns_a, family)
    for _ in range(n):
        s.sendto(b"drop", (net.addrs(family)[1], 9))
    s.close()


def udp_to_unjoined_group(net: QuietHosts, n: int) -> None:
    s = net.udp_socket(net.ns_a, socket.AF_INET6)
    idx = netattach.ifindex(net.dev_a, net.ns_a)
    for _ in range(n):
        s.sendto(b"drop", ("ff02::7e57", 9999, 0, idx))
    s.close()


def syn_shot_at_ingress(net: QuietHosts) -> int:
    port = random.randint(20000, 60000)
    with Dropper(port, count=1, data_only=False, dev=net.dev_b, ns=net.ns_b) as d:
        c = net.socket_a()
        c.setblocking(False)
        try:
            c.connect((net.V4[1], port))
        except BlockingIOError:
            pass
        assert_wait(lambda: d.dropped == 1)
        c.close()
    return port


def assert_wait(pred, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end
        time.sleep(0.02)


def totals(counts, reason: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        if c.reason == reason:
            out[c.protocol] = out.get(c.protocol, 0) + c.count
    return out


def funcs(stack) -> list[str]:
    return [f.split("+")[0] for f in stack]


@pytest.mark.parametrize("hook", variants(SkbDrop))
def test_udp_to_closed_port_is_no_socket(hook):
    refusal_first(SkbDrop, hook)
    with QuietHosts("skbd") as net:
        with opened(SkbDrop, hook, netns=net.inode(net.ns_b)) as t:
            assert t.variant.hook == hook
            udp_to_closed_port(net, socket.AF_INET, 3)
            udp_to_closed_port(net, socket.AF_INET6, 2)
            assert_wait(lambda: sum(totals(t.counts(), "NO_SOCKET").values()) >= 5)
            time.sleep(0.1)
            counts = t.counts()
    assert totals(counts, "NO_SOCKET") == {"IPv4/UDP": 3, "IPv6/UDP": 2}
    for c in counts:
        if c.reason == "NO_SOCKET":
            fns = funcs(c.stack)
            assert ("__udp4_lib_rcv" if c.protocol == "IPv4/UDP" else "__udp6_lib_rcv") in fns
            assert not fns[0].startswith(("bpf_", "__bpf", "__traceiter", "perf_"))


def test_tc_ingress_and_unspecified_drops():
    with QuietHosts("skbdt") as net:
        ino = net.inode(net.ns_b)
        with SkbDrop(netns=ino) as every, SkbDrop(netns=ino, unspecified=False, stacks=False) as specified:
            syn_shot_at_ingress(net)
            udp_to_unjoined_group(net, 4)
            assert_wait(lambda: totals(every.counts(), "NOT_SPECIFIED").get("IPv6/UDP", 0) >= 4)
            time.sleep(0.1)
            all_counts, spec_counts = every.counts(), specified.counts()
    assert totals(all_counts, "TC_INGRESS") == {"IPv4/TCP": 1}
    assert totals(all_counts, "NOT_SPECIFIED")["IPv6/UDP"] == 4
    ing = [c for c in all_counts if c.reason == "TC_INGRESS"][0]
    assert "__netif_receive_skb_core" in [f.split(".")[0] for f in funcs(ing.stack)]
    assert all("ip6_mc_input" in funcs(c.stack) for c in all_counts if c.protocol == "IPv6/UDP")
    # -N: no NOT_SPECIFIED at all, the others as they are; -S: no stacks
    assert "NOT_SPECIFIED" not in {c.reason for c in spec_counts}
    assert totals(spec_counts, "TC_INGRESS") == {"IPv4/TCP": 1}
    assert all(c.stack == () for c in spec_counts)


def test_clear_resets():
    with QuietHosts("skbdc") as net:
        with SkbDrop(netns=net.inode(net.ns_b), stacks=False) as t:
            udp_to_closed_port(net, socket.AF_INET, 2)
            assert_wait(lambda: totals(t.counts(), "NO_SOCKET") == {"IPv4/UDP": 2})
            first = totals(t.counts(clear=True), "NO_SOCKET")
            udp_to_closed_port(net, socket.AF_INET, 1)
            assert_wait(lambda: totals(t.counts(), "NO_SOCKET") == {"IPv4/UDP": 1})
    assert first == {"IPv4/UDP": 2}


def test_cli_text_and_json():
    with QuietHosts("skbdcli") as net:
        ino = str(net.inode(net.ns_b))
        cli = Cli("skbdrop", "--netns-id", ino, "-T")
        cj = Cli("skbdrop", "--netns-id", ino, "--json", "-N")
        udp_to_closed_port(net, socket.AF_INET, 3)
        time.sleep(0.3)
        rc, lines, err = cli.stop()
        rcj, jlines, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing skb drops by reason and kernel stack. Hit Ctrl-C to end."
    time.strptime(lines[1], "%H:%M:%S")
    blocks = [i for i, s in enumerate(lines) if s == "    NO_SOCKET [IPv4/UDP]"]
    assert sum(int(lines[i + 1]) for i in blocks) == 3      # one block per distinct stack
    for at in blocks:
        frames = []
        for line in reversed(lines[:at]):
            if not line.startswith("    ") or line.startswith("        "):
                break
            frames.insert(0, line.strip())
        assert "__udp4_lib_rcv" in funcs(frames)
    head = lines.index(next(s for s in lines if s.startswith("REASON")))
    assert lines[head].split() == ["REASON", "PROTOCOL", "COUNT"]
    assert "NO_SOCKET IPv4/UDP 3" in [" ".join(s.split()) for s in lines[head + 1:]]
    recs = [json.loads(s) for s in jlines if s.startswith("{")]
    mine = [r for r in recs if r["reason"] == "NO_SOCKET"]
    assert sum(r["count"] for r in mine) == 3 and all(r["protocol"] == "IPv4/UDP" for r in mine)
    assert "NOT_SPECIFIED" not in {r["reason"] for r in recs}
    assert all("__udp4_lib_rcv" in funcs(r["stack"]) for r in mine)


@pytest.mark.parametrize("args", [["-i", "0"], ["-c", "2"], ["--netns-id", "-3"], ["--hook", "kprobe"],
                                  ["--stack-storage-size", "x"]])
def test_bad_input(args):
    bad_input("skbdrop", *args)


def test_nothing_left_attached():
    released_after_exit("skbdrop")
