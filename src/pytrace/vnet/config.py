"""The trace-point file (TOML), checked with errors that name the line.

    host = "node-a"                 # optional: the host label of these records

    [select]                        # which packets; VXLAN packets by their inner headers
    protocol = "udp"                # tcp, udp, icmp, icmpv6 or any (default)
    net = ["198.51.100.0/24"]       # either end in one of these subnets
    src = []                        # the source in one of these
    dst = []                        # the destination in one of these
    port = [7000]                   # either port; sport / dport for one end
    sample = 1                      # keep 1 flow in N (both directions of it)
    vxlan_ports = [4789, 8472]      # UDP ports that carry VXLAN

    [[point]]
    label = "cA.eth0.out"           # how records and the report name it
    device = "eth0"
    netns = "cA"                    # `ip netns` name, path or inode; default: ours
    direction = "egress"            # ingress or egress
    method = "tc"                   # tc, xdp (ingress), tracepoint: net_dev_queue
                                    # (egress) / netif_receive_skb (ingress)

Syntax errors come from tomllib (with its line and column); every other
error names the file and the line of the key or table at fault.  The selector
and the sampling rate go into every point's rodata: they are applied in the
kernel.
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import netattach
from ..core.errors import UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

PROTOCOLS = {"any": 0, "icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
PROTO_NAMES = {v: k for k, v in PROTOCOLS.items() if v}
METHODS = ("tc", "xdp", "tracepoint")
# method aliases that also fix the direction
TRACEPOINT_ALIASES = {"net_dev_queue": "egress", "netif_receive_skb": "ingress"}
DIRECTIONS = ("ingress", "egress")
MAX_PREFIXES = 16     # MAX_PFX in vnet.bpf.c
MAX_PORTS = 16        # MAX_PORTS in pytrace.h
MAX_VXLAN_PORTS = 4
ROLE_ANY, ROLE_SRC, ROLE_DST = 1, 2, 4
_LABEL = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,64}$")
_POINT_KEYS = {"label", "device", "netns", "direction", "method"}
_SELECT_KEYS = {"protocol", "net", "src", "dst", "port", "sport", "dport", "sample", "vxlan_ports"}


class ConfigError(UsageError):
    """Bad configuration: one line naming where, exit status 2."""


@dataclass(frozen=True)
class Point:
    label: str
    device: str
    netns: str | None          # as written: name, path or inode; None: our namespace
    direction: str             # ingress | egress
    method: str                # tc | xdp | tracepoint
    where: str = ""            # "file:line" of the point's table (or "ctl"), for messages
    locs: tuple[tuple[str, str], ...] = ()     # (key, "file:line") of its keys

    def at(self, key: str) -> str:
        """Where a key of this point was written (its table if not known)."""
        return dict(self.locs).get(key, self.where)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "device": self.device, "netns": self.netns,
                "direction": self.direction, "method": self.method}

    def same_as(self, other: "Point") -> bool:
        return self.to_dict() == other.to_dict()


@dataclass(frozen=True)
class Selector:
    protocol: int = 0
    prefixes: tuple[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network], ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    sample: int = 1
    vxlan_ports: tuple[int, ...] = (4789, 8472)

    def rodata(self) -> dict[str, Any]:
        """The selector as vnet.bpf.c's rodata."""
        addr, mask = [0] * (MAX_PREFIXES * 4), [0] * (MAX_PREFIXES * 4)
        fam, role = [0] * MAX_PREFIXES, [0] * MAX_PREFIXES
        for i, (r, net) in enumerate(self.prefixes):
            # the kernel loads the address bytes as native (little-endian) u32s
            addr[4 * i:4 * i + 4] = struct.unpack("<4I", net.network_address.packed.ljust(16, b"\0"))
            mask[4 * i:4 * i + 4] = struct.unpack("<4I", net.netmask.packed.ljust(16, b"\0"))
            fam[i] = socket.AF_INET if net.version == 4 else socket.AF_INET6
            role[i] = r
        proles = 0
        for r, _ in self.prefixes:
            proles |= r
        ports_roles = 0
        for r, _ in self.ports:
            ports_roles |= r
        return {"sel_proto": self.protocol, "pfx_addr": addr, "pfx_mask": mask, "pfx_family": bytes(fam),
                "pfx_role": bytes(role), "n_pfx": len(self.prefixes), "pfx_roles": proles,
                "port_num": [p for _, p in self.ports], "port_role": bytes(r for r, _ in self.ports),
                "n_port": len(self.ports), "port_roles": ports_roles, "sample_n": self.sample,
                "vxlan_ports": list(self.vxlan_ports), "n_vxlan_ports": len(self.vxlan_ports)}

    def describe(self) -> str:
        parts = [PROTO_NAMES.get(self.protocol, str(self.protocol)) if self.protocol else "any protocol"]
        names = {ROLE_ANY: "net", ROLE_SRC: "src", ROLE_DST: "dst"}
        for r, net in self.prefixes:
            parts.append(f"{names[r]} {net}")
        pnames = {ROLE_ANY: "port", ROLE_SRC: "sport", ROLE_DST: "dport"}
        for r, p in self.ports:
            parts.append(f"{pnames[r]} {p}")
        if self.sample > 1:
            parts.append(f"1 in {self.sample} flows")
        return ", ".join(parts)


