"""Attach programs to network devices (tc clsact, XDP), in any network namespace,
take them off again, and make and remove the network namespaces pytrace builds.

tc filters made through netlink (all libbpf 1.1 offers: no tcx links) outlive
the process that made them, and they share the device with the filters of
others (network plugins, an administrator's own).  So a pytrace filter:

- comes after every filter already on its hook (a priority above theirs) and
  never replaces one; its program returns TC_ACT_UNSPEC, so the filters after
  it run too;
- carries its owner's mark in its handle (core/owner.py), so a later run can
  tell a killed owner's leftover from a live one's filter;
- is removed with the BpfObject (obj.close()), and with it the clsact qdisc,
  but only if pytrace created that qdisc and nothing else is left on it.

XDP uses a BPF link, which the kernel removes when the process dies.
Namespaces are named as `ip netns` does (/run/netns/NAME), by path
(/proc/PID/ns/net) or by inode number.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import errno
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from . import libbpf
from .bpfobject import BpfObject
from .errors import PytraceError, UsageError

CLONE_NEWNET = 0x40000000
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2

_libc = C.CDLL(None, use_errno=True)
_ns_lock = threading.Lock()


def netns_path(ns: str | int | None) -> str | None:
    """Resolve a namespace given by `ip netns` name, path or inode to a path."""
    if ns is None or ns == "":
        return None
    text = str(ns)
    if text.startswith("/"):
        if not os.path.exists(text):
            raise UsageError(f"netns {text}: no such file")
        return text
    if text.isdigit():
        inode = int(text)
        if os.stat("/proc/self/ns/net").st_ino == inode:
            return "/proc/self/ns/net"
        for p in Path("/run/netns").glob("*") if Path("/run/netns").exists() else ():
            if p.stat().st_ino == inode:
                return str(p)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                    return f"/proc/{pid}/ns/net"
            except OSError:
                continue
        raise UsageError(f"netns {text}: no namespace with that inode")
    path = f"/run/netns/{text}"
    if not os.path.exists(path):
        raise UsageError(f"netns {text}: unknown (ip netns list shows the names)")
    return path


def netns_inode(ns: str | int | None) -> int:
    return os.stat(netns_path(ns) or "/proc/self/ns/net").st_ino


@contextlib.contextmanager
def in_netns(ns: str | int | None) -> Iterator[None]:
    """Run the body with this thread in another network namespace."""
    path = netns_path(ns)
    if path is None:
        yield
        return
    with _ns_lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = C.get_errno()
                raise OSError(err, f"setns {path}: {os.strerror(err)}")
            try:
                yield
            finally:
                _libc.setns(home, CLONE_NEWNET)
        finally:
            os.close(target)
            os.close(home)


def ifindex(dev: str, ns: str | int | None = None) -> int:
    with in_netns(ns):
        try:
            return socket.if_nametoindex(dev)
        except OSError:
            where = f" in netns {ns}" if ns else ""
            raise UsageError(f"device {dev}{where}: no such device") from None


# clsact qdiscs that pytrace made (or took over from another pytrace that
# made them), by (netns inode, ifindex): the last of our filters to leave one
# removes it, if nothing else is on it by then
_our_clsacts: set[tuple[int, int]] = set()
# Where pytrace's filters start on a hook with no filter after that: the
# kernel's own automatic priorities count down from here, so an
# administrator's filters, with or without a priority, land before ours
FIRST_PRIORITY = 0xC000
MAX_PRIORITY = 0xFFFF
ETH_P_ALL_NET = socket.htons(0x0003)     # bpf_tc_attach's protocol, as tcm_info carries it


def attach_tc(obj: BpfObject, prog: str, dev: str, direction: str, ns: str | int | None = None) -> int:
    """Attach a SEC("tc") program to dev's clsact ingress or egress, after
    every filter already on that hook; undone on obj.close().  Returns the
    priority it took.  The program should return TC_ACT_UNSPEC, so that the
    filters after it run too."""
    from . import leftovers, owner, rtnl

    lb = libbpf.lib()
    parent = rtnl.PARENTS.get(direction)
    if parent is None:
        raise UsageError(f"direction {direction}: ingress or egress")
    idx = ifindex(dev, ns)
    key = (netns_inode(ns), idx)
    point = BPF_TC_INGRESS if direction == "ingress" else BPF_TC_EGRESS
    hook = libbpf.TcHook(sz=C.sizeof(libbpf.TcHook), ifindex=idx, attach_point=point)
    prog_fd = obj.program_fd(prog)
    with in_netns(ns):
        nl = rtnl.Rtnl()
    with nl:
        for attempt in range(3):
            # what a killed pytrace left on this device goes first (its clsact too, if it made it)
            leftovers.clear_device(nl, idx)
            with in_netns(ns):
                ret = lb.bpf_tc_hook_create(C.byref(hook))
            if ret == 0:
                _our_clsacts.add(key)
            elif ret != -errno.EEXIST:
                libbpf.check(ret, f"create clsact on {dev}")
            present = [f for f in nl.clsact_filters(idx) if f.handle]
            if present and all((owner.handle_owner(f.handle) or (0, False))[1] for f in present):
                _our_clsacts.add(key)       # only pytrace's filters, on a clsact pytrace made
            prio = _priority_after(f.prio for f in present if f.parent == parent)
            if prio is None:
                _release_clsact(nl, key)
                raise PytraceError(f"tc {direction} of {dev}: no priority left after the existing filters "
                                   f"(one is at {MAX_PRIORITY}); pytrace never goes before them")
            opts = libbpf.TcOpts(sz=C.sizeof(libbpf.TcOpts), prog_fd=prog_fd, priority=prio,
                                 handle=owner.filter_handle(key in _our_clsacts))
            with in_netns(ns):
                ret = lb.bpf_tc_attach(C.byref(hook), C.byref(opts))
            if ret == 0:
                break
            # EEXIST/EINVAL: someone took that priority meanwhile (with another
            # protocol); ENOENT: the qdisc went away meanwhile.  Look again.
            if ret not in (-errno.EEXIST, -errno.EINVAL, -errno.ENOENT) or attempt == 2:
                _release_clsact(nl, key)
                libbpf.check(ret, f"tc attach {prog} to {dev} {direction}")
    mine = rtnl.Filter(idx, parent, opts.priority, ETH_P_ALL_NET, opts.handle, "bpf", 0, "", 0)

    def undo() -> None:
        try:
            with in_netns(ns):
                nl = rtnl.Rtnl()
        except (PytraceError, OSError):
            return          # the namespace is gone, and the device and its filters with it
        with nl:
            nl.delete_filter(mine)
            _release_clsact(nl, key)
    obj.on_close(undo)
    return opts.priority


def _priority_after(taken: Iterator[int]) -> int | None:
    """The priority after every one taken (and not below FIRST_PRIORITY); None if none is left."""
    top = max(taken, default=0)
    if top >= MAX_PRIORITY:
        return None
    return max(FIRST_PRIORITY, top + 1)


def _release_clsact(nl, key: tuple[int, int]) -> None:
    """Delete the device's clsact qdisc if pytrace made it and no filter is on it."""
    if key not in _our_clsacts:
        return
    if not nl.clsact_filters(key[1]):
        nl.delete_clsact(key[1])
        _our_clsacts.discard(key)


