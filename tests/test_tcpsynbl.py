"""tcpsynbl against a listener whose accept() the test withholds: every
completed handshake queues one more connection, so the backlog lengths seen
are exactly 1, 2, ..., N (sampled after enqueue on tp_btf/raw_tp)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from helpers import Cli, wait_until
from netlab import bad_input, forced_hook_fails_cleanly, kprobe_programs_verify, released_after_exit
from matrix import opened, variants
from pytrace.tools.tcpsynbl import TcpSynBl


class Listener:
    """A listener with a chosen backlog that never accepts; connect() fills its queue."""

    def __init__(self, backlog: int, host: str = "127.0.0.1"):
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.srv = socket.socket(self.family, socket.SOCK_STREAM)
        self.srv.bind((host, 0))
        self.srv.listen(backlog)
        self.port = self.srv.getsockname()[1]
        self.clients: list[socket.socket] = []

    def connect(self, n: int) -> None:
        for _ in range(n):
            self.clients.append(socket.create_connection((self.host, self.port), timeout=5))

    def close(self) -> None:
        for s in (*self.clients, self.srv):
            s.close()


def expected_slots(values: list[int]) -> tuple[int, ...]:
    slots = [0] * 32
    for v in values:
        slots[max(v, 1).bit_length() - 1] += 1
    return tuple(slots)


def wait_count(t: TcpSynBl, n: int) -> dict:
    wait_until(lambda: sum(h.count for h in t.histograms().values()) >= n, 5)
    return t.histograms()


@pytest.mark.parametrize("hook,host", variants(TcpSynBl, each=["127.0.0.1", "::1"]))
def test_withheld_accepts_fill_the_backlog(hook, host):
    lst = Listener(7, host)
    try:
        with opened(TcpSynBl, hook, lports=[lst.port]) as t:
            after = t.after_enqueue
            assert after == (hook in ("tp_btf", "raw_tp"))
            lst.connect(4)
            hists = wait_count(t, 4)
    finally:
        lst.close()
    assert list(hists) == [7]
    h = hists[7]
    # fentry/kprobe sample before each connection is queued: 0, 1, 2, 3;
    # the tracepoints after: 1, 2, 3, 4
    want = [n + after for n in range(4)]
    assert (h.count, h.sum) == (4, sum(want))
    assert h.slots == expected_slots(want)


def test_family_filter_and_port_filter():
    l4, l6 = Listener(5, "127.0.0.1"), Listener(6, "::1")
    try:
        with TcpSynBl(family=socket.AF_INET6, lports=[l4.port, l6.port]) as only6, \
                TcpSynBl(lports=[l4.port]) as only_l4:
            l4.connect(2)
            l6.connect(3)
            h6 = wait_count(only6, 3)
            h4 = wait_count(only_l4, 2)
    finally:
        l4.close()
        l6.close()
    assert {k: (h.count, h.sum) for k, h in h6.items()} == {6: (3, 6)}
    assert {k: (h.count, h.sum) for k, h in h4.items()} == {5: (2, 3)}


def test_clear_resets():
    lst = Listener(4)
    try:
        with TcpSynBl(lports=[lst.port]) as t:
            lst.connect(2)
            first = {k: h.count for k, h in wait_count(t, 2).items()}
            cleared = t.histograms(clear=True)
            after = t.histograms()
    finally:
        lst.close()
    assert first == {4: 2} and {k: h.count for k, h in cleared.items()} == {4: 2} and after == {}


def cli_run(lst: Listener, n: int, *args: str) -> list[str]:
    """Run the CLI for one 2-second interval, connecting n clients once it is attached."""
    cli = Cli("tcpsynbl", "-L", str(lst.port), *args, "2", "1")
    lst.connect(n)
    cli.proc.wait(15)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    return lines


def test_cli_text_and_json():
    lst, lstj = Listener(9), Listener(9)
    try:
        out = cli_run(lst, 3, "-T")
        recs = [json.loads(line) for line in cli_run(lstj, 2, "--json")]
    finally:
        lst.close()
        lstj.close()
    assert out[0] == "Tracing SYN backlog size. Ctrl-C to end."
    assert time.strptime(out[1], "%H:%M:%S")
    assert out[2] == "backlog_max = 9 (sampled after enqueue: +1)"
    assert out[3].split() == ["backlog", ":", "count", "distribution"]
    rows = [line.split() for line in out[4:] if "->" in line]
    assert [(r_[0], r_[2], r_[4]) for r_ in rows] == [("0", "1", "1"), ("2", "3", "2")]
    assert len(recs) == 1
    rec = recs[0]
    assert (rec["backlog_max"], rec["after_enqueue"], rec["unit"], rec["count"], rec["sum"]) == \
        (9, 1, "backlog", 2, 3)


@pytest.mark.parametrize("args", [["0"], ["1", "x"], ["-L", "http"], ["-4", "-6"], ["--hook", "nope"],
                                  ["-L", "70000"]])
def test_bad_input(args):
    bad_input("tcpsynbl", *args)


def test_kprobe_variant_verifies_and_forced_hooks_fail_cleanly():
    """The kprobe programs (the original's hook) pass the verifier here even
    though this kernel cannot attach kprobes."""
    kprobe_programs_verify("tcpsynbl", {"tcpsynbl_kprobe_v4", "tcpsynbl_kprobe_v6"})
    for kind in ("fentry", "kprobe"):
        forced_hook_fails_cleanly("tcpsynbl", kind, "1", "1")


def test_nothing_left_attached():
    released_after_exit("tcpsynbl")
