"""solisten against real listen() calls: port, address, family and the
effective backlog (clamped to the socket's netns somaxconn), failures,
filters, CLI."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys

import pytest

from helpers import PY_COMM, Cli, released_on, run_cli, usage_error
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.core.netattach import in_netns
from pytrace.tools.solisten import SoListen, netns_inode

ME = os.getpid()
MY_COMM = open("/proc/self/comm").read().strip()
HOST_NS = netns_inode()


def somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as fh:
        return int(fh.read())


def do_listen(host: str, backlog: int, sock: socket.socket | None = None) -> tuple[socket.socket, int]:
    s = sock or socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    s.listen(backlog)
    return s, s.getsockname()[1]


def mine(events, *ports) -> list:
    return [e for e in events if e.lport in ports]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_listen_exact(host):
    with SoListen() as tracer:
        s, port = do_listen(host, 7)
        events = mine(tracer.events(duration=0.3), port)
        assert tracer.lost == 0
    s.close()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    assert [(e.pid, e.comm, e.family, e.proto, e.laddr, e.lport, e.backlog, e.ret, e.netns) for e in events] == [
        (ME, MY_COMM, fam, "TCPv6" if ":" in host else "TCPv4", ipaddress.ip_address(host), port, 7, 0, HOST_NS)]


def test_backlog_above_somaxconn_is_clamped():
    limit = somaxconn()
    with SoListen(pid=ME) as tracer:
        big, p1 = do_listen("127.0.0.1", limit + 100)
        neg = socket.socket()
        neg.bind(("0.0.0.0", 0))
        p2 = neg.getsockname()[1]
        # a negative backlog is the largest unsigned one to the kernel, clamped too
        # (CPython's listen() turns it into 0: call libc directly)
        assert ctypes.CDLL(None).listen(neg.fileno(), -1) == 0
        events = mine(tracer.events(duration=0.3), p1, p2)
    big.close()
    neg.close()
    assert [(str(e.laddr), e.lport, e.backlog) for e in events] == [
        ("127.0.0.1", p1, limit), ("0.0.0.0", p2, limit)]


def test_somaxconn_of_the_sockets_netns_and_netns_filter():
    ns = f"pt-solisten-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.somaxconn=64"], check=True)
        inode = os.stat(f"/run/netns/{ns}").st_ino
        with in_netns(ns):
            inside = socket.socket(socket.AF_INET6)
        with SoListen(netns=inode) as tracer:
            host, hport = do_listen("127.0.0.1", 1000)     # other netns: filtered out
            inside, port = do_listen("::", 1000, inside)
            events = list(tracer.events(duration=0.3))
        host.close()
        inside.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert [(e.pid, e.netns, e.proto, str(e.laddr), e.lport, e.backlog) for e in events] == [
        (ME, inode, "TCPv6", "::", port, 64)]


def test_relisten_and_failed_listen():
    """listen() again changes the backlog of a listening socket; a listen()
    that cannot take the port fails with EADDRINUSE and shows it."""
    a, b = socket.socket(), socket.socket()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    b.bind(("127.0.0.1", port))          # both may bind while neither listens
    with SoListen(hook="tracepoint", pid=ME) as tracer:
        a.listen(7)
        a.listen(3)
        with pytest.raises(OSError) as exc:
            b.listen(5)
        assert exc.value.errno == errno.EADDRINUSE
        events = mine(tracer.events(duration=0.3), port)
    a.close()
    b.close()
    assert [(e.pid, e.lport, e.backlog, e.ret) for e in events] == [
        (ME, port, 7, 0), (ME, port, 3, 0), (ME, port, 5, -errno.EADDRINUSE)]


def test_pid_filter():
    code = ("import socket, sys; sys.stdin.readline(); s = socket.socket(); s.bind(('127.0.0.1', 0)); "
            "s.listen(5); print(s.getsockname()[1], flush=True); sys.stdin.readline()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with SoListen(pid=proc.pid) as tracer:
            own, oport = do_listen("127.0.0.1", 5)      # this process: filtered out
            proc.stdin.write("go\n")
            proc.stdin.flush()
            port = int(proc.stdout.readline())
            events = list(tracer.events(duration=0.3))
        own.close()
    finally:
        proc.communicate("\n", timeout=10)
    assert [(e.pid, e.comm, e.lport, e.backlog) for e in events] == [(proc.pid, PY_COMM, port, 5)]


@pytest.mark.parametrize("hook", variants(SoListen))
def test_every_hook_variant_sees_a_new_listener(hook):
    with opened(SoListen, hook, pid=ME) as tracer:
        assert tracer.variant.hook == hook
        s, port = do_listen("::1", 9)
        events = list(tracer.events(duration=0.3))
    s.close()
    assert [(e.proto, str(e.laddr), e.lport, e.backlog, e.ret) for e in events] == [("TCPv6", "::1", port, 9, 0)]


def test_kprobe_variant_passes_the_verifier():
    """Even where kprobes cannot attach (the matrix attaches it where they can)."""
    variant = next(v for v in SoListen.VARIANTS if v.hook == "kprobe")
    with BpfObject("solisten", programs=set(variant.programs)):
        pass


# -- CLI ------------------------------------------------------------------------

def test_cli_columns():
    cli = Cli("solisten", "-p", str(ME))
    header = cli.read_until(lambda l: "ADDR" in l)
    assert header.split() == ["PID", "COMM", "PROTO", "BACKLOG", "PORT", "ADDR"]
    s, port = do_listen("127.0.0.1", 7)
    line = cli.read_until(lambda l: f" {port} " in l)
    rc, _, err = cli.stop()
    s.close()
    assert rc == 0, err
    assert line.split() == [str(ME), MY_COMM[:12], "TCPv4", "7", str(port), "127.0.0.1"]


def test_cli_show_netns_ret_and_time():
    cli = Cli("solisten", "-p", str(ME), "--show-netns", "--ret", "-t")
    header = cli.read_until(lambda l: "ADDR" in l)
    assert header.split() == ["TIME", "PID", "COMM", "NETNS", "PROTO", "BACKLOG", "PORT", "ADDR", "RET"]
    s, port = do_listen("::1", 3)
    line = cli.read_until(lambda l: f" {port} " in l)
    cli.stop()
    s.close()
    assert line.split()[1:] == [str(ME), MY_COMM[:12], str(HOST_NS), "TCPv6", "3", str(port), "::1", "0"]


def test_cli_json():
    cli = Cli("solisten", "--json", "-p", str(ME))
    s, port = do_listen("127.0.0.1", somaxconn() + 1)
    assert cli.read_until(lambda l: '"backlog"' in l)
    rc, _, err = cli.stop()
    s.close()
    assert rc == 0, err
    recs = cli.json_records()
    assert [(r["pid"], r["proto"], r["lport"], r["laddr"], r["backlog"], r["netns"], r["ret"]) for r in recs] == [
        (ME, "TCPv4", port, "127.0.0.1", somaxconn(), HOST_NS, 0)]


def test_ebpf_prints_the_source():
    r = run_cli("solisten", "--ebpf")
    assert r.returncode == 0
    assert 'SEC("fexit/inet_listen")' in r.stdout and "sk_max_ack_backlog" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["-p", "x"], "-p"),
    (["-n", "-1"], "-n"),
    (["-n", "99999999999"], "-n"),
    (["-p", "0"], "-p"),
    (["--hook", "raw_tp"], "--hook"),
    (["-4"], "-4"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("solisten", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_loaded_after_exit(sig):
    held = released_on(sig, "solisten")
    assert len(held) == 2       # listen enter and exit
