"""tcpnagle on loopback connections the test opens after the tracer started
(the approximation sees only those): sends with Nagle on, with TCP_NODELAY
and with TCP_CORK are counted under their setting, every send that reaches
the device is timed through queue, driver and ACK, and corked data shows
the time the test kept the cork in."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from helpers import Cli, run_cli
from netlab import bad_input, forced_hook_fails_cleanly, kprobe_programs_verify, released_after_exit
from matrix import opened, variants
from pytrace.tools.tcpnagle import TcpNagle

CORK_HOLD = 0.15


class Pair:
    def __init__(self):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.cli = socket.create_connection(self.srv.getsockname())
        self.acc, _ = self.srv.accept()

    def close(self) -> None:
        for s in (self.cli, self.acc, self.srv):
            s.close()


def traffic() -> dict[str, int]:
    """Sends with each setting; returns how many sends reach the device as their own skb."""
    on, nodelay, cork = Pair(), Pair(), Pair()
    try:
        for _ in range(4):                       # Nagle on, request/response: each send goes at once
            on.cli.sendall(b"r" * 100)
            on.acc.recv(100)
            on.acc.sendall(b"a")
            on.cli.recv(1)
        nodelay.cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(3):
            nodelay.cli.sendall(b"n" * 100)
            nodelay.acc.recv(100)
        cork.cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        cork.cli.sendall(b"c" * 100)
        cork.cli.sendall(b"c" * 100)              # joins the first, still held
        time.sleep(CORK_HOLD)
        cork.cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        got = 0
        while got < 200:
            got += len(cork.acc.recv(200))
    finally:
        for p in (on, nodelay, cork):
            p.close()
    return {"ON": 8, "OFF": 3, "CORK": 2, "skbs": 8 + 3 + 1}


def settle(t: TcpNagle, skbs: int, timeout: float = 3.0) -> dict:
    """Histograms once every timed skb has been acknowledged (delayed ACKs take a while)."""
    end = time.monotonic() + timeout
    while True:
        hs = t.histograms()
        if ("acked" in hs and hs["acked"].count >= skbs) or time.monotonic() > end:
            return hs
        time.sleep(0.05)


@pytest.mark.parametrize("hook", variants(TcpNagle, hooks=("sockops",)))
def test_approximation_counts_settings_and_times_sends(hook):
    with opened(TcpNagle, hook, pid=os.getpid()) as t:
        assert t.approximation and t.variant.note == "approximation"
        want = traffic()
        hs = settle(t, want["skbs"])
        counts = t.counts()
    assert counts == {"ON": want["ON"], "OFF": want["OFF"], "CORK": want["CORK"]}
    assert {k: h.count for k, h in hs.items()} == {"blocked": want["skbs"], "xmit": want["skbs"],
                                                  "acked": want["skbs"]}
    # the corked skb waited for the uncork
    assert hs["blocked"].buckets()[-1][0] * 2 > CORK_HOLD * 1e6 * 0.9
    assert hs["blocked"].sum >= CORK_HOLD * 1e6


@pytest.mark.parametrize("hook", variants(TcpNagle, hooks=("kprobe",)))
def test_exact_variant_counts_write_xmit_by_setting_and_times_the_cork(hook):
    """The book's tcpnagle.bt: every tcp_write_xmit() call of this process,
    by its nonagle argument.  How often TCP calls it per send depends on ACK
    timing, so the counts are bounded below by the sends of each setting;
    the corked data is blocked for at least the time the cork was held."""
    with opened(TcpNagle, hook, pid=os.getpid()) as t:
        assert not t.approximation
        want = traffic()
        counts = t.counts()
        hs = t.histograms()
    assert set(counts) <= {"ON", "OFF", "CORK", "OFF|CORK", "PUSH", "OFF|PUSH"}, counts
    assert counts.get("ON", 0) >= want["ON"]
    assert counts.get("OFF|PUSH", 0) + counts.get("OFF", 0) >= want["OFF"]
    assert counts.get("CORK", 0) + counts.get("OFF|CORK", 0) >= 1
    assert set(hs) == {"blocked"}
    assert hs["blocked"].buckets()[-1][0] * 2 > CORK_HOLD * 1e6 * 0.9


def test_pid_filter_and_clear():
    with TcpNagle(pid=1, hook="sockops") as other, TcpNagle(pid=os.getpid(), ms=True) as mine:
        traffic()
        assert other.counts() == {} and other.histograms() == {}
        first = mine.counts(clear=True)
        mine.histograms(clear=True)
        assert mine.counts() == {}
    assert first == {"ON": 8, "OFF": 3, "CORK": 2}


def test_help_and_output_say_approximation():
    r = run_cli("tcpnagle", "-h")
    assert r.returncode == 0 and "APPROXIMATION" in r.stdout
    cli = Cli("tcpnagle", "-p", str(os.getpid()))
    cj = Cli("tcpnagle", "-p", str(os.getpid()), "--json")
    traffic()
    time.sleep(0.3)
    rc, lines, err = cli.stop()
    rcj, jlines, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == "Tracing TCP nagle and xmit delays. Hit Ctrl-C to end."
    assert lines[1].startswith("(APPROXIMATION (no kprobes here: sockops TX timestamping)")
    assert [s for s in lines if s.startswith("@nagle[")] == ["@nagle[ON]: 8", "@nagle[OFF]: 3", "@nagle[CORK]: 2"]
    at = lines.index("@blocked_us:")
    assert lines[at + 1].split() == ["usecs", ":", "count", "distribution"]
    recs = [json.loads(s) for s in jlines if s.startswith("{")]
    assert {r["nagle"]: r["count"] for r in recs if "nagle" in r} == {"ON": 8, "OFF": 3, "CORK": 2}
    assert {r["mode"] for r in recs} == {"approximation"}
    assert {r["delay"] for r in recs if "delay" in r} >= {"blocked", "xmit"}


def test_pytrace_list_marks_the_approximation():
    r = run_cli("list")
    row = next(line for line in r.stdout.splitlines() if line.startswith("tcpnagle "))
    from pytrace.core import features
    if not features.probe("kprobe")[0]:
        assert "sockops (approximation)" in row


def test_exact_kprobe_variant_verifies():
    kprobe_programs_verify("tcpnagle", {"tcpnagle_kprobe", "tcpnagle_kretprobe"})
    forced_hook_fails_cleanly("tcpnagle", "kprobe", "-d", "1")


@pytest.mark.parametrize("args", [["-p", "-1"], ["--cgroup", "/no/such/cgroup"], ["-c", "2"], ["--hook", "tp_btf"],
                                  ["-m", "1"]])
def test_bad_input(args):
    bad_input("tcpnagle", *args)


def test_nothing_left_attached():
    released_after_exit("tcpnagle")
