"""A simulated VXLAN overlay in network namespaces, and traffic through it.

    with Simulation(hosts=3, clients=3, vnis=(100, 200)) as sim:
        flows = sim.plan(rate=20, count=10, loud="h0c1")
        for r in sim.run(flows):
            print(r.flow.src.name, "->", r.flow.dst.name, r.sent, r.received)

Topology (every name starts with the simulation's name, default pt-tm<pid>):

  <name>-ul        the underlay: bridge br0 with one port h<i> per host
  <name>-h<i>      host i: eth0 on the underlay (192.0.2.<i+1>, or
                   2001:db8::<i+1> with ipv6=True); per VNI v a VXLAN device
                   vx<v> in a bridge br<v> with the host's clients in that VNI
                   (ports c<j>)
  <name>-h<i>c<j>  client j of host i: eth0 in VNI vnis[j % len(vnis)],
                   203.0.113.<10+n>/24 (and 2001:db8:1::<10+n>/64 with
                   inner_ipv6=True)

Every namespace carries its owner's mark (core/owner.py): what a killed
simulation leaves is removed by the next one (a second `simulate --name X`
starts) and by `pytrace doctor --cleanup`.

Everything that would otherwise be learned is written up front: neighbours,
underlay and overlay bridge entries, VXLAN forwarding entries (no flooding:
the VXLAN devices do not learn and have no default destination), and IPv6 is
off everywhere but an IPv6 underlay (and an IPv6 overlay, whose multicast
the VXLAN devices do not forward).  So the underlay carries the generated
traffic and nothing else an observer would have to guess at (an IPv6
underlay adds the kernel's own ICMPv6 multicast listener reports), and what
a monitor on a host's eth0 counts can be predicted exactly.

The traffic generator sends ICMP (or ICMPv6) echo requests (payload `size`
bytes, like `ping -s`) from raw sockets opened inside the client namespaces;
the peers' kernels answer.  Each flow is bounded by a count, a duration, or both.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import os
import re
import selectors
import signal
import socket
import struct
import sys
import subprocess
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..core.errors import PytraceError, UsageError, shown
from ..core.netattach import create_netns, delete_netns, in_netns
from ..core.stops import releasing

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
UNDERLAY_V4 = ipaddress.ip_network("192.0.2.0/24")
UNDERLAY_V6 = ipaddress.ip_network("2001:db8::/64")
OVERLAY = ipaddress.ip_network("203.0.113.0/24")
OVERLAY_V6 = ipaddress.ip_network("2001:db8:1::/64")
OVERLAY_FIRST = 10                  # first client address: 203.0.113.10
MAX_CLIENTS = 240
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")     # a prefix of namespace names
CLIENT_MTU = 1400                   # under the VXLAN MTU for either underlay
ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMPV6_ECHO, ICMPV6_ECHOREPLY = 128, 129
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@dataclass(frozen=True)
class Host:
    index: int
    name: str               # h<i>
    netns: str
    dev: str                # the underlay device in netns: eth0
    addr: Addr              # underlay address
    mac: str


@dataclass(frozen=True)
class Client:
    host: int
    index: int
    name: str               # h<i>c<j>
    netns: str
    vni: int
    addr: ipaddress.IPv4Address
    addr6: ipaddress.IPv6Address    # configured only with inner_ipv6=True
    mac: str


@dataclass(frozen=True)
class Flow:
    """Echo requests from src to dst: `rate` per second, at most `count` (None: no limit)."""
    src: Client
    dst: Client
    rate: float
    count: int | None
    size: int               # ICMP payload bytes
    ident: int              # ICMP echo identifier (unique in a run)
    ipv6: bool = False      # ICMPv6 between the clients' IPv6 addresses

    @property
    def src_addr(self) -> Addr:
        return self.src.addr6 if self.ipv6 else self.src.addr

    @property
    def dst_addr(self) -> Addr:
        return self.dst.addr6 if self.ipv6 else self.dst.addr


@dataclass
class FlowResult:
    flow: Flow
    sent: int = 0
    received: int = 0


def _mac(*parts: int) -> str:
    return "02:54:" + ":".join(f"{p:02x}" for p in parts)


class Simulation:
    def __init__(self, hosts: int = 3, clients: int = 3, vnis: Sequence[int] = (100, 200),
                 ipv6: bool = False, port: int = 4789, name: str | None = None,
                 inner_ipv6: bool = False):
        if hosts < 2:
            raise UsageError("a simulation needs at least 2 hosts")
        if clients < 1:
            raise UsageError("a simulation needs at least 1 client per host")
        if hosts * clients > MAX_CLIENTS:
            raise UsageError(f"at most {MAX_CLIENTS} clients in all (hosts x clients)")
        if not vnis or len(set(vnis)) != len(vnis) or not all(0 < v < 1 << 24 for v in vnis):
            raise UsageError("VNIs: distinct numbers from 1 to 16777215")
        if not 0 < port < 65536:
            raise UsageError(f"port {port}: not a UDP port number (1-65535)")
        if name is not None and not _NAME.fullmatch(name):
            raise UsageError(f"name '{name}': 1 to 32 letters, digits, '-' or '_' (it prefixes namespace names)")
        self.name = name or f"pt-tm{os.getpid()}"
        self.ipv6, self.inner_ipv6, self.port, self.vnis = ipv6, inner_ipv6, port, tuple(vnis)
        self.underlay_ns = f"{self.name}-ul"
        net = UNDERLAY_V6 if ipv6 else UNDERLAY_V4
        self.hosts = [Host(i, f"h{i}", f"{self.name}-h{i}", "eth0", net[i + 1], _mac(0, 0, i, 1))
                      for i in range(hosts)]
        self.clients = [Client(i, j, f"h{i}c{j}", f"{self.name}-h{i}c{j}", self.vnis[j % len(self.vnis)],
                               OVERLAY[OVERLAY_FIRST + i * clients + j],
                               OVERLAY_V6[OVERLAY_FIRST + i * clients + j], _mac(1, i, j, 1))
                        for i in range(hosts) for j in range(clients)]
        self._made: list[str] = []

    # -- life cycle -------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        return [self.underlay_ns, *(h.netns for h in self.hosts), *(c.netns for c in self.clients)]

    def __enter__(self) -> "Simulation":
        self.build()
        return self

    def __exit__(self, *exc) -> None:
        with releasing():       # a stop waits until every namespace is gone (core/stops)
            self.destroy()

    def build(self) -> None:
        """Create everything; on any failure (or signal) remove what was made."""
        from ..core import leftovers
        # a simulation that was killed left its namespaces (with its mark): they go now
        taken = [ns for ns in self.namespaces()
                 if os.path.lexists(f"/run/netns/{ns}") and not leftovers.remove_dead_netns(ns)]
        if taken:
            raise PytraceError(f"network namespace {taken[0]} already exists (another simulation "
                               "with this name? choose another --name)")
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        """Delete every namespace this simulation made (devices go with them).

        Signals are held off meanwhile, so a second Ctrl-C cannot leave half
        of the namespaces behind; they are delivered once the cleanup is done.
        """
        if not self._made:
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            # clients first, the underlay last: each veth goes with its first end
            for ns in reversed(self._made):
                delete_netns(ns)
            self._made = [ns for ns in self._made if os.path.exists(f"/run/netns/{ns}")]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _build(self) -> None:
        names = self.namespaces()
        for ns in names:
            # marked as this process's before it has a name: if we are killed,
            # the next run (or `pytrace doctor --cleanup`) knows it for a leftover
            create_netns(ns, "tunnelmon-simulate")
            self._made.append(ns)
        for ns in names:
            # devices made from here on have no IPv6: no router solicitations,
            # no multicast listener reports, no duplicate address detection
            _sysctl(ns, "net/ipv6/conf/default/disable_ipv6", "1")
        ul = self.underlay_ns
        links = [f"link add {h.dev} netns {h.netns} address {h.mac} type veth peer name {h.name} netns {ul}"
                 for h in self.hosts]
        links += [f"link add eth0 netns {c.netns} address {c.mac} type veth peer name c{c.index} "
                  f"netns {self.hosts[c.host].netns}" for c in self.clients]
        _ip(None, links)

        # the underlay: one bridge, each host's MAC pinned to its port; a plain
        # L2 switch, not a firewall (br_netfilter would drop odd IP frames)
        for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"):
            _sysctl(ul, f"net/bridge/{key}", "0", missing_ok=True)
        _ip(ul, ["link add br0 type bridge mcast_snooping 0", "link set br0 up",
                 *(f"link set {h.name} master br0 up" for h in self.hosts)])
        _bridge(ul, [f"fdb add {h.mac} dev {h.name} master static" for h in self.hosts])

        plen = (UNDERLAY_V6 if self.ipv6 else UNDERLAY_V4).prefixlen
        for h in self.hosts:
            if self.ipv6:
                _ipv6_quiet(h.netns, h.dev)
            cmds = [f"addr add {h.addr}/{plen} dev {h.dev}" + (" nodad" if self.ipv6 else ""),
                    f"link set {h.dev} up"]
            cmds += [f"neigh add {o.addr} lladdr {o.mac} dev {h.dev} nud permanent"
                     for o in self.hosts if o is not h]
            fdb = []
            for vni in self.vnis:
                cmds += [f"link add br{vni} type bridge mcast_snooping 0",
                         f"link add vx{vni} type vxlan id {vni} dstport {self.port} local {h.addr} "
                         f"dev {h.dev} nolearning",
                         f"link set vx{vni} master br{vni} up", f"link set br{vni} up"]
            for c in self.clients:
                if c.host == h.index:
                    cmds.append(f"link set c{c.index} master br{c.vni} up")
                    fdb.append(f"fdb add {c.mac} dev c{c.index} master static")
                else:
                    # remote clients: which tunnel endpoint, and which bridge port
                    fdb.append(f"fdb add {c.mac} dev vx{c.vni} dst {self.hosts[c.host].addr} self permanent")
                    fdb.append(f"fdb add {c.mac} dev vx{c.vni} master static")
            _ip(h.netns, cmds)
            _bridge(h.netns, fdb)

        for c in self.clients:
            peers = [o for o in self.clients if o.vni == c.vni and o is not c]
            cmds = [f"link set eth0 mtu {CLIENT_MTU}", f"addr add {c.addr}/{OVERLAY.prefixlen} dev eth0"]
            if self.inner_ipv6:
                _ipv6_quiet(c.netns, "eth0")
                cmds.append(f"addr add {c.addr6}/{OVERLAY_V6.prefixlen} dev eth0 nodad")
            cmds.append("link set eth0 up")
            cmds += [f"neigh add {o.addr} lladdr {o.mac} dev eth0 nud permanent" for o in peers]
            if self.inner_ipv6:
                cmds += [f"neigh add {o.addr6} lladdr {o.mac} dev eth0 nud permanent" for o in peers]
            _ip(c.netns, cmds)

    # -- traffic ------------------------------------------------------------------------
    def client(self, name: str, what: str = "client") -> Client:
        """The client of that name; what: where the name came from, which a
        wrong one's message names (plan()'s parameter, or the CLI's flag)."""
        for c in self.clients:
            if c.name == name:
                return c
        raise UsageError(f"{what} {shown(name)}: no such client (clients are h<host>c<n>: "
                         f"{self.clients[0].name}..{self.clients[-1].name})")

    def peers(self, client: Client) -> list[Client]:
        """Clients in the same VNI on other hosts (reached through the tunnels)."""
        return [c for c in self.clients if c.vni == client.vni and c.host != client.host]

    def plan(self, rate: float = 5.0, count: int | None = None, size: int = 56,
             loud: str | None = None, loud_factor: int = 10,
             sources: Iterable[str] | None = None, rates: Mapping[str, float] | None = None,
             ipv6: bool = False) -> list[Flow]:
        """Every client (or those named in sources) pings every peer: `rate`
        per second (or its own from `rates`, by client name), `count` each;
        the loud client sends `loud_factor` times as often and as many.
        ipv6: ICMPv6 between the clients' IPv6 addresses (needs inner_ipv6)."""
        if ipv6 and not self.inner_ipv6:
            raise UsageError("IPv6 traffic needs a simulation with inner_ipv6=True (--inner-ipv6)")
        rates = dict(rates or {})
        for name in rates:
            self.client(name, "rates")
        if rate <= 0 or any(r <= 0 for r in rates.values()):
            raise UsageError("rate: must be greater than 0")
        if not 0 <= size <= CLIENT_MTU - 48:
            raise UsageError(f"size: 0 to {CLIENT_MTU - 48} bytes")
        loud_client = self.client(loud, "loud") if loud is not None else None
        srcs = [self.client(n, "sources") for n in sources] if sources is not None else self.clients
        flows: list[Flow] = []
        for src in srcs:
            factor = loud_factor if src is loud_client else 1
            for dst in self.peers(src):
                flows.append(Flow(src, dst, rates.get(src.name, rate) * factor,
                                  None if count is None else count * factor, size, len(flows) + 1, ipv6))
        if len(flows) > 0xFFFF:
            raise UsageError("too many flows for distinct ICMP identifiers")
        return flows

    def run(self, flows: Sequence[Flow], duration: float | None = None,
            settle: float = 2.0) -> list[FlowResult]:
        """Send the flows; then wait up to `settle` seconds for the last replies.

        Bounded by each flow's count and by duration; with neither, it runs
        until interrupted.  Ctrl-C / SIGTERM propagate (the sockets are closed).
        """
        results = {f.ident: FlowResult(f) for f in flows}
        socks: dict[tuple[str, bool], socket.socket] = {}
        sel = selectors.DefaultSelector()
        try:
            for f in flows:
                if (f.src.netns, f.ipv6) not in socks:
                    with in_netns(f.src.netns):
                        s = (socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) if f.ipv6
                             else socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
                    s.setblocking(False)
                    socks[f.src.netns, f.ipv6] = s
                    sel.register(s, selectors.EVENT_READ, f.ipv6)
            start = time.monotonic()
            end = start + duration if duration else None
            # staggered starts, so equal rates do not all fire at once
            heap = [(start + i / (len(flows) * max(f.rate, 1.0)), f.ident) for i, f in enumerate(flows)
                    if f.count != 0]
            heapq.heapify(heap)
            while heap:
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                when, ident = heap[0]
                if when <= now:
                    heapq.heappop(heap)
                    r = results[ident]
                    f = r.flow
                    socks[f.src.netns, f.ipv6].sendto(_echo(f.ident, r.sent & 0xFFFF, f.size, f.ipv6),
                                                      (str(f.dst_addr), 0))
                    r.sent += 1
                    if f.count is None or r.sent < f.count:
                        heapq.heappush(heap, (max(when + 1.0 / f.rate, now - 1.0), ident))
                    continue
                wake = when if end is None else min(when, end)
                for key, _ in sel.select(max(0.0, wake - now)):
                    _drain(key.fileobj, key.data, results)
            deadline = time.monotonic() + settle
            while any(r.received < r.sent for r in results.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(left):
                    _drain(key.fileobj, key.data, results)
        finally:
            sel.close()
            for s in socks.values():
                s.close()
        return list(results.values())


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int, size: int, ipv6: bool = False) -> bytes:
    payload = bytes((i & 0xFF for i in range(size)))
    if ipv6:    # the kernel fills in an ICMPv6 raw socket's checksum (pseudo-header)
        return struct.pack("!BBHHH", ICMPV6_ECHO, 0, 0, ident, seq) + payload
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(head + payload), ident, seq) + payload


