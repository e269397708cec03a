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


def _tracefs_mounts() -> int:
    with open("/proc/self/mountinfo") as fh:
        return sum(" - tracefs " in line for line in fh)


def _probe_events() -> set[str]:
    lines = set()
    for base in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
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


def held_ids() -> dict[str, set[int]]:
    """IDs of the BPF programs, maps and links that some live process holds a
    descriptor of (from /proc/*/fdinfo).  On a machine shared with other
    tests, what is new but held by a live process is theirs or still running,
    not something a dead process left behind."""
    held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    for line in fh:
                        key, _, value = line.partition(":")
                        kind = {"prog_id": "prog", "map_id": "map", "link_id": "link"}.get(key)
                        if kind:
                            held[kind].add(int(value))
            except (OSError, ValueError):
                continue
    return held
