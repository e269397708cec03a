"""skblife against skbs the test allocates and the kernel holds for a known
time: ICMP echo requests sent by this process (-p) queue in a tbf qdisc on
a0 and are freed by B's icmp_rcv once the token bucket lets them go, so the
k-th of them lives at least as long as the bucket makes it wait.

(UDP is not used: on this kernel received UDP skbs are freed in bulk
through the per-CPU NAPI skb cache, which has no per-object tracepoint.)"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from netlab import QuietHosts, bad_input, echo_request, released_after_exit
from helpers import tcp_roundtrip
from ready import started
from matrix import opened, refusal_first, variants
from pytrace.core import ksyms
from pytrace.tools.skblife import SkbLife

N, PAYLOAD = 10, 1000
FRAME = PAYLOAD + 8 + 20 + 14          # what tbf counts (skb->len)
RATE, BURST = 125_000, 3000            # 1mbit in bytes/s; bucket in bytes


def bucket_waits() -> list[float]:
    """Seconds the k-th of N requests sent at once waits for tokens."""
    return [max(0.0, ((k + 1) * FRAME - BURST) / RATE) for k in range(N)]


def queued_pings(net: QuietHosts) -> None:
    """N echo requests at once through a0's tbf, then their N replies."""
    sock = net.raw_icmp(net.ns_a)
    ident = random.randint(1, 0xFFFF)
    try:
        for seq in range(N):
            echo_request(sock, net.V4[1], ident, seq, b"l" * PAYLOAD)
        sock.settimeout(3)
        got = 0
        while got < N:
            data = sock.recv(2048)
            if data[20] == 0 and int.from_bytes(data[24:26], "big") == ident:
                got += 1
    finally:
        sock.close()


@pytest.mark.parametrize("hook", variants(SkbLife))
def test_lifespans_of_queued_requests(hook):
    refusal_first(SkbLife, hook)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with QuietHosts("skbl", ipv6=False) as net:
            net.qdisc_a("tbf", "rate", "1mbit", "burst", str(BURST), "latency", "2s")
            with opened(SkbLife, hook, pid=os.getpid()) as mine, SkbLife(pid=sleeper.pid, us=True) as other:
                assert mine.variant.hook == hook
                queued_pings(net)
                time.sleep(0.05)
                h, h_other = mine.histogram(), other.histogram()
    finally:
        sleeper.kill()
        sleeper.wait()
    waits = bucket_waits()
    assert h.unit == "nsecs" and h.count >= N
    # every request was born (sent) and died (B's icmp_rcv) under our eyes: their waits add up
    assert h.sum >= 0.8 * sum(waits) * 1e9
    # and the last one sat in the queue for about max(waits)
    assert h.buckets()[-1][1] >= 0.8 * max(waits) * 1e9
    # another process allocated none of them
    assert (h_other.unit, h_other.count) == ("usecs", 0)


def test_caches_learned_from_alloc_skb():
    """A TCP exchange allocates in __alloc_skb from the head cache (its ACKs)
    and the fclone cache (its data): both are learned, and are not the same."""
    with SkbLife() as t:
        tcp_roundtrip()
        head = t.obj.global_u64("head_cache").value
        fclone = t.obj.global_u64("fclone_cache").value
    assert head and fclone and head != fclone
    assert ksyms.kernel_symbols().span("__alloc_skb")


def test_clear():
    with QuietHosts("skblc", ipv6=False) as net:
        net.qdisc_a("tbf", "rate", "1mbit", "burst", str(BURST), "latency", "2s")
        with SkbLife(pid=os.getpid()) as t:
            queued_pings(net)
            time.sleep(0.05)
            first = t.histogram(clear=True)
            after = t.histogram()
    assert first.count >= N and after.count == 0


def test_cli_text_and_json():
    with QuietHosts("skblcli", ipv6=False) as net:
        net.qdisc_a("tbf", "rate", "1mbit", "burst", str(BURST), "latency", "2s")
        cli = started("skblife", "-p", str(os.getpid()), "-u", links=2)
        cj = started("skblife", "-p", str(os.getpid()), "--json", links=2)
        queued_pings(net)
        time.sleep(0.1)
        rc, lines, err = cli.stop()
        rcj, jlines, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing skb lifespans (alloc to free). Hit Ctrl-C to end."
    head = lines[1].split()
    assert head[0] == "@skb_residency_usecs:" and int(head[1]) >= N and head[2] == "skbs"
    assert lines[2].split() == ["usecs", ":", "count", "distribution"]
    rows = [r.split() for r in lines[3:] if "->" in r]
    assert sum(int(r[4]) for r in rows) == int(head[1])
    top = max(int(r[2]) for r in rows if r[4] != "0")
    assert top >= 0.8 * max(bucket_waits()) * 1e6
    rec = [json.loads(s) for s in jlines if s.startswith("{")][0]
    assert rec["unit"] == "nsecs" and rec["count"] >= N and rec["sum"] >= 0.8 * sum(bucket_waits()) * 1e9


@pytest.mark.parametrize("args", [["-p", "abc"], ["-p", "0"], ["-c", "1"], ["--hook", "kprobe"], ["-i", "1.5"]])
def test_bad_input(args):
    bad_input("skblife", *args)


def test_nothing_left_attached():
    released_after_exit("skblife")