def _drain(sock: socket.socket, ipv6: bool, results: dict[int, FlowResult]) -> None:
    """Count the echo replies waiting on a raw socket (it also sees requests: skipped)."""
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except BlockingIOError:
            return
        off = 0 if ipv6 else (data[0] & 0x0F) * 4     # ICMPv6 raw sockets get no IP header
        if len(data) < off + 8 or data[off] != (ICMPV6_ECHOREPLY if ipv6 else ICMP_ECHOREPLY):
            continue
        r = results.get(struct.unpack_from("!H", data, off + 4)[0])
        if r is not None and r.flow.ipv6 == ipv6 and ipaddress.ip_address(peer[0]) == r.flow.dst_addr:
            r.received += 1


def _run(cmd: list[str], lines: list[str]) -> None:
    if not lines:
        return
    proc = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        msg = " ".join(proc.stderr.split())
        raise PytraceError(f"simulation setup failed: {' '.join(cmd[:3])}: {msg}")


def _ip(ns: str | None, lines: list[str]) -> None:
    _run(["ip", *(["-n", ns] if ns else []), "-batch", "-"], lines)


def _bridge(ns: str, lines: list[str]) -> None:
    _run(["bridge", "-n", ns, "-batch", "-"], lines)


def _ipv6_quiet(ns: str, dev: str) -> None:
    """IPv6 on for dev, without router solicitations or duplicate address detection."""
    for key, value in (("accept_ra", "0"), ("router_solicitations", "0"), ("accept_dad", "0"),
                       ("disable_ipv6", "0")):
        _sysctl(ns, f"net/ipv6/conf/{dev}/{key}", value)


