"""qdisclat on a device the test gives a tbf qdisc: UDP datagrams sent faster
than the rate queue up, every one is counted once under the test's qdisc,
handle, device and namespace, and the last waits at least as long as the
token bucket makes it.  pfifo_fast's bypass path is not seen, as documented."""

from __future__ import annotations

import json
import time

import pytest

from netlab import QuietHosts, bad_input, released_after_exit
from ready import started
from matrix import opened, refusal_first, variants
from pytrace.tools.qdisclat import QdiscLat, handle_text

N, PAYLOAD = 10, 1000
FRAME = PAYLOAD + 8 + 20 + 14          # what tbf counts (skb->len)
RATE, BURST = 125_000, 3000            # 1mbit in bytes/s, bucket size in bytes


def tbf(net: QuietHosts) -> None:
    net.qdisc_a("handle", "10:", "tbf", "rate", "1mbit", "burst", str(BURST), "latency", "2s")


def blast(net: QuietHosts, n: int = N) -> None:
    s = net.udp_socket(net.ns_a)
    for _ in range(n):
        s.sendto(b"q" * PAYLOAD, (net.V4[1], 9999))
    s.close()


def wait_count(t: QdiscLat, n: int, timeout: float = 3.0) -> list:
    end = time.monotonic() + timeout
    while True:
        hs = t.histograms()
        if sum(h.count for h in hs.values()) >= n or time.monotonic() > end:
            return hs
        time.sleep(0.05)


def last_wait_us(n: int = N) -> float:
    """When the token bucket lets the n-th packet go, sent at once with the bucket full."""
    return (n * FRAME - BURST) / RATE * 1e6


@pytest.mark.parametrize("hook", variants(QdiscLat))
def test_tbf_queueing(hook):
    refusal_first(QdiscLat, hook)
    with QuietHosts("qlat", ipv6=False) as net:
        tbf(net)
        ino = net.inode(net.ns_a)
        with opened(QdiscLat, hook, netns=ino) as t:
            assert t.variant.hook == hook
            blast(net)
            hs = wait_count(t, N)
    assert [(q.qdisc, q.handle, q.parent, q.dev, q.netns, h.unit, h.count) for q, h in hs.items()] == \
        [("tbf", "10:", "root", "a0", ino, "usecs", N)]
    (h,) = hs.values()
    # the last packet waited for the bucket to refill (minus the time the sends took)
    assert h.buckets()[-1][1] >= last_wait_us() * 0.8
    assert h.sum >= last_wait_us() * 0.8


def test_bypass_path_is_not_seen():
    with QuietHosts("qlatb", ipv6=False) as net:
        net.qdisc_a("pfifo_fast")
        with QdiscLat(netns=net.inode(net.ns_a)) as t:
            s = net.udp_socket(net.ns_a)
            for _ in range(5):
                s.sendto(b"b" * 100, (net.V4[1], 9999))
                time.sleep(0.01)          # the queue is empty each time: bypass
            s.close()
            time.sleep(0.1)
            assert t.histograms() == {}


def test_dev_filter_nanoseconds_and_clear():
    with QuietHosts("qlatf", ipv6=False) as net:
        tbf(net)
        ino = net.inode(net.ns_a)
        with QdiscLat(dev="a0", netns=ino, ns=True) as t, QdiscLat(dev="b0", netns=ino) as none:
            blast(net, 3)
            first = wait_count(t, 3)
            t.histograms(clear=True)
            after = t.histograms()
            nothing = none.histograms()
    assert [(h.unit, h.count) for h in first.values()] == [("nsecs", 3)]
    assert after == {} and nothing == {}


def test_handle_text():
    assert [handle_text(h) for h in (0x00100000, 0x00010010, 0xFFFFFFFF, 0x80010000)] == \
        ["10:", "1:10", "root", "8001:"]


def test_cli_text_and_json():
    with QuietHosts("qlatc", ipv6=False) as net:
        tbf(net)
        ino = net.inode(net.ns_a)
        cli = started("qdisclat", "--netns-id", str(ino), "-T", links=2)
        cj = started("qdisclat", "-D", "a0", "--netns-id", str(ino), "--json", links=2)
        blast(net, 4)
        time.sleep(0.3)
        rc, lines, err = cli.stop()
        rcj, jlines, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing qdisc enqueue-to-dequeue latency. Hit Ctrl-C to end."
    time.strptime(lines[1], "%H:%M:%S")
    assert lines[2] == f"qdisc tbf 10: parent root dev a0@netns:{ino}:"
    counts = [int(r.split()[4]) for r in lines[4:] if "->" in r]
    assert sum(counts) == 4
    recs = [json.loads(s) for s in jlines if s.startswith("{")]
    assert [(r["qdisc"], r["handle"], r["dev"], r["count"]) for r in recs] == [("tbf", "10:", "a0", 4)]


@pytest.mark.parametrize("args", [["-D", "0123456789abcdefg"], ["-i", "1", "-c", "0"], ["--netns-id", "x"],
                                  ["--hook", "fentry"], ["-x"]])
def test_bad_input(args):
    bad_input("qdisclat", *args)


def test_nothing_left_attached():
    released_after_exit("qdisclat")
