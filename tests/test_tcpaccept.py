"""tcpaccept against real accepts: the accepting process (not the connecting
one), exact tuples v4/v6, accept() and accept4(), filters, CLI."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import PY_COMM, Cli, released_on, run_cli, usage_error
from matrix import opened, variants
from pytrace.core.bpfobject import BpfObject
from pytrace.tools.tcpaccept import TcpAccept

ME = os.getpid()
MY_COMM = open("/proc/self/comm").read().strip()

# listen, print the port, accept one connection, print the peer's port, exit
SERVER = """
import socket, sys
host = sys.argv[1]
srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
srv.bind((host, 0))
srv.listen(4)
print(srv.getsockname()[1], flush=True)
conn, peer = srv.accept()
print(peer[1], flush=True)
conn.close()
"""


def listener(host: str) -> socket.socket:
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv.bind((host, 0))
    srv.listen(8)
    return srv


def accept_one(srv: socket.socket, use_accept4: bool = True) -> int:
    """Connect to srv and accept it here; the client's port."""
    host = srv.getsockname()[0]
    c = socket.create_connection((host, srv.getsockname()[1]), timeout=5)
    if use_accept4:
        a, _ = srv.accept()                 # CPython calls accept4()
        a.close()
    else:
        fd = ctypes.CDLL(None, use_errno=True).accept(srv.fileno(), None, None)   # the plain accept syscall
        assert fd >= 0
        os.close(fd)
    port = c.getsockname()[1]
    c.close()
    return port


def mine(events, *lports) -> list:
    return [e for e in events if e.lport in lports]


@pytest.mark.parametrize("hook,host", variants(TcpAccept, each=["127.0.0.1", "::1"]))
def test_accept_exact_accept4_and_accept(hook, host):
    srv = listener(host)
    port = srv.getsockname()[1]
    addr = ipaddress.ip_address(host)
    with opened(TcpAccept, hook) as tracer:
        c1 = accept_one(srv)
        c2 = accept_one(srv, use_accept4=False)
        events = mine(tracer.events(duration=0.3), port)
        assert tracer.lost == 0
    srv.close()
    fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    assert [(e.pid, e.comm, e.family, e.raddr, e.rport, e.laddr, e.lport) for e in events] == [
        (ME, MY_COMM, fam, addr, c1, addr, port),
        (ME, MY_COMM, fam, addr, c2, addr, port)]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_pid_is_the_accepting_process_and_pid_filter(host):
    """A child accepts what this process connects: the child is reported; with
    -p child, this process's own accept (same port range, same time) is not."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, host], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    own = listener(host)
    with TcpAccept(pid=proc.pid) as tracer:
        c = socket.create_connection((host, port), timeout=5)
        cport = c.getsockname()[1]
        assert int(proc.stdout.readline()) == cport
        proc.wait(10)
        c.close()
        accept_one(own)
        events = list(tracer.events(duration=0.3))
    own.close()
    assert [(e.pid, e.comm, e.rport, e.lport) for e in events] == [(proc.pid, PY_COMM, cport, port)]


def test_port_and_family_filters():
    a4, b4, a6 = listener("127.0.0.1"), listener("127.0.0.1"), listener("::1")
    pa4, pb4, pa6 = (s.getsockname()[1] for s in (a4, b4, a6))
    with TcpAccept(lports=[pa4, pa6], family=socket.AF_INET) as tracer:
        accept_one(b4)                      # other port
        accept_one(a6)                      # other family
        c = accept_one(a4)
        events = mine(tracer.events(duration=0.3), pa4, pb4, pa6)
    for s in (a4, b4, a6):
        s.close()
    assert [(e.family, e.rport, e.lport) for e in events] == [(socket.AF_INET, c, pa4)]


def test_failed_accept_is_not_reported():
    srv = listener("127.0.0.1")
    srv.setblocking(False)
    with TcpAccept(lports=[srv.getsockname()[1]]) as tracer:
        with pytest.raises(BlockingIOError):
            srv.accept()                    # EAGAIN
        srv.setblocking(True)
        c = accept_one(srv)
        events = list(tracer.events(duration=0.3))
    srv.close()
    assert [e.rport for e in events] == [c]


def test_kprobe_variant_passes_the_verifier():
    """Even where kprobes cannot attach (the matrix attaches it where they can)."""
    with BpfObject("tcpaccept", programs=set(TcpAccept.VARIANTS[0].programs)):
        pass


# -- CLI ------------------------------------------------------------------------

def test_cli_columns_with_both_times():
    srv = listener("127.0.0.1")
    port = srv.getsockname()[1]
    cli = Cli("tcpaccept", "-T", "-t", "-P", str(port))
    header = cli.read_until(lambda l: "LPORT" in l)
    assert header.split() == ["TIME", "TIME(s)", "PID", "COMM", "IP", "RADDR", "RPORT", "LADDR", "LPORT"]
    c = accept_one(srv)
    line = cli.read_until(lambda l: l.split()[-1:] == [str(port)])
    rc, _, err = cli.stop()
    srv.close()
    assert rc == 0, err
    cols = line.split()
    time.strptime(cols[0], "%H:%M:%S")
    assert cols[1] == "0.000"
    assert cols[2:] == [str(ME), MY_COMM[:12], "4", "127.0.0.1", str(c), "127.0.0.1", str(port)]


def test_cli_json_ipv6():
    srv = listener("::1")
    port = srv.getsockname()[1]
    cli = Cli("tcpaccept", "--json", "-6", "-P", str(port))
    c = accept_one(srv)
    assert cli.read_until(lambda l: '"lport"' in l)
    rc, _, err = cli.stop()
    srv.close()
    assert rc == 0, err
    recs = cli.json_records()
    assert [(r["pid"], r["family"], r["raddr"], r["rport"], r["laddr"], r["lport"]) for r in recs] == [
        (ME, "AF_INET6", "::1", c, "::1", port)]


def test_ebpf_prints_the_source():
    r = run_cli("tcpaccept", "--ebpf")
    assert r.returncode == 0
    assert 'SEC("tracepoint/syscalls/sys_exit_accept4")' in r.stdout and "sockfd.h" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["-P", "80,x"], "-P"),
    (["-p", "abc"], "-p"),
    (["-p", "99999999999"], "-p"),
    (["-4", "-6"], "not allowed"),
    (["--hook", "tp_btf"], "--hook"),
    (["extra"], "extra"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    usage_error("tcpaccept", args, needle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_loaded_after_exit(sig):
    released_on(sig, "tcpaccept")