def _sysctl(ns: str, key: str, value: str, missing_ok: bool = False) -> None:
    """Write a net sysctl inside a namespace (/proc/sys/net follows the thread's netns)."""
    with in_netns(ns):
        try:
            with open(f"/proc/sys/{key}", "w") as fh:
                fh.write(value)
        except FileNotFoundError:
            if not missing_ok:
                raise


# -- command line: pytrace tunnelmon simulate --------------------------------------------

def _vni_list(text: str) -> list[int]:
    try:
        vnis = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of VNIs (e.g. 100,200)") from None
    if not all(0 < v < 1 << 24 for v in vnis) or len(set(vnis)) != len(vnis):
        raise argparse.ArgumentTypeError(f"'{text}': VNIs are distinct numbers from 1 to 16777215")
    return vnis


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 < value <= 10000:
        raise argparse.ArgumentTypeError(f"'{text}': from above 0 to 10000 per second")
    return value


def _client_rate(text: str) -> tuple[str, float]:
    name, sep, rate = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"'{text}': expected CLIENT=PPS, e.g. h0c1=50")
    return name, _rate(rate)


def _web_address(text: str) -> tuple[str, int]:
    from ..tools.tunnelmon import web_address     # not at import: tools/tunnelmon imports this module
    return web_address(text)


