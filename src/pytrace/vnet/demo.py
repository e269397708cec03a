"""The demo topology: a container overlay on two "hosts", built from namespaces.

    cA (198.51.100.1)                                     cB (198.51.100.2)
     eth0                                                  eth0
      |  veth                                               |  veth
     veth0 --- br0 --- vx0 (VXLAN 42) ~~~~~~~~~~~ vx0 --- br0 --- veth0
                        ul0 192.0.2.1 ------- ul0 192.0.2.2
     host A (netns hA)          underlay veth          host B (netns hB)

Like flannel's VXLAN backend, but bridged: each host's bridge joins its
container's veth to the VXLAN device, whose packets cross the underlay link.
The namespaces carry a unique tag (default: our pid), so several demos and
tests can run at once; deleting them removes every device, qdisc and tc
filter inside.  Each also carries its owner's mark (core/owner.py), so what
a killed demo leaves is removed by the next run (core/leftovers.py).
Traffic is a bounded UDP echo from cA to cB.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from ..core.errors import PytraceError
from ..core.netattach import create_netns, delete_netns, in_netns
from ..core.stops import releasing
from .config import ROLE_ANY, Point, Selector

OVERLAY = "198.51.100.0/24"
ADDR = {"cA": "198.51.100.1", "cB": "198.51.100.2", "hA": "192.0.2.1", "hB": "192.0.2.2"}
MAC = {"cA": "02:00:c6:33:64:01", "cB": "02:00:c6:33:64:02"}
VNI, VXLAN_PORT, ECHO_PORT = 42, 4789, 7000

# (label, namespace role, device, direction, method): every hop, both directions,
# in path order.  All four methods appear: tc, XDP and both device tracepoints.
HOPS_AB = (("cA.eth0.out", "cA", "eth0", "egress", "tracepoint"),
           ("hA.veth0.in", "hA", "veth0", "ingress", "tc"),
           ("hA.vx0.out", "hA", "vx0", "egress", "tc"),
           ("hA.ul0.out", "hA", "ul0", "egress", "tracepoint"),
           ("hB.ul0.in", "hB", "ul0", "ingress", "xdp"),
           ("hB.vx0.in", "hB", "vx0", "ingress", "tc"),
           ("hB.veth0.out", "hB", "veth0", "egress", "tc"),
           ("cB.eth0.in", "cB", "eth0", "ingress", "tracepoint"))
HOPS_BA = (("cB.eth0.out", "cB", "eth0", "egress", "tracepoint"),
           ("hB.veth0.in", "hB", "veth0", "ingress", "tc"),
           ("hB.vx0.out", "hB", "vx0", "egress", "tc"),
           ("hB.ul0.out", "hB", "ul0", "egress", "tracepoint"),
           ("hA.ul0.in", "hA", "ul0", "ingress", "xdp"),
           ("hA.vx0.in", "hA", "vx0", "ingress", "tc"),
           ("hA.veth0.out", "hA", "veth0", "egress", "tc"),
           ("cA.eth0.in", "cA", "eth0", "ingress", "tracepoint"))


def _ip(args: list[str], what: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PytraceError(f"demo: {what}: {proc.stderr.strip() or proc.returncode}")


def _ip_batch(ns: str, commands: list[str]) -> None:
    proc = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise PytraceError(f"demo: setting up {ns}: {proc.stderr.strip()}")


class Topology:
    """The two-host overlay; a context manager that removes everything it made."""

    def __init__(self, tag: str | None = None):
        tag = tag or str(os.getpid())
        self.ns = {role: f"pt-vnet-{role}-{tag}" for role in ("hA", "hB", "cA", "cB")}
        self.made: list[str] = []

    def __enter__(self) -> "Topology":
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with releasing():       # a stop waits until every namespace is gone (core/stops)
            self.destroy()

    def create(self) -> None:
        for role, name in self.ns.items():
            try:
                create_netns(name, "vnet-demo")
            except PytraceError as exc:
                raise PytraceError(f"demo: {exc} (another demo with this tag?)") from None
            self.made.append(name)
            with in_netns(name):   # /proc/sys/net is the calling thread's namespace
                for key in ("all", "default"):
                    with open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "w") as fh:
                        fh.write("1")   # no router solicitations or MLD in the records
        ns = self.ns
        for side in "AB":
            _ip(["link", "add", "veth0", "netns", ns[f"h{side}"], "type", "veth", "peer", "name", "eth0",
                 "netns", ns[f"c{side}"]], f"veth pair for c{side}")
        _ip(["link", "add", "ul0", "netns", ns["hA"], "type", "veth", "peer", "name", "ul0",
             "netns", ns["hB"]], "underlay link")
        for side, other in (("A", "B"), ("B", "A")):
            h, c = f"h{side}", f"c{side}"
            _ip_batch(ns[h], [
                "link set lo up",
                f"addr add {ADDR[h]}/24 dev ul0",
                "link set ul0 up",
                "link add br0 type bridge",
                "link set br0 up",
                "link set veth0 master br0",
                "link set veth0 up",
                f"link add vx0 type vxlan id {VNI} local {ADDR[h]} remote {ADDR['h' + other]} "
                f"dstport {VXLAN_PORT} dev ul0",
                "link set vx0 master br0",
                "link set vx0 up",
            ])
            _ip_batch(ns[c], [
                "link set lo up",
                f"link set eth0 address {MAC[c]} mtu 1450",
                f"addr add {ADDR[c]}/24 dev eth0",
                "link set eth0 up",
                # static neighbours: no ARP exchange before (or during) the traffic
                f"neigh add {ADDR['c' + other]} lladdr {MAC['c' + other]} dev eth0 nud permanent",
            ])

    def destroy(self) -> None:
        while self.made:
            delete_netns(self.made.pop())

    # -- what to trace ---------------------------------------------------------------
    def points(self, both_ways: bool = True) -> list[Point]:
        hops = HOPS_AB + (HOPS_BA if both_ways else ())
        return [Point(lbl, dev, self.ns[role], d, m, "demo") for lbl, role, dev, d, m in hops]

    @staticmethod
    def path_ab() -> list[str]:
        return [h[0] for h in HOPS_AB]

    @staticmethod
    def path_ba() -> list[str]:
        return [h[0] for h in HOPS_BA]

    @staticmethod
    def selector(sample: int = 1) -> Selector:
        return Selector(protocol=0, prefixes=((ROLE_ANY, ipaddress.ip_network(OVERLAY)),), sample=sample)

    # -- traffic ----------------------------------------------------------------------
    def udp_echo(self, count: int, size: int = 200, burst: int = 1, port: int = ECHO_PORT,
                 client_port: int = 0, timeout: float = 5.0) -> "EchoResult":
        """count datagrams cA -> cB, each echoed back; sent `burst` at a time.

        Each payload starts with its sequence number, so no two packets share
        an ID.  Bounded: gives up on a burst after `timeout` seconds."""
        size = max(16, min(size, 1400))
        with in_netns(self.ns["cB"]):
            srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with in_netns(self.ns["cA"]):
            cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            srv.bind((ADDR["cB"], port))
            srv.settimeout(timeout)
            cli.bind((ADDR["cA"], client_port))
            cli.settimeout(timeout)
            echoed = [0]

            def serve() -> None:
                try:
                    for _ in range(count):
                        data, peer = srv.recvfrom(2048)
                        srv.sendto(data, peer)
                        echoed[0] += 1
                except OSError:
                    pass
            server = threading.Thread(target=serve, daemon=True)
            server.start()
            received = 0
            seq = 0
            pad = bytes(size - 8)
            while seq < count:
                n = min(burst, count - seq)
                for _ in range(n):
                    cli.sendto(struct.pack("!Q", seq) + pad, (ADDR["cB"], port))
                    seq += 1
                try:
                    for _ in range(n):
                        cli.recvfrom(2048)
                        received += 1
                except OSError:
                    break
            server.join(timeout)
            return EchoResult(seq, echoed[0], received, cli.getsockname()[1], port, size)
        finally:
            srv.close()
            cli.close()

    def tbf(self, role: str, dev: str, rate: str = "4mbit", burst: str = "1600", limit: str = "200kb") -> None:
        """A token-bucket qdisc on one hop (removed with the namespace)."""
        proc = subprocess.run(["tc", "-n", self.ns[role], "qdisc", "add", "dev", dev, "root", "tbf",
                               "rate", rate, "burst", burst, "limit", limit], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PytraceError(f"demo: tbf on {role}/{dev}: {proc.stderr.strip()}")


@dataclass(frozen=True)
class EchoResult:
    sent: int          # datagrams cA -> cB
    echoed: int        # answered by cB
    received: int      # replies back at cA
    client_port: int
    server_port: int
    size: int          # UDP payload bytes


def settle(seconds: float = 0.1) -> None:
    """Let the last packets' records reach the ring (a bounded pause)."""
    time.sleep(seconds)
