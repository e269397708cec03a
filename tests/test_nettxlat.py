"""nettxlat against pings between two quiet test hosts.  veth has no TX
completion (the number is not a transmit latency there, as the tool says),
but the mechanics are exact: each echo request handed to a0's driver is
consumed once, by B's icmp_rcv, so a0 gets one sample per ping, in its own
namespace, none longer than the round trip the test timed; each reply from
b0 is freed by A's icmp_rcv as a drop (no ping socket: kfree_skb, not
consume_skb), so b0 gets none."""

from __future__ import annotations

import json
import random
import time

import pytest

from helpers import run_cli
from netlab import QuietHosts, bad_input, ping, released_after_exit
from ready import started
from matrix import opened, variants
from pytrace.tools.nettxlat import NO_COMPLETION, NetTxLat

N = 5


def pings(net: QuietHosts, n: int = N) -> list[float]:
    sock = net.raw_icmp(net.ns_a)
    ident = random.randint(1, 0xFFFF)
    try:
        return [ping(sock, net.V4[1], ident, seq) for seq in range(n)]
    finally:
        sock.close()


@pytest.mark.parametrize("hook", variants(NetTxLat))
def test_one_sample_per_packet_per_device(hook):
    with QuietHosts("txlat", ipv6=False) as net:
        ns_a, ns_b = net.inode(net.ns_a), net.inode(net.ns_b)
        with opened(NetTxLat, hook, netns=ns_a) as ta, NetTxLat(dev="b0", netns=ns_b) as tb:
            assert ta.variant.hook == hook
            rtts = pings(net)
            time.sleep(0.05)
            ha, hb = ta.histograms(), tb.histograms()
    assert [(d.dev, d.netns, h.unit, h.count) for d, h in ha.items()] == [("a0", ns_a, "usecs", N)]
    assert list(ha.values())[0].sum <= sum(rtts) * 1e6
    assert hb == {}


def test_nanoseconds_and_clear():
    with QuietHosts("txlatc", ipv6=False) as net:
        with NetTxLat(dev="a0", netns=net.inode(net.ns_a), ns=True) as t:
            pings(net, 2)
            time.sleep(0.05)
            first = [(h.unit, h.count) for h in t.histograms(clear=True).values()]
            after = t.histograms()
            pings(net, 3)
            time.sleep(0.05)
            again = [h.count for h in t.histograms().values()]
    assert (first, after, again) == ([("nsecs", 2)], {}, [3])


def test_help_says_veth_and_lo_have_no_completion():
    r = run_cli("nettxlat", "-h")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "veth and lo have no TX completion" in text and "meaningless" in text
    assert "no TX completion" in NO_COMPLETION


def test_cli_text_and_json():
    with QuietHosts("txlatcli", ipv6=False) as net:
        ino = net.inode(net.ns_a)
        cli = started("nettxlat", "--netns-id", str(ino), "-D", "a0", links=3)
        cj = started("nettxlat", "--netns-id", str(ino), "--json", "-i", "1", "-c", "2", links=3)
        pings(net, 3)
        time.sleep(0.1)
        rc, lines, err = cli.stop()
        cj.proc.wait(10)
        rcj, jlines, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing net device xmit queue latency. Hit Ctrl-C to end."
    assert lines[1].startswith("(Note: veth and lo have no TX completion")
    at = lines.index(f"dev a0@netns:{ino}:")
    assert lines[at + 1].split() == ["usecs", ":", "count", "distribution"]
    counts = []
    for row in lines[at + 2:]:
        if "->" not in row:
            break
        counts.append(int(row.split()[4]))
    assert sum(counts) == 3
    recs = [json.loads(s) for s in jlines if s.startswith("{")]
    assert sum(r["count"] for r in recs) == 3 and {(r["dev"], r["netns"]) for r in recs} == {("a0", ino)}


@pytest.mark.parametrize("args", [["-D", ""], ["-D", "a b"], ["-N", "5"], ["-d", "0"], ["--hook", "kprobe"]])
def test_bad_input(args):
    bad_input("nettxlat", *args)


def test_nothing_left_attached():
    released_after_exit("nettxlat")