DESCRIPTION = ("Build N hosts (network namespaces) on an underlay bridge with a VXLAN overlay "
               "between them and several clients per host in different VNIs, and send pings "
               "between the clients.  Everything is removed on exit, Ctrl-C or SIGTERM.")


def options() -> tuple:
    """`pytrace tunnelmon simulate`'s options (spec/options.Option), for the
    tool's SPEC (tools/tunnelmon.py)."""
    from ..cli.cliutil import MAX_SECONDS, int_range, port, positive_int
    from ..spec.options import Option, allow_host
    return (
        Option("--hosts", type=int_range(2, MAX_CLIENTS), default=3, metavar="N", help="hosts (default 3)"),
        Option("--clients", type=int_range(1, MAX_CLIENTS), default=3, metavar="N",
               help="clients per host (default 3)"),
        Option("--vnis", type=_vni_list, default=[100, 200], metavar="LIST",
               help="VNIs, clients spread over them in turn (default 100,200)"),
        Option("--ipv6", action="store_true", help="IPv6 underlay (2001:db8::/64) instead of 192.0.2.0/24"),
        Option("--inner-ipv6", action="store_true",
               help="IPv6 overlay too (2001:db8:1::/64): the clients ping each other with ICMPv6"),
        Option("--port", type=port, default=4789, help="VXLAN UDP port (default 4789)"),
        Option("--rate", type=_rate, default=5.0, metavar="PPS", help="pings per second per flow (default 5)"),
        Option("--count", type=positive_int, metavar="N", help="pings per flow (default: until the duration ends)"),
        Option("-d", "--duration", type=int_range(0, MAX_SECONDS, "seconds"), default=30, metavar="SEC",
               help="stop sending after SEC seconds (default 30; 0: until Ctrl-C)"),
        Option("--size", type=int_range(0, CLIENT_MTU - 48), default=56, metavar="BYTES",
               help="ICMP payload (default 56)"),
        Option("--loud", metavar="CLIENT", help="this client (e.g. h0c1) sends --loud-factor times more"),
        Option("--loud-factor", type=positive_int, default=10, metavar="N", help="default 10"),
        Option("--client-rate", type=_client_rate, action="append", default=[], metavar="CLIENT=PPS",
               help="this client's pings per second per flow, instead of --rate (repeatable)"),
        Option("--from", dest="sources", metavar="CLIENTS",
               help="only these clients send (comma-separated, e.g. h0c0,h0c1; default all)"),
        Option("--name", metavar="NAME", help="namespace name prefix (default pt-tm<pid>)"),
        Option("--web", type=_web_address, metavar="[ADDR:]PORT",
               help="also monitor host h0 and serve the web view; stays up after the traffic until Ctrl-C"),
        allow_host(),
        Option("-v", "--verbose", action="store_true", help="show libbpf's log"),
    )


