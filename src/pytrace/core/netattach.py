"""Attach programs to network devices (tc clsact, XDP), in any network namespace,
and take them off again.

tc filters made through netlink (all libbpf 1.1 offers: no tcx links) outlive
the process that made them, so every attachment registers its own removal on
the BpfObject: the filter is detached, and the clsact qdisc is deleted if we
created it.  XDP uses a BPF link, which the kernel also removes when the
process dies.  Namespaces are named as `ip netns` does (/run/netns/NAME), by
path (/proc/PID/ns/net) or by inode number.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import errno
import os
import socket
import threading
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


def attach_tc(obj: BpfObject, prog: str, dev: str, direction: str, ns: str | int | None = None,
              priority: int = 1) -> None:
    """Attach a SEC("tc") program to dev's clsact ingress or egress; undone on obj.close()."""
    lb = libbpf.lib()
    point = {"ingress": BPF_TC_INGRESS, "egress": BPF_TC_EGRESS}.get(direction)
    if point is None:
        raise UsageError(f"direction {direction}: ingress or egress")
    idx = ifindex(dev, ns)
    hook = libbpf.TcHook(sz=C.sizeof(libbpf.TcHook), ifindex=idx, attach_point=point)
    opts = libbpf.TcOpts(sz=C.sizeof(libbpf.TcOpts), prog_fd=obj.program_fd(prog), priority=priority)
    with in_netns(ns):
        ret = lb.bpf_tc_hook_create(C.byref(hook))
        created = ret == 0
        if ret not in (0, -errno.EEXIST):
            libbpf.check(ret, f"create clsact on {dev}")
        ret = lb.bpf_tc_attach(C.byref(hook), C.byref(opts))
        if ret < 0:
            if created:
                _destroy_clsact(idx)
            libbpf.check(ret, f"tc attach {prog} to {dev} {direction}")
    handle, prio = opts.handle, opts.priority

    def undo() -> None:
        with in_netns(ns):
            h = libbpf.TcHook(sz=C.sizeof(libbpf.TcHook), ifindex=idx, attach_point=point)
            o = libbpf.TcOpts(sz=C.sizeof(libbpf.TcOpts), handle=handle, priority=prio)
            lb.bpf_tc_detach(C.byref(h), C.byref(o))
            if created:
                _destroy_clsact(idx)
    obj.on_close(undo)


def _destroy_clsact(idx: int) -> None:
    hook = libbpf.TcHook(sz=C.sizeof(libbpf.TcHook), ifindex=idx,
                         attach_point=BPF_TC_INGRESS | BPF_TC_EGRESS)
    libbpf.lib().bpf_tc_hook_destroy(C.byref(hook))


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
