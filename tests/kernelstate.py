"""What pytrace can leave in the kernel, listed fast: BPF programs, maps and
links (by ID, through the bpf syscall), tracefs mounts and kprobe/uprobe
events.  The kernel matrix checks every case with it: a snapshot before, and
nothing new after (programs are freed asynchronously: we wait a little)."""

from __future__ import annotations

import ctypes
import os
import time

_NR_BPF = 321   # x86_64
_GET_NEXT_ID = {"prog": 11, "map": 12, "link": 31}   # BPF_{PROG,MAP,LINK}_GET_NEXT_ID
_libc = ctypes.CDLL(None, use_errno=True)


class _NextId(ctypes.Structure):
    _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


def bpf_ids(kind: str) -> set[int]:
    """IDs of every BPF object of a kind (prog, map, link) loaded now."""
    attr, ids = _NextId(), set()
    while True:
        if _libc.syscall(_NR_BPF, _GET_NEXT_ID[kind], ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            return ids          # ENOENT: the end (EINVAL: no links before 5.8)
        ids.add(attr.next_id)
        attr.start_id = attr.next_id


def _tracefs_points() -> list[str]:
    # not the automount under debugfs: libbpf looks for /sys/kernel/debug/tracing
    # to find tracefs, and where debugfs is mounted that look mounts it
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh
                if " - tracefs " in line and line.split()[4] != "/sys/kernel/debug/tracing"]


def _tracefs_mounts() -> int:
    return len(_tracefs_points())


def _probe_events() -> set[str]:
    # only where tracefs is mounted already: looking under debugfs's
    # tracing/ would mount it (an automount), and that would count as left
    lines = set()
    for base in _tracefs_points():
        for name in ("kprobe_events", "uprobe_events"):
            try:
                with open(f"{base}/{name}") as fh:
                    lines.update(f"{name}: {line.strip()}" for line in fh if line.strip())
            except OSError:
                continue
    return lines


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def snapshot() -> dict:
    return {"prog": bpf_ids("prog"), "map": bpf_ids("map"), "link": bpf_ids("link"),
            "tracefs mounts": _tracefs_mounts(), "probe events": _probe_events(), "netns": _netns()}


def left_since(before: dict, timeout: float = 10.0) -> dict:
    """What is in the kernel now and was not in `before`, after waiting up to
    timeout for asynchronous frees; {} when nothing is left."""
    end = time.monotonic() + timeout
    while True:
        now = snapshot()
        left = {}
        for key, value in now.items():
            if isinstance(value, set):
                extra = value - before[key]
                if extra:
                    left[key] = sorted(extra)
            elif value > before[key]:
                left[key] = value - before[key]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)
