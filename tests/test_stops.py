"""Stops that cannot be lost: SIGTERM/SIGHUP raise a BaseException that no
`except Exception` swallows, a stop that lands while a tracer is released
waits until the release is done, double stops end the CLI with status 0 and
never by the default disposition (a burst of Ctrl-Cs ends `pytrace replay`,
not a tool, with 130, never a traceback), and a library program that asks
for it (pytrace.stop_on_signals) releases everything on SIGTERM.  Real signals, real
programs; the kernel's state is checked after each."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

import kernelstate
from helpers import PYTRACE, Cli, free_port, netns, sh, tcp_roundtrip, wait_until
from ready import udp_connects_recorded
from pytrace.core import stops
from pytrace.core.stops import Terminate

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def handlers():
    """The library's handlers in this process (stop_on_signals), removed after."""
    saved = [(s, signal.getsignal(s)) for s in STOPS]
    stops.stop_on_signals()
    try:
        yield
    finally:
        stops.uninstall(saved)


def test_terminate_is_not_an_exception():
    assert issubclass(Terminate, BaseException)
    assert not issubclass(Terminate, Exception)
    import pytrace
    assert pytrace.Terminate is Terminate


def test_a_stop_inside_the_elf_reader_is_raised(handlers, monkeypatch):
    """core/usyms reads ELF symbols under a broad `except Exception` (a file
    that is not ELF is not an error); a SIGTERM that lands inside used to be
    swallowed there, and soconnlat went on."""
    from elftools.elf.elffile import ELFFile
    from pytrace.core import usyms
    parse = ELFFile.iter_segments

    def segments_then_stop(self, *a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)      # handled at the next bytecode: inside the reader
        return parse(self, *a, **kw)
    monkeypatch.setattr(ELFFile, "iter_segments", segments_then_stop)
    usyms._elf.cache_clear()
    with pytest.raises(Terminate):
        usyms._elf(sys.executable)
    usyms._elf.cache_clear()


def test_a_stop_during_release_waits_until_it_is_done(handlers):
    """The stop lands between two steps of BpfObject.close(): every link and
    the object are released first, then the stop is raised."""
    from pytrace.tools.tcpstates import TcpStates
    steps = []
    with pytest.raises(Terminate):
        with TcpStates(lports=[free_port()]) as tracer:
            obj = tracer.obj
            assert obj.links
            obj.on_close(lambda: (steps.append("cleanup"), os.kill(os.getpid(), signal.SIGTERM)))
    assert steps == ["cleanup"]
    assert obj.links == [] and obj.ptr is None and tracer.obj is None


@pytest.mark.parametrize("first,second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM),
                                          (signal.SIGINT, signal.SIGTERM), (signal.SIGHUP, signal.SIGINT)],
                         ids=["INT-INT", "TERM-TERM", "INT-TERM", "HUP-INT"])
def test_double_stops_end_with_status_0(first, second):
    """Two stops 0-40 ms apart, so the second lands anywhere on the way out
    (final drain, release, Python's finalization): status 0, every time, no
    traceback, and the programs released."""
    port = free_port()
    for gap_ms in (0, 3, 10, 20, 40):
        before = kernelstate.snapshot()
        cli = Cli("tcplife", "-L", str(port))
        tcp_roundtrip("127.0.0.1", port)
        # printed before the stops: the tcplife event comes with the last ACK,
        # which may be handled after tcp_roundtrip() returns
        assert cli.read_until(lambda line: f" {port} " in line), cli.stop()
        cli.proc.send_signal(first)
        time.sleep(gap_ms / 1000)
        if cli.proc.poll() is None:
            cli.proc.send_signal(second)
        rc = cli.proc.wait(10)
        _, lines, err = cli.stop()          # (ended: collects what it printed)
        assert rc == 0, (gap_ms, rc, err)
        assert err == "", (gap_ms, err)
        assert sum(f" {port} " in line for line in lines) == 1, (gap_ms, lines)     # printed once
        assert not _ours(kernelstate.left_since(before, timeout=5)), gap_ms


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("replay") / "udp.db")
    udp_connects_recorded(path, 3000)       # ~170 KB replayed: more than a pipe holds
    return path


def _writing_to_a_full_pipe(proc: subprocess.Popen) -> bool:
    try:
        with open(f"/proc/{proc.pid}/wchan") as fh:
            return fh.read().endswith("pipe_write")
    except OSError:
        return False


def test_a_burst_of_ctrl_c_ends_replay_with_130(long_recording):
    """`pytrace replay` is not a tool: Ctrl-C ends it with the shell's 130
    (cli.main), and no more.  It writes to a pipe no one reads, and gets
    SIGINTs as fast as they can be sent until it has ended, so that some
    land in every step of its way out; with Python's own handler one that
    landed after main's except clause ended it with a traceback and status
    -2, about one run in three.  Eight runs (~2 s)."""
    for n in range(8):
        proc = subprocess.Popen([*PYTRACE, "replay", long_recording], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(lambda: _writing_to_a_full_pipe(proc) or proc.poll() is not None, 20, 0.005)
            sent, end = 0, time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < end:
                proc.send_signal(signal.SIGINT)       # (not once it is reaped: poll() and send_signal check)
                sent += 1
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert (proc.returncode, err) == (130, ""), (n, sent, err)
        assert sent > 1 and out.count("\n") < 3001        # stopped while it wrote, more than once


def _ours(left: dict) -> dict:
    """What is left that could be ours: tracefs mounts and probe events (BPF
    IDs are not compared here: other tests on the machine load programs too;
    the matrix tests compare the IDs the process itself held)."""
    return {k: v for k, v in left.items() if k in ("tracefs mounts", "probe events")}


# A plain Python program, as a user writes it: it opens tunnelmon (tc filters
# on a device: the kernel does not remove them with the process) and says
# "ready" on fd 3, then waits to be stopped.
LIBRARY_PROGRAM = """
import os, sys, time
import pytrace
from pytrace.tools.tunnelmon import TunnelMon
ready = int(sys.argv[3])
with pytrace.stop_on_signals(), TunnelMon(sys.argv[1], sys.argv[2]) as mon:
    os.write(ready, b"!")
    while True:
        time.sleep(3600)
print("released")
"""


def _bpf_filters(ns: str, dev: str) -> list[str]:
    out = []
    for direction in ("ingress", "egress"):
        out += [line for line in sh(f"ip netns exec {ns} tc filter show dev {dev} {direction}").stdout.splitlines()
                if " bpf " in line and " handle " in line]
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_library_program_releases_on_a_signal(sig):
    ns_name = f"pt-stops-lib-{os.getpid()}"
    with netns(ns_name) as ns:
        sh(f"ip -n {ns} link add pt0 type veth peer name pt1 && ip -n {ns} link set pt0 up")   # no dummy module here
        ready_r, ready_w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-c", LIBRARY_PROGRAM, "pt0", ns, str(ready_w)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(ready_w,))
        os.close(ready_w)
        try:
            assert select.select([ready_r], [], [], 20)[0], proc.stderr.read() if proc.poll() is not None else ""
            assert os.read(ready_r, 16)
            attached = _bpf_filters(ns, "pt0")
            assert len(attached) == 2                   # tc ingress and egress
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=10)
        finally:
            os.close(ready_r)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert out == "released\n"
        assert err == ""
        assert _bpf_filters(ns, "pt0") == []            # released by the program itself, not by its death