def run(args: argparse.Namespace) -> int:
    sim = Simulation(args.hosts, args.clients, args.vnis, ipv6=args.ipv6, port=args.port, name=args.name,
                     inner_ipv6=args.inner_ipv6)
    sources = [s.strip() for s in args.sources.split(",")] if args.sources is not None else None
    rates = dict(args.client_rate)
    # validate the traffic options before building anything, each client name
    # by the flag it came from (plan() knows only its parameters)
    if sources is not None and not all(sources):
        raise UsageError(f"--from {shown(args.sources)}: an empty client name (comma-separated, e.g. h0c0,h0c1)")
    for flag, names in (("--loud", [args.loud] if args.loud is not None else []), ("--from", sources or []),
                        ("--client-rate", rates)):
        for name in names:
            sim.client(name, flag)
    sim.plan(args.rate, args.count, args.size, args.loud, args.loud_factor, sources, rates, args.inner_ipv6)
    from ..core import leftovers
    for line in leftovers.sweep():
        sys.stderr.write(f"pytrace tunnelmon simulate: {line}\n")
    with sim:
        flows = sim.plan(args.rate, args.count, args.size, args.loud, args.loud_factor, sources, rates,
                         args.inner_ipv6)
        h0 = sim.hosts[0]
        print(describe(sim), flush=True)
        monitor = web = None
        try:
            if args.web:
                from ..tools.tunnelmon import TunnelMon
                from .web import WebView
                monitor = TunnelMon(h0.dev, h0.netns, port=args.port).open()
                web = WebView(lambda: monitor.snapshot().to_dict(), host=args.web[0], port=args.web[1],
                              meta={"dev": h0.dev, "netns": h0.netns, "port": args.port,
                                    "hook": monitor.variant.hook}, allow_hosts=args.allow_host)
                web.start()
                print(f"Monitoring {h0.name} ({h0.netns} {h0.dev}); web view: {web.url}", flush=True)
            else:
                print(f"Monitor it with: pytrace tunnelmon --netns {h0.netns} --dev {h0.dev}"
                      f"{'' if args.port == 4789 else f' --port {args.port}'} [--web 8080]", flush=True)
            bound = [f"{args.count} pings per flow" if args.count else "",
                     f"{args.duration} s" if args.duration else ""]
            special = [f"{n} {r:g}/s" for n, r in rates.items()] + \
                ([f"{args.loud} x{args.loud_factor}"] if args.loud else [])
            note = f" ({', '.join(special)})" if special else ""
            print(f"Sending {len(flows)} {'ICMPv6' if args.inner_ipv6 else 'ICMP'} flows at {args.rate:g}/s each"
                  f"{note}, "
                  f"{' or '.join(b for b in bound if b) or 'until Ctrl-C'}...", flush=True)
            interrupted = False
            try:
                results = sim.run(flows, duration=args.duration or None)
            except KeyboardInterrupt:
                interrupted, results = True, []
            if results:
                print(summary(results), end="", flush=True)
            if web and not interrupted:
                print("Traffic done; the web view stays up until Ctrl-C.", flush=True)
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            if web:
                web.close()
            if monitor:
                monitor.close()
    return 0


