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

from .cliutil import bad_value, netns_inode

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

IFNAMSIZ = 16


def device_name(text: str) -> str:
    """An argparse type: a valid Linux interface name."""
    if not text or len(text) >= IFNAMSIZ or "/" in text or any(c.isspace() for c in text) or text in (".", ".."):
        raise bad_value(f"'{text}' is not a network device name (1-15 characters, no '/' or spaces)")
    return text


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-D", "--dev", type=device_name, metavar="NAME", help="only this network device")
    p.add_argument("--netns-id", type=netns_inode, default=0, metavar="INODE",
                   help="only devices of this network namespace (inode, as ls -Li /proc/PID/ns/net)")


def device_rodata(dev: str | None, netns: int) -> dict:
    """The filter's rodata; a device that does not exist (in netns, if given)
    is a usage error: a filter on it would show nothing, never saying why."""
    if dev:
        check_device(dev, netns)
    return {"targ_dev": (dev or "").encode(), "targ_netns": netns}


def check_device(dev: str, netns: int = 0) -> None:
    """UsageError unless network device dev exists in namespace netns (an
    inode; 0: ours)."""
    from .errors import UsageError
    from .netattach import ifindex, netns_path
    where = None if not netns or netns == own_netns() else netns_path(str(netns))
    try:
        ifindex(dev, where)
    except UsageError:
        raise UsageError(f"--dev {dev}: no such device" + (f" in netns {netns}" if where else "")) from None


@lru_cache(maxsize=1)
def own_netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def dev_label(name: str, netns: int) -> str:
    """'eth0' in our own namespace, else 'veth0@netns:4026533819'."""
    return name if not netns or netns == own_netns() else f"{name}@netns:{netns}"
