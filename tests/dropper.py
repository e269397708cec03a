"""Test scaffolding for losses: two test hosts joined by a veth pair, and a tc
ingress program (tests/bpf/testdrop.bpf.c) that drops chosen TCP data segments
at the receiver.

    with TwoHosts("retrans") as net, Dropper(port, skip=2, count=1, dev=net.dev_b, ns=net.ns_b) as d:
        srv = net.socket_b(...)    # sockets are created inside the namespaces
        ...
        d.dropped_seqs             # sequence numbers of the segments it dropped

Everything is bounded and removed on exit: the tc filter and clsact qdisc go
with the BpfObject (core/netattach.py), the namespaces (and with them the
veth pair) with TwoHosts.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess

from scaffolding import bpf_object
from pytrace.core import netattach
from pytrace.core.bpfobject import BpfObject


def ip_batch(lines: list[str], ns: str | None = None, *, force: bool = False) -> None:
    """ip commands, one a line, run by one ip process (ip -batch), in
    namespace ns if given: an ip started costs ~0.3 s under the kernel lab's
    TCG, and a pair of test hosts took ~17 of them.  It stops at the first
    command that fails (and raises), or with force runs them all."""
    subprocess.run(["ip", *(["-force"] if force else []), *(["-n", ns] if ns else []), "-batch", "-"],
                   input="".join(f"{line}\n" for line in lines), check=not force, capture_output=True, text=True)


SIOCGIFHWADDR = 0x8927


def ifreq(ns: str, dev: str, request: int) -> bytes:
    """A device's struct ifreq as an ioctl (SIOCGIF...) fills it, from a socket of its namespace."""
    with netattach.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", dev.encode()))


class TwoHosts:
    """Namespaces A and B, veth a0 <-> b0, 192.0.2.1/24 + 2001:db8::1 on A, .2 / ::2 on B."""

    V4 = ("192.0.2.1", "192.0.2.2")
    V6 = ("2001:db8::1", "2001:db8::2")

    def __init__(self, tag: str):
        base = f"pt-{tag}-{os.getpid()}"
        self.ns_a, self.ns_b = f"{base}-a", f"{base}-b"
        self.dev_a, self.dev_b = "a0", "b0"

    def __enter__(self) -> "TwoHosts":
        try:
            ip_batch([f"netns add {self.ns_a}", f"netns add {self.ns_b}"])
            for ns, dev, v4, v6 in ((self.ns_a, self.dev_a, self.V4[0], self.V6[0]),
                                    (self.ns_b, self.dev_b, self.V4[1], self.V6[1])):
                veth = [f"link add {dev} type veth peer name {self.dev_b} netns {self.ns_b}"] if ns == self.ns_a else []
                ip_batch([*veth, f"addr add {v4}/24 dev {dev}", f"addr add {v6}/64 dev {dev} nodad",
                          f"link set {dev} up", "link set lo up"], ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        ip_batch([f"netns del {self.ns_a}", f"netns del {self.ns_b}"], force=True)

    @staticmethod
    def _socket(ns: str, family: int) -> socket.socket:
        with netattach.in_netns(ns):
            return socket.socket(family, socket.SOCK_STREAM)

    def socket_a(self, family: int = socket.AF_INET) -> socket.socket:
        return self._socket(self.ns_a, family)

    def socket_b(self, family: int = socket.AF_INET) -> socket.socket:
        return self._socket(self.ns_b, family)

    def addrs(self, family: int) -> tuple[str, str]:
        return self.V6 if family == socket.AF_INET6 else self.V4


class Dropper:
    """Drop data segments to `port` at dev's tc ingress: let `skip` through, drop `count`.

    data_only=False counts (and drops) every segment to the port, pure ACKs too.
    """

    def __init__(self, port: int, *, skip: int = 0, count: int = 1, dev: str = "lo", ns: str | None = None,
                 data_only: bool = True):
        self.obj = BpfObject(bpf_object("testdrop"), programs={"testdrop_ingress"},
                             rodata={"target_port": port, "skip": skip, "count": count, "data_only": data_only})
        self.dev, self.ns = dev, ns

    def __enter__(self) -> "Dropper":
        try:
            self.obj.load()
            netattach.attach_tc(self.obj, "testdrop_ingress", self.dev, "ingress", self.ns)
        except BaseException:
            self.obj.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.obj.close()

    def _bss(self) -> bytes:
        return self.obj.map(".bss").lookup(b"\0\0\0\0")

    def _u32(self, name: str) -> int:
        return struct.unpack_from("<I", self._bss(), self.obj.types.var(".bss", name).offset)[0]

    @property
    def seen(self) -> int:
        return self._u32("seen")

    @property
    def dropped(self) -> int:
        return self._u32("dropped")

    @property
    def dropped_seqs(self) -> list[int]:
        var = self.obj.types.var(".bss", "dropped_seq")
        seqs = struct.unpack_from(f"<{var.count}I", self._bss(), var.offset)
        return list(seqs[:min(self.dropped, var.count)])


def total_retrans(sock: socket.socket) -> int:
    """tcpi_total_retrans from TCP_INFO: the kernel's own count of this socket's retransmits."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("<I", info, 100)[0]


def netstat(ns: str, name: str) -> int:
    """A TcpExt/IpExt counter (e.g. "TCPLossProbes") of namespace ns, from /proc/net/netstat."""
    with netattach.in_netns(ns):
        with open("/proc/thread-self/net/netstat") as fh:
            lines = fh.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        names, values = head.split()[1:], vals.split()[1:]
        if name in names:
            return int(values[names.index(name)])
    raise KeyError(name)
