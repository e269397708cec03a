"""What killed pytrace processes left in the kernel: found and removed.

    for line in leftovers.sweep():
        print(line)          # one line per thing removed (or kept, and why)

tunnelmon, `vnet record`, `vnet demo` and `tunnelmon simulate` sweep when
they start (the root namespace, every named one, and those they work in);
`pytrace doctor --cleanup` sweeps the namespaces of every process too.

Only what a dead owner left goes (core/owner.py tells whose a thing is and
whether its owner lives):

- tc filters carrying pytrace's handle mark whose owner no longer holds
  their program, then the clsact qdisc such an owner created, if nothing is
  left on it;
- network namespaces carrying pytrace's mark whose owner is gone, unless a
  live pytrace still has a tc filter in one (then it is kept, and said so).

XDP programs need nothing: they hang on BPF links, which die with their owner.
"""

from __future__ import annotations

import os
from typing import Iterable

from . import netattach, owner, rtnl
from .errors import PytraceError


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


def _clear_namespace(nl: rtnl.Rtnl, label: str) -> list[str]:
    said = []
    names = {link.index: link.name for link in nl.links()}
    for idx in sorted({q.ifindex for q in nl.qdiscs() if q.kind == "clsact"}):
        where = f" on {names.get(idx, f'ifindex {idx}')}" + (f" in netns {label}" if label else "")
        said += clear_device(nl, idx, where)
    return said


def _live_tracers(nl: rtnl.Rtnl) -> set[int]:
    """PIDs of live pytrace processes with a tc filter in nl's namespace."""
    pids = set()
    for idx in {q.ifindex for q in nl.qdiscs() if q.kind == "clsact"}:
        for f in nl.clsact_filters(idx):
            mark = owner.handle_owner(f.handle) if f.handle else None
            if mark is not None and owner.filter_alive(f.handle, f.bpf_id):
                pids.add(mark[0])
    return pids


def _socket_in(ns: str | None) -> rtnl.Rtnl | None:
    try:
        with netattach.in_netns(ns):
            return rtnl.Rtnl()
    except (PytraceError, OSError):
        return None             # gone meanwhile, or not ours to enter


def _dead_mark(nl: rtnl.Rtnl) -> tuple[str, int] | None:
    """(what, pid) if the namespace carries pytrace's mark and its owner is gone."""
    lo = nl.link(1)
    mark = owner.parse_netns_mark(lo.alias) if lo is not None else None
    if mark is None or owner.alive(mark[1], mark[2]):
        return None
    return mark[0], mark[1]


def _netns_verdict(name: str, nl: rtnl.Rtnl) -> str | None:
    """Remove the named namespace if a dead pytrace made it: what was done, or None."""
    dead = _dead_mark(nl)
    if dead is None:
        return None
    what, pid = dead
    live = _live_tracers(nl)
    if live:
        return (f"kept network namespace {name} ({what} of pid {pid}, which is gone): pid "
                f"{', '.join(map(str, sorted(live)))} still traces in it")
    netattach.delete_netns(name)
    return f"removed network namespace {name} ({what} of pid {pid}, which is gone)"


def remove_dead_netns(name: str) -> bool:
    """Remove /run/netns/name if it is a leftover of a dead pytrace; True if it was."""
    nl = _socket_in(f"{netattach.NETNS_RUN_DIR}/{name}")
    if nl is None:
        return False
    with nl:
        said = _netns_verdict(name, nl)
    return said is not None and said.startswith("removed")


def _named() -> list[str]:
    try:
        return sorted(os.listdir(netattach.NETNS_RUN_DIR))
    except OSError:
        return []


def _process_namespaces() -> list[str]:
    paths = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        paths.append(f"/proc/{pid}/ns/net")
    return paths


def sweep(namespaces: Iterable[str | int | None] = (), *, processes: bool = False) -> list[str]:
    """Remove every leftover of a dead pytrace in the root namespace, the
    named ones, `namespaces` (names, paths or inodes) and, with processes,
    those of every process; one line per thing removed or kept."""
    said: list[str] = []
    seen: set[int] = set()

    def visit(ns: str | None, label: str, name: str | None = None) -> None:
        try:
            inode = os.stat(ns or "/proc/self/ns/net").st_ino
        except OSError:
            return
        if inode in seen:
            return
        seen.add(inode)
        nl = _socket_in(ns)
        if nl is None:
            return
        with nl:
            try:
                verdict = _netns_verdict(name, nl) if name else None
                if verdict is not None:
                    said.append(verdict)
                    if verdict.startswith("removed"):
                        return
                said.extend(_clear_namespace(nl, label))
            except OSError:
                return          # the namespace went away while we looked

    visit(None, "")
    for name in _named():
        visit(f"{netattach.NETNS_RUN_DIR}/{name}", name, name)
    for ns in namespaces:
        try:
            path = netattach.netns_path(ns)
        except PytraceError:
            continue
        visit(path, str(ns))
    if processes:
        for path in _process_namespaces():
            visit(path, path)
    return said
