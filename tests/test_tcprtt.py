"""tcprtt under real traffic, checked against the kernel's own tcp_probe records."""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest

from helpers import LoopbackPair, run_cli
from matrix import opened, variants
from pytrace.core.hist import Log2Histogram
from pytrace.tools.tcprtt import TcpRtt
from tracefs_counter import TraceCounter, field


def slots_of(srtts: list[int]) -> tuple[int, ...]:
    slots = [0] * 27
    for v in srtts:
        slots[min(max(v, 1).bit_length() - 1, 26)] += 1
    return tuple(slots)


@pytest.mark.parametrize("hook", variants(TcpRtt))
def test_histogram_equals_the_kernels_tcp_probe_records(hook):
    """Every tcp_probe hit on the server side of one connection lands in the
    histogram, in the slot of its srtt: compared with a tracefs instance
    filtered on the same port, which records the same hits with their srtt."""
    pp = LoopbackPair(nodelay=True)
    try:
        with opened(TcpRtt, hook, lport=pp.port) as rtt:
            with TraceCounter("tcp/tcp_probe", f"sport == {pp.port}") as tc:
                pp.exchange(200)
                time.sleep(0.05)
                lines = tc.stop()
            hists = rtt.histograms()
    finally:
        pp.close()
    assert list(hists) == [None]
    h = hists[None]
    srtts = [field(line, "srtt") for line in lines]
    assert len(srtts) >= 200
    assert h.count == len(srtts)
    assert h.slots == slots_of(srtts)
    assert h.sum == sum(srtts)
    # loopback: well under 10 ms
    assert max(lo for lo, _, c in h.buckets() if c) < 10_000


def test_rport_and_lport_filters_separate_two_connections():
    a, b = LoopbackPair(nodelay=True), LoopbackPair(nodelay=True)
    try:
        with TcpRtt(rport=a.port) as ra, TcpRtt(lport=b.port) as rb, TcpRtt() as rall:
            with TraceCounter("tcp/tcp_probe", f"dport == {a.port}", "pt_a") as ta, \
                    TraceCounter("tcp/tcp_probe", f"sport == {b.port}", "pt_b") as tb:
                a.exchange(50)
                b.exchange(150)
                time.sleep(0.05)
                na, nb = len(ta.stop()), len(tb.stop())
            ha, hb, hall = ra.histograms()[None], rb.histograms()[None], rall.histograms()[None]
    finally:
        a.close()
        b.close()
    assert ha.count == na and hb.count == nb
    assert 50 <= na < 150 <= nb
    assert hall.count >= na + nb


def test_per_remote_address_histograms_and_clear():
    pp4, pp6 = LoopbackPair("127.0.0.1", nodelay=True), LoopbackPair("::1", nodelay=True)
    try:
        with TcpRtt(by_raddr=True, rport=0) as rtt:
            pp4.exchange(20)
            pp6.exchange(20)
            hists = rtt.histograms(clear=True)
            after = rtt.histograms()
    finally:
        pp4.close()
        pp6.close()
    assert ipaddress.ip_address("127.0.0.1") in hists and ipaddress.ip_address("::1") in hists
    ours = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}   # others share the kernel
    assert sum(h.count for a, h in after.items() if a in ours) < 5


def test_both_b_and_B_a_histogram_per_address_pair():
    """Issue 20: -b and -B could not be combined; together they key by (laddr, raddr)."""
    pp4, pp6 = LoopbackPair("127.0.0.1", nodelay=True), LoopbackPair("::1", nodelay=True)
    try:
        with TcpRtt(by_laddr=True, by_raddr=True, lport=pp4.port) as r4, \
                TcpRtt(by_laddr=True, by_raddr=True, lport=pp6.port) as r6:
            pp4.exchange(20)
            pp6.exchange(20)
            h4, h6 = r4.histograms(), r6.histograms()
    finally:
        pp4.close()
        pp6.close()
    v4, v6 = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    assert list(h4) == [(v4, v4)] and list(h6) == [(v6, v6)]
    assert h4[(v4, v4)].count >= 20 and h6[(v6, v6)].count >= 20


def test_family_filters():
    pp4, pp6 = LoopbackPair("127.0.0.1", nodelay=True), LoopbackPair("::1", nodelay=True)
    try:
        with TcpRtt(family=socket.AF_INET6, by_raddr=True) as only6, \
                TcpRtt(family=socket.AF_INET, by_raddr=True) as only4:
            pp4.exchange(20)
            pp6.exchange(20)
            h6, h4 = only6.histograms(), only4.histograms()
    finally:
        pp4.close()
        pp6.close()
    assert {a.version for a in h6} == {6} and ipaddress.ip_address("::1") in h6
    assert {a.version for a in h4} == {4} and ipaddress.ip_address("127.0.0.1") in h4


