"""gethostlatency against lookups the test makes itself (no DNS: "localhost"
from /etc/hosts): getaddrinfo() from Python, gethostbyname()/gethostbyname2()
through ctypes, a failing getaddrinfo() (unknown service), and a child
process for -p.  Each is reported once, with its function, host, process,
result, and a latency inside the time the test measured around the call."""

from __future__ import annotations

import ctypes
import json
import re
import os
import socket
import subprocess
import sys
import time

import pytest

from helpers import run_cli
from netlab import bad_input, released_after_exit
from ready import started
from matrix import covers
from pytrace.tools.gethostlatency import GetHostLatency, find_libc

LIBC = ctypes.CDLL("libc.so.6")
LIBC.gethostbyname.restype = ctypes.c_void_p
LIBC.gethostbyname2.restype = ctypes.c_void_p


def lookups(t: GetHostLatency, n: int, timeout: float = 3.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(got) < n:
        got += list(t.events(duration=0.05))
    return got + list(t.events(duration=0.1))


def timed(fn, *args) -> float:
    t0 = time.monotonic_ns()
    try:
        fn(*args)
    except socket.gaierror:
        pass
    return time.monotonic_ns() - t0


@covers("gethostlatency", "uprobe")
def test_the_three_functions_and_a_failure():
    me = os.getpid()
    with GetHostLatency(pid=me) as t:
        assert t.functions == ("getaddrinfo", "gethostbyname", "gethostbyname2")
        spans = [timed(socket.getaddrinfo, "localhost", None),
                 timed(LIBC.gethostbyname, b"localhost"),
                 timed(LIBC.gethostbyname2, b"localhost", socket.AF_INET),
                 timed(socket.getaddrinfo, "localhost", "no-such-service-pytrace")]
        evs = lookups(t, 4)
    comm = open("/proc/self/comm").read().strip()
    assert [(e.function, e.host, e.pid, e.comm) for e in evs] == \
        [("getaddrinfo", "localhost", me, comm), ("gethostbyname", "localhost", me, comm),
         ("gethostbyname2", "localhost", me, comm), ("getaddrinfo", "localhost", me, comm)]
    assert evs[0].ret == 0 and evs[3].ret == socket.EAI_SERVICE
    assert evs[1].ret == 0 and evs[2].ret == 0     # found (a struct hostent *, not a number to show)
    for e, span in zip(evs, spans):
        assert 0 < e.latency_ns <= span


def test_pid_filter_with_a_child_process():
    child = subprocess.Popen([sys.executable, "-c",
                              "import socket, sys; sys.stdin.readline(); socket.getaddrinfo('localhost', 80)"],
                             stdin=subprocess.PIPE)
    try:
        with GetHostLatency(pid=child.pid) as t:
            assert t.libc_path.startswith(f"/proc/{child.pid}/root/")
            socket.getaddrinfo("localhost", None)           # ours: not reported
            child.stdin.write(b"go\n")
            child.stdin.flush()
            child.wait(10)
            evs = lookups(t, 1)
    finally:
        child.kill()
        child.wait()
    assert [(e.pid, e.function, e.host, e.ret) for e in evs] == [(child.pid, "getaddrinfo", "localhost", 0)]


def test_libc_is_found_and_can_be_given():
    path = find_libc()
    assert os.path.isfile(path) and "libc" in os.path.basename(path)
    with GetHostLatency(pid=os.getpid(), libc=os.path.realpath(path)) as t:
        assert t.libc_path == os.path.realpath(path)
        socket.getaddrinfo("localhost", None)
        assert [e.host for e in lookups(t, 1)] == ["localhost"]


def test_a_library_without_getaddrinfo_is_one_line_and_status_1():
    r = run_cli("gethostlatency", "--libc", sys.executable)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "getaddrinfo" in r.stderr, r.stderr


def test_cli_text_and_json():
    me = str(os.getpid())
    cli = started("gethostlatency", "-p", me, links=6)
    cj = started("gethostlatency", "-p", me, "--json", links=6)
    try:
        socket.getaddrinfo("localhost", None)
        line = cli.read_until(lambda s: s.endswith(" localhost"))
        jline = cj.read_until(lambda s: s.startswith("{"))
    finally:
        rc, lines, err = cli.stop()
        rcj, _, errj = cj.stop()
    assert rc == 0 and rcj == 0, err + errj
    assert lines[0].split() == ["TIME", "PID", "COMM", "LATms", "HOST"]
    cols = line.split()
    time.strptime(cols[0], "%H:%M:%S")
    assert cols[1] == me and re.fullmatch(r"\d+\.\d\d", cols[3]) and cols[4] == "localhost"   # BCC's %10.2f
    rec = json.loads(jline)
    assert (rec["pid"], rec["function"], rec["host"], rec["ret"]) == (int(me), "getaddrinfo", "localhost", 0)
    assert rec["latency_ns"] > 0 and rec["latency_ms"] == round(rec["latency_ns"] / 1e6, 3)


def test_gethostbyname_ret_says_found_or_not():
    """Issue 20: ret of gethostbyname was a pointer's low half; now 0 found, -1 not found."""
    with GetHostLatency(pid=os.getpid()) as t:
        LIBC.gethostbyname(b"localhost")
        LIBC.gethostbyname(b"no-such-host.invalid")
        evs = lookups(t, 2)
    assert [(e.function, e.host, e.ret) for e in evs] == [("gethostbyname", "localhost", 0),
                                                         ("gethostbyname", "no-such-host.invalid", -1)]


@pytest.mark.parametrize("args", [["-p", "x"], ["--libc", "/no/such/libc.so.6"], ["-p", "999999999"],
                                  ["--hook", "kprobe"], ["-l"]])
def test_bad_input(args):
    bad_input("gethostlatency", *args)


def test_nothing_left_attached():
    released_after_exit("gethostlatency")
