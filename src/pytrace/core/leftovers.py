"""What killed pytrace processes left in the kernel: found and removed.

A tc filter carrying pytrace's handle mark whose owner no longer holds its
program (core/owner.py) is a dead owner's leftover; so is the clsact qdisc
such an owner created, once nothing is left on it.  attach_tc clears the
device it attaches to first.
"""

from __future__ import annotations

from . import owner, rtnl


def clear_device(nl: rtnl.Rtnl, ifindex: int, where: str = "") -> list[str]:
    """Remove dead owners' filters from one device's clsact (nl: a socket in
    the device's namespace), and the clsact if such an owner made it and
    nothing is left on it.  where: " on DEV in netns NS", for the report."""
    said = []
    made_by_dead = False
    for f in nl.clsact_filters(ifindex):
        mark = owner.handle_owner(f.handle) if f.handle and f.kind == "bpf" else None
        if mark is None or owner.filter_alive(f.handle, f.bpf_id):
            continue
        if nl.delete_filter(f):
            name = f.bpf_name.split(":", 1)[0] or "bpf"
            said.append(f"removed tc filter {name} ({rtnl.DIRECTION.get(f.parent, hex(f.parent))} prio {f.prio} "
                        f"handle {f.handle:#x}){where}, left by pid {mark[0]}, which is gone")
        made_by_dead |= mark[1]
    if made_by_dead and not nl.clsact_filters(ifindex) and nl.delete_clsact(ifindex):
        said.append(f"removed the clsact qdisc{where}: made by a pytrace that is gone, nothing left on it")
    return said

