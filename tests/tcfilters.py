"""tc state as an administrator sees it (`tc -j`), and an administrator's own
counting filters (tests/bpf/testcount.bpf.c), for the tests of pytrace's tc
manners: coexistence (test_tc_coexist.py) and leftovers (test_leftovers.py).

An AdminFilter is attached with plain bpf_tc_attach at the priority and
handle the test names, as a network plugin or an administrator does: it is
not pytrace's (no owner mark), and it counts the IPv4 frames it sees.
"""

from __future__ import annotations

import ctypes as C
import json
import subprocess

from scaffolding import bpf_object
from pytrace.core import libbpf, netattach, owner
from pytrace.core.bpfobject import BpfObject

POINT = {"ingress": netattach.BPF_TC_INGRESS, "egress": netattach.BPF_TC_EGRESS}


def filters(ns: str, dev: str, direction: str) -> list[dict]:
    """The filters on a hook: {"prio", "handle", "prog_id", "name"} each, in chain order."""
    out = subprocess.run(["tc", "-n", ns, "-j", "filter", "show", "dev", dev, direction],
                         capture_output=True, text=True)
    found = []
    for f in json.loads(out.stdout or "[]"):
        opts = f.get("options")
        if opts is None:
            continue            # the (prio, protocol) list's own entry
        found.append({"prio": f["pref"], "handle": int(opts["handle"], 16),
                      "prog_id": opts.get("prog", {}).get("id", 0), "name": opts.get("prog", {}).get("name", "")})
    return found


def ours(ns: str, dev: str, pid: int | None = None) -> list[dict]:
    """pytrace's filters on both hooks (of one owner, if pid is given)."""
    found = []
    for d in ("ingress", "egress"):
        for f in filters(ns, dev, d):
            mark = owner.handle_owner(f["handle"])
            if mark is not None and (pid is None or mark[0] == pid):
                found.append({**f, "direction": d, "pid": mark[0]})
    return found


def has_clsact(ns: str, dev: str) -> bool:
    out = subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
    return "clsact" in out


def xdp_attached(ns: str, dev: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "link", "show", dev], capture_output=True, text=True).stdout
    return " xdp" in out or "prog/xdp" in out


class AdminFilter:
    """testcount_<verdict> (ok: ends the chain; pass: lets it go on) on one hook."""

    def __init__(self, ns: str, dev: str, direction: str, prio: int, handle: int, verdict: str):
        self.ns, self.dev, self.direction, self.prio, self.handle = ns, dev, direction, prio, handle
        self.counter = f"{verdict}_frames"
        self.obj = BpfObject(bpf_object("testcount"), programs={f"testcount_{verdict}"})
        try:
            self.obj.load()
            idx = netattach.ifindex(dev, ns)
            self._hook = libbpf.TcHook(sz=C.sizeof(libbpf.TcHook), ifindex=idx, attach_point=POINT[direction])
            opts = libbpf.TcOpts(sz=C.sizeof(libbpf.TcOpts), prog_fd=self.obj.program_fd(f"testcount_{verdict}"),
                                 handle=handle, priority=prio)
            with netattach.in_netns(ns):
                libbpf.check(libbpf.lib().bpf_tc_attach(C.byref(self._hook), C.byref(opts)), "admin filter")
            self.prog_id = opts.prog_id
        except BaseException:
            self.obj.close()
            raise

    @property
    def count(self) -> int:
        return self.obj.global_u64(self.counter).value

    def entry(self) -> dict:
        return {"prio": self.prio, "handle": self.handle, "prog_id": self.prog_id}

    def close(self) -> None:
        opts = libbpf.TcOpts(sz=C.sizeof(libbpf.TcOpts), handle=self.handle, priority=self.prio)
        with netattach.in_netns(self.ns):
            libbpf.lib().bpf_tc_detach(C.byref(self._hook), C.byref(opts))
        self.obj.close()


def admin_entries(ns: str, dev: str, direction: str) -> list[dict]:
    """The filters on a hook that are not pytrace's, as AdminFilter.entry() gives them."""
    return [{k: f[k] for k in ("prio", "handle", "prog_id")} for f in filters(ns, dev, direction)
            if owner.handle_owner(f["handle"]) is None]