@dataclass(frozen=True)
class Config:
    points: tuple[Point, ...]
    selector: Selector
    host: str | None = None
    path: str = ""


# -- where things are in the file -------------------------------------------------

class _Lines:
    """Line numbers of tables and keys, found in the text (tomllib gives none)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str, bool]] = []   # (line, name, is_array)
        for n, line in enumerate(self.lines, 1):
            m = re.match(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$", line)
            if m:
                self.headers.append((n, m.group(2).strip("\"' "), m.group(1) == "[["))

    def table(self, name: str, index: int | None = None) -> int:
        k = 0
        for line, hname, arr in self.headers:
            if hname == name:
                if index is None or k == index:
                    return line
                k += 1
        return 0

    def key(self, table_line: int, key: str) -> int:
        """Line of `key = ...` in the table starting at table_line (0: the top level)."""
        end = next((ln for ln, _, _ in self.headers if ln > table_line), len(self.lines) + 1)
        pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for n in range(table_line + 1, end):
            if pat.match(self.lines[n - 1]):
                return n
        return table_line


def _at(path: str, line: int) -> str:
    return f"{path}:{line}" if line else path


# -- parsing -----------------------------------------------------------------------

def load(path: str | Path) -> Config:
    """Read and check a configuration file (devices and namespaces are checked by resolve())."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = "<config>") -> Config:
    if tomllib is None:
        raise ConfigError("reading TOML needs Python 3.11 (tomllib) or the tomli package")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    lines = _Lines(text)
    unknown = set(data) - {"host", "select", "point"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{_at(path, lines.key(0, key) or lines.table(key))}: unknown setting '{key}' "
                          "(expected host, [select], [[point]])")
    host = data.get("host")
    if host is not None and (not isinstance(host, str) or not _LABEL.match(host)):
        raise ConfigError(f"{_at(path, lines.key(0, 'host'))}: host must be a short label "
                          "(letters, digits, . _ - :)")
    sel = data.get("select", {})
    if not isinstance(sel, dict):
        raise ConfigError(f"{_at(path, lines.key(0, 'select'))}: select must be a table ([select])")
    sel_line = lines.table("select")
    selector = selector_from_dict(sel, lambda key: _at(path, lines.key(sel_line, key) if key else sel_line))

    raw_points = data.get("point", [])
    if not isinstance(raw_points, list):
        raise ConfigError(f"{_at(path, lines.key(0, 'point'))}: points are [[point]] tables")
    points: list[Point] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(raw_points):
        tline = lines.table("point", i)
        where = lambda key, t=tline: _at(path, lines.key(t, key) if key else t)  # noqa: E731
        pt = point_from_dict(raw, where)
        if pt.label in seen:
            raise ConfigError(f"{where('label')}: point label '{pt.label}' is already used at {seen[pt.label]}")
        seen[pt.label] = where("")
        points.append(pt)
    if not points:
        raise ConfigError(f"{path}: no [[point]] defined")
    return Config(tuple(points), selector, host, path)


