"""Test scaffolding shared by the IP/device tool tests (tcpsynbl, superping,
ipecn, netsize, nettxlat, qdisclat, skbdrop, skblife, tcpwin, tcpnagle,
gethostlatency): a quiet pair of test hosts, ICMP echo from Python, UDP
from inside a namespace, and the checks every tool gets (variants that
cannot attach here still verify; nothing stays loaded after the CLI exits).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time

from dropper import SIOCGIFHWADDR, TwoHosts, ip_batch, ifreq
from helpers import Cli, bpf_prog_ids, run_cli, wait_until
from pytrace.core import netattach
from pytrace.core.bpfobject import BpfObject


def _mac(ns: str, dev: str) -> str:
    """A device's MAC address, aa:bb:..."""
    return ":".join(f"{b:02x}" for b in ifreq(ns, dev, SIOCGIFHWADDR)[18:24])


class QuietHosts(TwoHosts):
    """TwoHosts (namespaces A and B, veth a0 <-> b0) where nothing but the
    test's own packets crosses the veth: permanent neighbour entries (no ARP,
    no neighbour discovery) and, with ipv6=False, IPv6 off on the veth (no
    router solicitations or MLD reports)."""

    def __init__(self, tag: str, ipv6: bool = True):
        super().__init__(tag)
        self.ipv6 = ipv6

    def __enter__(self) -> "QuietHosts":
        super().__enter__()
        try:
            macs = {dev: _mac(ns, dev) for ns, dev in ((self.ns_a, self.dev_a), (self.ns_b, self.dev_b))}
            for ns, dev, peer, i in ((self.ns_a, self.dev_a, self.dev_b, 1), (self.ns_b, self.dev_b, self.dev_a, 0)):
                # `link show` first, as when it read the MACs: asking for the device has the kernel
                # settle its link state now (linkwatch), not up to a second later; till then the
                # device is not operationally up (IPv6 there waits for it)
                lines = [f"link show dev {dev}",
                         f"neigh replace {self.V4[i]} lladdr {macs[peer]} dev {dev} nud permanent"]
                if self.ipv6:
                    lines.append(f"neigh replace {self.V6[i]} lladdr {macs[peer]} dev {dev} nud permanent")
                ip_batch(lines, ns)
                if not self.ipv6:       # sysctl -w net.ipv6.conf.DEV.disable_ipv6=1, in the namespace
                    with netattach.in_netns(ns), open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as fh:
                        fh.write("1")
        except BaseException:
            self.__exit__()
            raise
        return self

    def inode(self, ns: str) -> int:
        return os.stat(f"/run/netns/{ns}").st_ino

    def udp_socket(self, ns: str, family: int = socket.AF_INET) -> socket.socket:
        with netattach.in_netns(ns):
            return socket.socket(family, socket.SOCK_DGRAM)

    def qdisc_a(self, *spec: str) -> None:
        """Give a0 (in A) a root qdisc, e.g. qdisc_a("tbf", "rate", "1mbit", ...)."""
        subprocess.run(["tc", "-n", self.ns_a, "qdisc", "replace", "dev", self.dev_a, "root", *spec], check=True,
                       capture_output=True)

    def raw_icmp(self, ns: str, family: int = socket.AF_INET) -> socket.socket:
        proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
        with netattach.in_netns(ns):
            return socket.socket(family, socket.SOCK_RAW, proto)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(sock: socket.socket, dst: str, ident: int, seq: int, payload: bytes = b"pytrace-ping") -> None:
    """Send one ICMP echo request on a raw socket.  IPv6: the kernel fills in the checksum."""
    v6 = sock.family == socket.AF_INET6
    kind = 128 if v6 else 8
    hdr = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    csum = 0 if v6 else _csum(hdr + payload)
    sock.sendto(struct.pack("!BBHHH", kind, 0, csum, ident, seq) + payload, (dst, 0))


def ping(sock: socket.socket, dst: str, ident: int, seq: int, payload: bytes = b"pytrace-ping",
         timeout: float = 2.0) -> float:
    """Send one ICMP echo request on a raw socket, wait for its reply; return the
    user-space round trip in seconds."""
    v6 = sock.family == socket.AF_INET6
    sock.settimeout(timeout)
    t0 = time.monotonic()
    echo_request(sock, dst, ident, seq, payload)
    while True:
        data = sock.recv(2048)
        if not v6:
            data = data[(data[0] & 0xF) * 4:]     # v4 raw sockets get the IP header
        rtype, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[:8])
        if rtype == (129 if v6 else 0) and (rid, rseq) == (ident, seq):
            return time.monotonic() - t0


def kprobe_programs_verify(obj_name: str, programs: set[str]) -> None:
    """Load (verify) programs whose hook this kernel cannot attach."""
    with BpfObject(obj_name, programs=programs) as obj:
        for p in programs:
            assert obj.program_fd(p) > 0


def forced_hook_fails_cleanly(tool: str, kind: str, *args: str) -> None:
    """--hook KIND where the kernel lacks KIND: one line, status 1.  (Where
    the kernel has KIND, the variant's own tests cover it.)"""
    from pytrace.core import features
    usable, _why = features.probe(kind)
    if usable:
        return
    r = run_cli(tool, "--hook", kind, *args)
    assert r.returncode == 1 and kind in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def released_after_exit(tool: str, *args: str) -> None:
    """Start the CLI, note the BPF programs it holds, stop it with SIGINT:
    status 0, and every one of those programs is gone from the kernel."""
    cli = Cli(tool, *args)
    mine = bpf_prog_ids(cli.proc.pid)
    assert mine
    rc, _lines, err = cli.stop()
    assert rc == 0, err
    assert wait_until(lambda: not mine & bpf_prog_ids(), 5)


def bad_input(tool: str, *args: str) -> None:
    r = run_cli(tool, *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
