"""What the device tools (netsize, nettxlat, qdisclat) share on the Python
side; the kernel half is struct dev_id / dev_wanted() in src/bpf/skbinfo.h.

A device is named by its name and network namespace (the same name, and
the same ifindex, exist in every namespace): the --dev/--netns-id filters
are rodata, and output names a device of another namespace as
`name@netns:INODE`.
"""

from __future__ import annotations

import os
from functools import lru_cache

from ..cli.cliutil import bad_value, netns_inode, netns_ref

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see cli/argparser.py)
    import argparse

IFNAMSIZ = 16


def device_name(text: str) -> str:
    """An argparse type: a valid Linux interface name."""
    if not text or len(text) >= IFNAMSIZ or "/" in text or any(c.isspace() for c in text) or text in (".", ".."):
        raise bad_value(f"'{text}' is not a network device name (1-15 characters, no '/' or spaces)")
    return text


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-D", "--dev", type=device_name, metavar="NAME", help="only this network device")
    ns = p.add_mutually_exclusive_group()
    ns.add_argument("--netns-id", type=netns_inode, default=0, metavar="INODE",
                    help="only devices of this network namespace (inode, as ls -Li /proc/PID/ns/net)")
    ns.add_argument("--netns", dest="netns_ref", type=netns_ref, metavar="NS",
                    help="only devices of this network namespace: an ip netns name, a path or an inode")


def device_options() -> tuple:
    """-D/--dev NAME and --netns-id INODE as SPEC options (tracer keywords dev,
    netns); the command line checks that the device exists (check_device_args)."""
    from .options import Option

    def checked_dev(args: argparse.Namespace) -> str | None:
        check_device_args(args)
        return args.dev
    return (Option("-D", "--dev", type=device_name, metavar="NAME", kw="dev", value=checked_dev,
                   help="only this network device"),
            Option("--netns-id", type=netns_inode, default=0, metavar="INODE", kw="netns",
                   help="only devices of this network namespace (inode, as ls -Li /proc/PID/ns/net)"))


def device_rodata(dev: str | None, netns: int) -> dict:
    return {"targ_dev": (dev or "").encode(), "targ_netns": netns}


def check_device_args(args: argparse.Namespace) -> None:
    """The device tools' CLI: -D/--dev must name a device that exists, in the
    --netns-id namespace if given, else in any namespace (the filter then
    matches the name in every one).  A filter on a name that exists nowhere
    would show nothing, never saying why.  (The library takes any name: a
    device may be made after the tracer starts.)"""
    from ..core.errors import UsageError
    from ..core.netattach import ifindex, netns_inode as inode_of, netns_path
    if getattr(args, "netns_ref", None):          # --netns NS: the same filter as --netns-id
        args.netns_id = inode_of(args.netns_ref)
    dev, netns = args.dev, args.netns_id
    if not dev:
        return
    if netns:
        where = None if netns == own_netns() else netns_path(str(netns))
        try:
            ifindex(dev, where)
        except UsageError:
            raise UsageError(f"--dev {dev}: no such device in netns {netns}") from None
    elif dev not in _names_anywhere():
        raise UsageError(f"--dev {dev}: no such device in any network namespace")


def _names_anywhere() -> set[str]:
    """Device names of every network namespace this host has: a process's
    (its /proc/PID/net/dev) or one kept by `ip netns` (entered to look)."""
    import socket
    names = {name for _, name in socket.if_nameindex()}
    seen = {own_netns()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            if ino in seen:
                continue
            with open(f"/proc/{pid}/net/dev") as fh:
                names.update(line.split(":", 1)[0].strip() for line in list(fh)[2:])
            seen.add(ino)
        except OSError:
            continue
    try:
        kept = os.listdir("/run/netns")
    except OSError:
        kept = []
    from ..core.netattach import in_netns
    for name in kept:
        path = f"/run/netns/{name}"
        try:
            if os.stat(path).st_ino in seen:
                continue
            with in_netns(path):
                names.update(n for _, n in socket.if_nameindex())
        except OSError:
            continue
    return names


@lru_cache(maxsize=1)
def own_netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def dev_label(name: str, netns: int) -> str:
    """'eth0' in our own namespace, else 'veth0@netns:4026533819'."""
    return name if not netns or netns == own_netns() else f"{name}@netns:{netns}"