def attach_xdp(obj: BpfObject, prog: str, dev: str, ns: str | int | None = None) -> None:
    """Attach a SEC("xdp") program to dev through a BPF link (gone when we are)."""
    idx = ifindex(dev, ns)
    with in_netns(ns):
        link = libbpf.lib().bpf_program__attach_xdp(obj.program(prog), idx)
        try:
            libbpf.check_ptr(link, f"XDP attach {prog} to {dev}")
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise PytraceError(f"{dev} already has an XDP program attached") from None
            raise
    obj.keep_link(link)


# -- devices that go away ----------------------------------------------------------------

class DeviceWatch:
    """Whether a device we attached to still exists (it may be deleted, or
    its namespace with it, under a running tool).  gone() looks at most once
    per `every` seconds and returns what happened, in a sentence, or None."""

    def __init__(self, dev: str, ns: str | int | None = None, *, index: int | None = None,
                 label: str | None = None, every: float = 0.5):
        self.dev, self.ns, self.every = dev, ns, every
        self.where = f"device {dev}" + (f" in netns {label or ns}" if (label or ns) else "")
        self.index = index or ifindex(dev, ns)
        self._next = 0.0
        self._gone: str | None = None

    def gone(self) -> str | None:
        now = time.monotonic()
        if self._gone is not None or now < self._next:
            return self._gone
        self._next = now + self.every
        try:
            with in_netns(self.ns):
                socket.if_indextoname(self.index)
        except PytraceError:
            self._gone = f"{self.where}: the namespace was deleted"
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENODEV, errno.ENOENT, errno.EINVAL):
                raise
            self._gone = f"{self.where} was deleted"
        return self._gone


# -- network namespaces that pytrace builds ----------------------------------------------

NETNS_RUN_DIR = "/run/netns"
MS_BIND, MS_REC, MS_SHARED, MNT_DETACH = 0x1000, 0x4000, 0x100000, 2


def create_netns(name: str, what: str) -> None:
    """`ip netns add name`, with pytrace's owner mark (core/owner.py) on the
    namespace's loopback device before its name exists: a namespace that
    has a name has a mark, even if we are killed in between.  A namespace of
    that name that a dead pytrace left is removed first; any other one is an
    error."""
    from . import leftovers
    if not name or "/" in name or name in (".", "..") or len(name) > 255:
        raise UsageError(f"'{name}' is not a network namespace name (1-255 characters, no '/')")
    path = f"{NETNS_RUN_DIR}/{name}"
    if os.path.lexists(path) and not leftovers.remove_dead_netns(name):
        raise PytraceError(f"network namespace {name} already exists")
    _shared_run_dir()
    failed: list[BaseException] = []
    # unshare() moves the calling thread to the new namespace for good: a thread of its own does it
    worker = threading.Thread(target=_make_netns, args=(path, what, failed), name="pytrace-netns")
    worker.start()
    worker.join()
    if failed:
        exc = failed[0]
        if isinstance(exc, FileExistsError):
            raise PytraceError(f"network namespace {name} already exists") from None
        if isinstance(exc, OSError):
            raise PytraceError(f"cannot create network namespace {name}: {exc.strerror}") from None
        raise exc


def _make_netns(path: str, what: str, failed: list[BaseException]) -> None:
    from . import owner, rtnl
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = C.get_errno()
            raise OSError(err, os.strerror(err))
        with rtnl.Rtnl() as nl:
            nl.set_alias(1, owner.netns_mark(what))      # lo is ifindex 1 in every namespace
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
            err = C.get_errno()
            os.unlink(path)
            raise OSError(err, os.strerror(err))
    except BaseException as exc:
        failed.append(exc)


def _shared_run_dir() -> None:
    """/run/netns as `ip netns add` leaves it: a shared mount point, so that
    namespace mounts propagate to other mount namespaces."""
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None)
    _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None)


def delete_netns(name: str) -> bool:
    """`ip netns del name`: the namespace goes (with its devices and their
    filters) once nothing else holds it.  False if there was no such name."""
    path = f"{NETNS_RUN_DIR}/{name}"
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
