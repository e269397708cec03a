"""Test helpers: real traffic on loopback or in test namespaces, and a CLI runner.

Every helper here is bounded in count and time, and cleans up what it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

PYTRACE = [sys.executable, "-m", "pytrace.cli"]
# The command name of a child started as [sys.executable, ...]: the kernel
# takes it from the file exec'd ("python" in a venv, "python3" elsewhere).
PY_COMM = os.path.basename(sys.executable)[:15]


def free_port(family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


class Connection:
    """What one loopback TCP connection looked like from both ends."""

    def __init__(self, family: int, server_port: int, client_port: int, client_pid: int):
        self.family, self.server_port, self.client_port, self.client_pid = family, server_port, client_port, client_pid


class LoopbackPair:
    """One loopback TCP connection kept open: the listener srv (port), the
    client cli (cport) and the accepted acc.  nodelay: TCP_NODELAY on both
    ends, so each request/response of exchange() is its own segment."""

    def __init__(self, host: str = "127.0.0.1", nodelay: bool = False):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.srv = socket.socket(family, socket.SOCK_STREAM)
        self.srv.bind((host, 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.cli = socket.create_connection((host, self.port))
        self.acc, _ = self.srv.accept()
        self.cport = self.cli.getsockname()[1]
        if nodelay:
            for s in (self.cli, self.acc):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(self, n: int, size: int = 64) -> None:
        """n request/response pairs of size bytes each way."""
        for _ in range(n):
            self.cli.sendall(b"q" * size)
            self.acc.recv(size)
            self.acc.sendall(b"a" * size)
            self.cli.recv(size)

    def close(self) -> None:
        for s in (self.cli, self.acc, self.srv):
            s.close()


def tcp_roundtrip(host: str = "127.0.0.1", port: int | None = None, send: bytes = b"ping",
                  reply: bytes = b"pong", server_first_close: bool = False) -> Connection:
    """One full TCP connection in this process: listen, connect, exchange, close.

    The client closes first (so it goes FIN_WAIT1/2 and the server CLOSE_WAIT/LAST_ACK)
    unless server_first_close.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port or 0))
    srv.listen(8)
    sport = srv.getsockname()[1]
    cli = socket.create_connection((host, sport), timeout=5)
    cport = cli.getsockname()[1]
    acc, _ = srv.accept()
    cli.sendall(send)
    got = b""
    while len(got) < len(send):
        got += acc.recv(65536)
    acc.sendall(reply)
    got = b""
    while len(got) < len(reply):
        got += cli.recv(65536)
    first, second = (acc, cli) if server_first_close else (cli, acc)
    first.shutdown(socket.SHUT_WR)
    second.recv(16)          # wait for the FIN
    second.close()
    first.recv(16)           # wait for the peer's FIN, then close
    first.close()
    srv.close()
    return Connection(family, sport, cport, os.getpid())


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    total = (total >> 16) + (total & 0xffff)
    total += total >> 16
    return ~total & 0xffff