def point_from_dict(raw: Any, where=lambda key: "ctl") -> Point:
    """One point from its table; where(key) names the place of a key in messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where('')}: a point is a table of label, device, netns, direction, method")
    label = raw.get("label")
    name = f"point '{label}'" if isinstance(label, str) else "point"
    unknown = set(raw) - _POINT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where(key)}: {name}: unknown key '{key}' (expected {', '.join(sorted(_POINT_KEYS))})")
    for key in ("label", "device", "direction", "method"):
        if key not in raw:
            raise ConfigError(f"{where('')}: {name}: '{key}' is missing")
        if not isinstance(raw[key], str) or not raw[key]:
            raise ConfigError(f"{where(key)}: {name}: '{key}' must be a non-empty string")
    if not _LABEL.match(label):
        raise ConfigError(f"{where('label')}: point label '{label}': use up to 64 letters, digits or . _ - : @ / +")
    device = raw["device"]
    if len(device) > 15 or "/" in device or " " in device:
        raise ConfigError(f"{where('device')}: {name}: '{device}' is not a device name")
    netns = raw.get("netns")
    if netns is not None:
        if isinstance(netns, bool) or not isinstance(netns, (str, int)) or netns == "":
            raise ConfigError(f"{where('netns')}: {name}: netns is an `ip netns` name, a path or an inode")
        netns = str(netns)
    direction = raw["direction"]
    if direction not in DIRECTIONS:
        raise ConfigError(f"{where('direction')}: {name}: direction '{direction}': ingress or egress")
    method = raw["method"]
    if method in TRACEPOINT_ALIASES:
        if TRACEPOINT_ALIASES[method] != direction:
            raise ConfigError(f"{where('method')}: {name}: {method} is an {TRACEPOINT_ALIASES[method]} "
                              f"tracepoint, but direction is {direction}")
        method = "tracepoint"
    if method not in METHODS:
        raise ConfigError(f"{where('method')}: {name}: method '{method}': tc, xdp, tracepoint, "
                          "net_dev_queue or netif_receive_skb")
    if method == "xdp" and direction != "ingress":
        raise ConfigError(f"{where('direction')}: {name}: XDP sees ingress packets only")
    return Point(label, device, netns, direction, method, where(""),
                 tuple((key, where(key)) for key in ("device", "netns") if key in raw))


def selector_from_dict(sel: dict, where) -> Selector:
    unknown = set(sel) - _SELECT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where(key)}: unknown selector '{key}' (expected {', '.join(sorted(_SELECT_KEYS))})")
    proto = sel.get("protocol", "any")
    if isinstance(proto, str) and proto.lower() in PROTOCOLS:
        protocol = PROTOCOLS[proto.lower()]
    elif isinstance(proto, int) and not isinstance(proto, bool) and 0 <= proto <= 255:
        protocol = proto
    else:
        raise ConfigError(f"{where('protocol')}: protocol '{proto}': tcp, udp, icmp, icmpv6, any or 0-255")
    prefixes: list[tuple[int, Any]] = []
    for key, role in (("net", ROLE_ANY), ("src", ROLE_SRC), ("dst", ROLE_DST)):
        for text in _listed(sel, key, where):
            if not isinstance(text, str):
                raise ConfigError(f"{where(key)}: {key}: '{text}' is not an address or subnet")
            try:
                prefixes.append((role, ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                raise ConfigError(f"{where(key)}: {key}: '{text}' is not an address or subnet") from None
    if len(prefixes) > MAX_PREFIXES:
        raise ConfigError(f"{where('net')}: at most {MAX_PREFIXES} subnets in net, src and dst together")
    ports: list[tuple[int, int]] = []
    for key, role in (("port", ROLE_ANY), ("sport", ROLE_SRC), ("dport", ROLE_DST)):
        for p in _listed(sel, key, where):
            if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
                raise ConfigError(f"{where(key)}: {key}: '{p}' is not a port number (1-65535)")
            ports.append((role, p))
    if len(ports) > MAX_PORTS:
        raise ConfigError(f"{where('port')}: at most {MAX_PORTS} ports in port, sport and dport together")
    sample = sel.get("sample", 1)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ConfigError(f"{where('sample')}: sample must be a whole number >= 1 (keep 1 flow in N)")
    vx = _listed(sel, "vxlan_ports", where) if "vxlan_ports" in sel else [4789, 8472]
    if len(vx) > MAX_VXLAN_PORTS or any(isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536
                                        for p in vx):
        raise ConfigError(f"{where('vxlan_ports')}: vxlan_ports: up to {MAX_VXLAN_PORTS} UDP port numbers")
    return Selector(protocol, tuple(prefixes), tuple(ports), sample, tuple(vx))


def _listed(sel: dict, key: str, where) -> list:
    value = sel.get(key, [])
    return value if isinstance(value, list) else [value]


# -- what a point refers to on this machine ------------------------------------------

@dataclass(frozen=True)
class Resolved:
    netns_path: str | None     # None: our own namespace
    netns_inode: int
    ifindex: int
    has_eth: bool              # frames at tc/XDP start with an Ethernet header


ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
SIOCGIFHWADDR = 0x8927


def resolve(point: Point) -> Resolved:
    """Find the point's namespace and device; ConfigError naming the point if absent."""
    try:
        ns = netattach.netns_path(point.netns)
        inode = netattach.netns_inode(point.netns)
    except UsageError as exc:
        raise ConfigError(f"{point.at('netns')}: point '{point.label}': {exc}") from None
    try:
        idx = netattach.ifindex(point.device, point.netns)
    except UsageError as exc:
        raise ConfigError(f"{point.at('device')}: point '{point.label}': {exc}") from None
    return Resolved(ns, inode, idx, _link_type(point.device, point.netns) in (ARPHRD_ETHER, ARPHRD_LOOPBACK))


def _link_type(dev: str, ns: str | None) -> int:
    """ARPHRD_* type of a device (its hardware address family), asked in its namespace."""
    with netattach.in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16s16x", dev.encode())
        res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, req)
        return struct.unpack_from("H", res, 16)[0]
    except OSError:
        return ARPHRD_ETHER
    finally:
        s.close()