def describe(sim: Simulation) -> str:
    lines = [f"Simulated VXLAN overlay {sim.name}: {len(sim.hosts)} hosts, {len(sim.clients)} clients, "
             f"VNIs {','.join(map(str, sim.vnis))}, IPv{6 if sim.ipv6 else 4} underlay, "
             f"{'IPv4+IPv6' if sim.inner_ipv6 else 'IPv4'} overlay, UDP {sim.port}"]
    w = max(len(h.netns) for h in sim.hosts)
    for h in sim.hosts:
        clients = " ".join(f"{c.name}={c.addr}{f',{c.addr6}' if sim.inner_ipv6 else ''}/vni{c.vni}"
                           for c in sim.clients if c.host == h.index)
        lines.append(f"  {h.name:<4} {h.netns:<{w}} {h.dev} {str(h.addr):<15} {clients}")
    return "\n".join(lines)


def summary(results: list[FlowResult]) -> str:
    per: dict[str, list[int]] = {}
    for r in results:
        acc = per.setdefault(r.flow.src.name, [r.flow.src.vni, 0, 0, 0])
        acc[1] += 1
        acc[2] += r.sent
        acc[3] += r.received
    rows = [f"{'CLIENT':<8} {'VNI':>8} {'FLOWS':>6} {'SENT':>8} {'RECEIVED':>9}"]
    rows += [f"{name:<8} {vni:>8} {n:>6} {sent:>8} {got:>9}" for name, (vni, n, sent, got) in per.items()]
    return "\n".join(rows) + "\n"