def socket_drop() -> tuple[int, int]:
    """A TCP segment dropped by an established loopback socket of this process
    (drop reason TCP_INVALID_SEQUENCE): a segment far outside its window,
    written with a raw socket.  Returns (the receiver's port, the sender's)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=5)
    acc, _ = srv.accept()
    sport, dport = cli.getsockname()[1], srv.getsockname()[1]
    lo = socket.inet_aton("127.0.0.1")
    # seq half the sequence space away from anything in the window; ACK|PSH, 8 bytes
    head = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (0x7fff0000).to_bytes(4, "big") + \
        (1).to_bytes(4, "big") + bytes([5 << 4, 0x18]) + (65535).to_bytes(2, "big")
    payload = b"outside!"
    pseudo = lo + lo + bytes([0, socket.IPPROTO_TCP]) + (20 + len(payload)).to_bytes(2, "big")
    tcp = head + _inet_checksum(pseudo + head + b"\0\0\0\0" + payload).to_bytes(2, "big") + b"\0\0" + payload
    ip = bytes([0x45, 0]) + (20 + len(tcp)).to_bytes(2, "big") + bytes(4) + bytes([64, socket.IPPROTO_TCP]) + \
        bytes(2) + lo + lo
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        raw.sendto(ip + tcp, ("127.0.0.1", 0))
    finally:
        raw.close()
    time.sleep(0.05)
    for s in (cli, acc, srv):
        s.close()
    return dport, sport


def syn_retransmit(host: str = "127.0.0.1") -> tuple[int, int]:
    """A loopback connect whose first SYN is dropped (the listener's accept
    queue is full) and resent after the initial RTO (1 s): a retransmission
    (SYN_SENT) of this process, in about 1 s.  Returns (listener port,
    the resending client's port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(0)                                   # room for one waiting connection
    port = srv.getsockname()[1]
    first = socket.create_connection((host, port), timeout=5)
    second = socket.socket(family)
    second.setblocking(False)
    second.connect_ex((host, port))                 # its SYN is dropped: the queue is full
    # the SYN is resent at 1 s, later on a loaded machine: wait for the kernel to say it was
    resent = wait_until(lambda: retransmissions(second) >= 1, timeout=10)
    client_port = second.getsockname()[1]
    for s in (first, second, srv):
        s.close()
    assert resent, "the kernel did not resend the SYN within 10 s"
    return port, client_port


TCPI_TOTAL_RETRANS = 100        # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h)


def retransmissions(sock: socket.socket) -> int:
    """The segments this socket has retransmitted (TCP_INFO's tcpi_total_retrans)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(info[TCPI_TOTAL_RETRANS:TCPI_TOTAL_RETRANS + 4], "little")


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def has_bpf_link(pid: int) -> bool:
    """True once the process holds a BPF link (or a perf-event tracepoint attachment)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in ("anon_inode:bpf_link", "anon_inode:[perf_event]"):
                return True
    except FileNotFoundError:
        pass
    return False


class Cli:
    """A pytrace command running in the background, its stdout read line by line."""

    def __init__(self, *args: str, env: dict | None = None, ready: bool = True, prefix: list[str] | None = None):
        self.proc = subprocess.Popen([*(prefix or []), *PYTRACE, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.seen: list[str] = []
        # stderr is read all along too: a command that says much there (-v)
        # would otherwise block on a full pipe
        self._err: list[str] = []
        self._err_done = threading.Thread(target=lambda: self._err.extend(self.proc.stderr), daemon=True)
        self._err_done.start()
        threading.Thread(target=self._pump, daemon=True).start()
        if ready and not wait_until(lambda: has_bpf_link(self.proc.pid) or self.proc.poll() is not None, 15):
            self.stop()
            raise AssertionError(f"pytrace {' '.join(args)} did not attach in time")
        if ready and self.proc.poll() is not None:
            raise AssertionError(f"pytrace {' '.join(args)} exited: {self.stderr()}")

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, pred: Callable[[str], bool], timeout: float = 5.0) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if pred(line):
                return line
        return None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int, list[str], str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        while True:
            try:
                line = self.lines.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return rc, self.seen, self.stderr()

    def stderr(self) -> str:
        """Everything the command wrote to stderr (once it has exited)."""
        self._err_done.join(10)
        return "".join(self._err)

    def json_records(self) -> list[dict]:
        return [json.loads(line) for line in self.seen if line.startswith("{")]


def captured_output():
    """A CLI Output (cli/cliutil) whose bytes stay in memory, as stdout would
    get them; printed_lines() reads them back."""
    import io
    from pytrace.cli.cliutil import Output
    return Output(False, io.TextIOWrapper(io.BytesIO(), write_through=True))


def printed_lines(out) -> list[str]:
    return out.stream.buffer.getvalue().decode().splitlines()


def run_cli(*args: str, timeout: float = 30, env: dict | None = None,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), *PYTRACE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def bpf_progs() -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def bpf_prog_ids(pid: int | None = None) -> set[int]:
    """IDs of the BPF programs loaded now, or of those a process holds an fd to."""
    if pid is None:
        return {p["id"] for p in bpf_progs()}
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                for line in fh:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def released(progs: set[int], timeout: float = 5.0) -> bool:
    """True once none of these program IDs is loaded (the kernel frees a
    program asynchronously after its last reference goes)."""
    return wait_until(lambda: not progs & bpf_prog_ids(), timeout, 0.05)


def bpf_prog_names() -> set[str]:
    """Names of every BPF program loaded in the kernel right now (via bpftool)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p.get("name", "") for p in json.loads(out.stdout or "[]")}


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run this thread in network namespace ns: sockets made here stay in it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        libc.setns(own, _CLONE_NEWNET)
        os.close(own)
        os.close(target)


@contextlib.contextmanager
def netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def usage_error(tool: str, args: list[str], needle: str) -> None:
    """Bad input: status 2, nothing on stdout, one line on stderr naming needle."""
    r = run_cli(tool, *args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr


def released_on(sig: int, tool: str, *args: str) -> set[int]:
    """Start the CLI and stop it with sig: status 0, and every BPF program it
    held is gone from the kernel.  Returns the IDs of those programs."""
    cli = Cli(tool, *args)
    held = bpf_prog_ids(cli.proc.pid)
    assert held
    rc, _, err = cli.stop(sig)
    assert rc == 0, err
    assert wait_until(lambda: not held & bpf_prog_ids(), 5)
    return held


def kernel_map_flags(fd: int) -> int:
    """map_flags of a loaded map as the kernel created it (bpf_map_info), not
    as libbpf's object declares it."""
    import ctypes as C
    from pytrace.core import libbpf

    class MapInfo(C.Structure):     # the head of struct bpf_map_info; the kernel copies what fits
        _fields_ = [("type", C.c_uint32), ("id", C.c_uint32), ("key_size", C.c_uint32),
                    ("value_size", C.c_uint32), ("max_entries", C.c_uint32), ("map_flags", C.c_uint32)]
    info, size = MapInfo(), C.c_uint32(C.sizeof(MapInfo))
    get = libbpf.lib().bpf_obj_get_info_by_fd
    get.argtypes = [C.c_int, C.c_void_p, C.POINTER(C.c_uint32)]
    assert get(fd, C.byref(info), C.byref(size)) == 0
    return info.map_flags
