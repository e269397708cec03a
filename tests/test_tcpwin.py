"""tcpwin against a loopback connection the test drives: one row per segment
the server's socket receives, equal, row for row, to the kernel's own
tcp:tcp_probe records for that socket (cwnd, ssthresh, send window, srtt),
with the send buffer the test set on it and nothing queued to send."""

from __future__ import annotations

import csv
import io
import socket
import time

import pytest

from helpers import Cli, LoopbackPair
from netlab import bad_input, forced_hook_fails_cleanly, kprobe_programs_verify, released_after_exit
from matrix import opened, variants
from pytrace.core import tracefs
from pytrace.tools.tcpwin import HEADER, TcpWin
from tracefs_counter import TraceCounter, field

SNDBUF = 65536            # the kernel doubles what SO_SNDBUF asks for


class Conn(LoopbackPair):
    """A loopback connection; the server side's send buffer is fixed, it only receives."""

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__(host)
        self.acc.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)

    def send(self, n: int, size: int = 3000) -> None:
        for _ in range(n):
            self.cli.sendall(b"w" * size)
            got = 0
            while got < size:
                got += len(self.acc.recv(size - got))


def rows_until(t: TcpWin, n: int, timeout: float = 3.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(got) < n:
        got += list(t.events(duration=0.05))
    return got + list(t.events(duration=0.1))


@pytest.mark.parametrize("hook,host", variants(TcpWin, each=["127.0.0.1", "::1"]))
def test_rows_match_the_kernels_tcp_probe_records(hook, host):
    c = Conn(host)
    try:
        with opened(TcpWin, hook, lports=[c.port]) as t:
            assert t.variant.hook == hook
            with TraceCounter("tcp/tcp_probe", f"sport == {c.port}", f"pt_tcpwin_{hook}") as tc:
                c.send(20)
                time.sleep(0.05)
                lines = tc.stop()
            rows = rows_until(t, len(lines))
    finally:
        c.close()
    assert len(lines) >= 20
    assert [(r.snd_cwnd, r.ssthresh, r.snd_wnd, r.srtt_us) for r in rows] == \
        [(field(x, "snd_cwnd"), field(x, "ssthresh"), field(x, "snd_wnd"), field(x, "srtt")) for x in lines]
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    # the classic record carries no skaddr before 6.x: then the buffers are unknown
    knows_sk = hook != "tracepoint" or tcp_probe_has_skaddr()
    for r in rows:
        assert (r.family, str(r.laddr), r.lport, str(r.raddr), r.rport) == (fam, host, c.port, host, c.cport)
        assert (r.sndbuf, r.wmem_queued) == ((2 * SNDBUF, 0) if knows_sk else (-1, -1))
    assert len({r.skaddr for r in rows}) == 1 and (rows[0].skaddr != 0) == knows_sk


def tcp_probe_has_skaddr() -> bool:
    with open(f"{tracefs.mounted() or tracefs.PATHS[0]}/events/tcp/tcp_probe/format") as fh:
        return " skaddr;" in fh.read()


def test_rport_and_family_filters():
    a, b = Conn("127.0.0.1"), Conn("::1")
    try:
        with TcpWin(rports=[a.port]) as by_rport, TcpWin(family=socket.AF_INET6, lports=[a.port, b.port]) as v6:
            a.send(5)
            b.send(5)
            ra, r6 = rows_until(by_rport, 5), rows_until(v6, 5)
    finally:
        a.close()
        b.close()
    assert ra and {(r.lport, r.rport) for r in ra} == {(a.cport, a.port)}     # the client side of a
    assert r6 and {(r.family, r.lport) for r in r6} == {(socket.AF_INET6, b.port)}


def test_cli_csv_and_json():
    c = Conn()
    try:
        cli = Cli("tcpwin", "-L", str(c.port))
        cj = Cli("tcpwin", "-L", str(c.port), "--json")
        c.send(5)
        assert cli.read_until(lambda s: s.startswith("rcv,"))
        jline = cj.read_until(lambda s: s.startswith("{"))
    finally:
        rc, lines, err = cli.stop()
        rcj, _, errj = cj.stop()
        c.close()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0] == HEADER
    table = list(csv.DictReader(io.StringIO("\n".join([lines[0]] + [s for s in lines if s.startswith("rcv,")]))))
    assert len(table) >= 5
    for row in table:
        assert row["event"] == "rcv" and row["sock"].startswith("0x") and int(row["time_us"]) >= 0
        assert (int(row["sk_sndbuf"]), row["laddr"], int(row["lport"]), int(row["rport"])) == \
            (2 * SNDBUF, "127.0.0.1", c.port, c.cport)
        assert int(row["snd_cwnd"]) >= 1 and int(row["snd_ssthresh"]) >= 1
    times = [int(row["time_us"]) for row in table]
    assert times == sorted(times)
    import json
    rec = json.loads(jline)
    assert (rec["lport"], rec["rport"], rec["sndbuf"], rec["skaddr"]) == \
        (c.port, c.cport, 2 * SNDBUF, table[0]["sock"][2:])


def test_kprobe_variant_verifies():
    kprobe_programs_verify("tcpwin", {"tcpwin_kprobe"})
    for kind in ("fentry", "kprobe"):
        forced_hook_fails_cleanly("tcpwin", kind)


@pytest.mark.parametrize("args", [["-L", "0"], ["-D", "a,b"], ["-4", "-6"], ["--hook", "raw_tp"], ["x"]])
def test_bad_input(args):
    bad_input("tcpwin", *args)


def test_nothing_left_attached():
    released_after_exit("tcpwin")
