"""Start a pytrace command in the background and return once ALL its programs
are attached: a tool with many programs holds its first link well before its
last one, and traffic made in between would be missed."""

from __future__ import annotations

import os

from helpers import Cli, wait_until


def bpf_links(pid: int) -> int:
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf_link"
            except OSError:
                continue
    except FileNotFoundError:
        pass
    return n


def started(*args: str, links: int, env: dict | None = None) -> Cli:
    """Cli(*args) once the process holds `links` BPF links (one per attached program)."""
    cli = Cli(*args, ready=False, env=env)
    pid = cli.proc.pid
    if not wait_until(lambda: bpf_links(pid) >= links or cli.proc.poll() is not None, 20):
        cli.stop()
        raise AssertionError(f"pytrace {' '.join(args)}: {links} links not attached in time")
    if cli.proc.poll() is not None:
        raise AssertionError(f"pytrace {' '.join(args)} exited: {cli.stderr()}")
    return cli


def n_programs(cls, hook: str) -> int:
    """How many programs (links) the hook variant of a tool class attaches."""
    return len(next(v for v in cls.VARIANTS if v.hook == hook).programs)


def udp_connects_recorded(path: str, n: int) -> None:
    """A recording at path (udpconnect --record) of n UDP connects of this
    process, to distinct ports: `pytrace replay path` prints n + 1 lines
    (the header, a line a connect), ~57 bytes each."""
    import signal
    import socket
    from pytrace.tools.udpconnect import UdpConnect
    cli = started("udpconnect", "-p", str(os.getpid()), "--record", path, links=n_programs(UdpConnect, "tracepoint"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for i in range(n):
            u.connect(("127.0.0.1", 1024 + i))
    rc, _, err = cli.stop(signal.SIGINT)
    assert rc == 0, err
