"""socketio and socksize: the calls and bytes of this process's own socket I/O."""

from __future__ import annotations

import os
import socket

import pytest

from ready import n_programs, started
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.socketio import SocketIO
from pytrace.tools.socksize import SockSize

ME = os.getpid()
COMM = open("/proc/self/comm").read().strip()
SIZES = (100, 200, 300)


def workload() -> dict:
    """TCP sends/receives of known sizes (MSG_WAITALL: one call each), UDP datagrams,
    one receive that fails with EAGAIN.  Returns the ports involved."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    acc, _ = srv.accept()
    for n in SIZES:
        assert cli.send(b"x" * n) == n
        assert len(acc.recv(n, socket.MSG_WAITALL)) == n
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    with pytest.raises(BlockingIOError):
        rx.recv(10)                                   # a call, no bytes
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(2):
        tx.sendto(b"y" * 50, rx.getsockname())
        assert len(rx.recv(100)) == 50
    ports = {"server": srv.getsockname()[1], "client": cli.getsockname()[1]}
    for s in (srv, cli, acc, rx, tx):
        s.close()
    return ports


@pytest.mark.parametrize("hook", variants(SocketIO))
def test_socketio_calls_and_bytes_exact(hook):
    with opened(SocketIO, hook, pid=ME) as t:
        ports = workload()
        flows = t.flows()
    got = {(f.dir, f.proto, f.rport): (f.calls, f.bytes) for f in flows}
    assert got == {("send", "TCP", ports["server"]): (3, 600), ("recv", "TCP", ports["client"]): (3, 600),
                   ("send", "UDP", 0): (2, 100), ("recv", "UDP", 0): (3, 100)}
    assert all((f.pid, f.comm, f.family, f.lport) == (ME, COMM, socket.AF_INET, 0) for f in flows)


def test_socketio_by_local_port():
    with SocketIO(pid=ME, by_lport=True) as t:
        ports = workload()
        flows = t.flows(clear=True)
        assert t.flows() == []
    tcp = {(f.dir, f.lport, f.rport) for f in flows if f.proto == "TCP"}
    assert tcp == {("send", ports["client"], ports["server"]), ("recv", ports["server"], ports["client"])}


def test_kprobe_variants_pass_the_verifier():
    for cls, obj in ((SocketIO, "socketio"), (SockSize, "socksize")):
        variant = next(v for v in cls.VARIANTS if v.hook == "kprobe")
        with BpfObject(obj, programs=variant.programs, rodata={"targ_tgid": ME}):
            pass


def slots(*values: int) -> tuple[int, ...]:
    out = [0] * 32
    for v in values:
        out[max(v, 1).bit_length() - 1] += 1
    return tuple(out)


@pytest.mark.parametrize("hook", variants(SockSize))
def test_socksize_histograms_exact(hook):
    with opened(SockSize, hook, pid=ME) as t:
        workload()
        hists = {key.values(): h for key, h in t.histograms().items()}     # SockSizeKey (pid, comm, dir)
    assert set(hists) == {(ME, COMM, "send"), (ME, COMM, "recv")}
    for d in ("send", "recv"):
        h = hists[(ME, COMM, d)]
        assert h.unit == "bytes"
        assert h.slots == slots(*SIZES, 50, 50)           # the EAGAIN receive is left out
        assert (h.count, h.sum) == (5, 700)


def test_cli_socketio_json_and_socksize_text():
    cli = started("socketio", "-p", str(ME), "--json", links=n_programs(SocketIO, "tp_btf"))
    ports = workload()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = cli.json_records()
    sent = [r for r in recs if r["dir"] == "send" and r["proto"] == "TCP"]
    assert [(r["rport"], r["calls"], r["bytes"]) for r in sent] == [(ports["server"], 3, 600)]

    cli = started("socksize", "-p", str(ME), links=n_programs(SockSize, "tp_btf"))
    workload()
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert f"@read_bytes[{COMM}, {ME}]:" in lines and f"@write_bytes[{COMM}, {ME}]:" in lines
    # peak: the two 50-byte datagrams (slot 32-63); 300 bytes is half of it
    assert "        32 -> 63         : 2        |" + "*" * 40 + "|" in lines
    assert "       256 -> 511        : 1        |" + "*" * 20 + " " * 20 + "|" in lines