def test_cli_man_page_example_with_long_names():
    """The man page's own `tcprtt -i 3 --lport 80 --byraddr` exited 2 (issue 20); here
    with the test's port, and -b -B together, printed per pair."""
    pp = LoopbackPair(nodelay=True)
    try:
        import threading
        t = threading.Timer(0.8, pp.exchange, args=(50,))
        t.start()
        r = run_cli("tcprtt", "-i", "3", "-c", "1", "--lport", str(pp.port), "--byraddr")
        t.join()
        t = threading.Timer(0.8, pp.exchange, args=(50,))
        t.start()
        both = run_cli("tcprtt", "-d", "2", "--lport", str(pp.port), "--byladdr", "--byraddr", "--milliseconds")
        t.join()
        debug = run_cli("tcprtt", "-D", "-d", "1", "-4")
    finally:
        pp.close()
    assert r.returncode == 0 and both.returncode == 0 and debug.returncode == 0, r.stderr + both.stderr
    assert r.stdout.splitlines()[1] == "Remote Address = 127.0.0.1"
    lines = both.stdout.splitlines()
    assert lines[1] == "Local Address = 127.0.0.1, Remote Address = 127.0.0.1" and "msecs" in lines[2]
    assert 'SEC("tp_btf/tcp_probe")' in debug.stdout and "Tracing TCP RTT" in debug.stdout


def test_laddr_filter_v6_only():
    pp4, pp6 = LoopbackPair("127.0.0.1", nodelay=True), LoopbackPair("::1", nodelay=True)
    try:
        with TcpRtt(laddr="::1", lport=pp6.port) as r6, TcpRtt(laddr="::1", lport=pp4.port) as r4:
            pp4.exchange(30)
            pp6.exchange(30)
            h6, h4 = r6.histograms(), r4.histograms()
    finally:
        pp4.close()
        pp6.close()
    assert h6[None].count >= 30
    assert h4 == {}


def test_histogram_rendering():
    h = Log2Histogram((0, 3, 1) + (0,) * 24, "usecs", 4, 10)
    text = h.render().splitlines()
    assert text[0].split() == ["usecs", ":", "count", "distribution"]
    assert text[1].split()[:5] == ["0", "->", "1", ":", "0"]
    assert text[2].endswith("|" + "*" * 40 + "|") and text[2].split()[:5] == ["2", "->", "3", ":", "3"]
    assert text[3].split()[:5] == ["4", "->", "7", ":", "1"]
    assert len(text) == 4 and h.average == 2.5


def test_cli_histogram_and_json():
    pp = LoopbackPair(nodelay=True)
    try:
        import threading
        t = threading.Timer(0.8, pp.exchange, args=(100,))
        t.start()
        r = run_cli("tcprtt", "-d", "2", "-p", str(pp.port), "-e")
        t.join()
        t = threading.Timer(0.8, pp.exchange, args=(100,))
        t.start()
        rj = run_cli("tcprtt", "-d", "2", "-p", str(pp.port), "--json")
        t.join()
    finally:
        pp.close()
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith("Tracing TCP RTT")
    assert out[1].startswith("All Addresses = ****** [AVG ")
    assert "usecs" in out[2] and "distribution" in out[2]
    counts = [int(line.split(":")[1].split("|")[0]) for line in out[3:] if "->" in line]
    assert sum(counts) >= 100
    rec = json.loads(rj.stdout.strip().splitlines()[-1])
    assert rec["unit"] == "usecs" and rec["count"] >= 100
    assert sum(b["count"] for b in rec["buckets"]) == rec["count"]


@pytest.mark.parametrize("args", [["-i", "-1"], ["-p", "x"], ["-a", "not-an-ip"], ["-4", "-6"], ["--nope"]])
def test_bad_input(args):
    r = run_cli("tcprtt", *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_kprobe_and_fentry_variants_are_built_and_reported():
    """fentry/kprobe are the preferred variants on ordinary kernels. Where the
    kernel lacks them, forcing them must fail with the probe's reason."""
    from pytrace.core import features
    for kind in ("fentry", "kprobe"):
        usable, why = features.probe(kind)
        r = run_cli("tcprtt", "--hook", kind, "-d", "1")
        if usable:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 1 and kind in r.stderr and len(r.stderr.splitlines()) == 1
