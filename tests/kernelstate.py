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
    timeout for asynchronous frees; {} when nothing is left.  BPF objects
    another live process holds are not counted: on a shared machine they are
    that process's (this process's own count: a tracer left open is a leak)."""
    end = time.monotonic() + timeout
    while True:
        now = snapshot()
        new_bpf = any(now[k] - before[k] for k in _GET_NEXT_ID)
        others = held_ids(but=os.getpid()) if new_bpf else {}     # a /proc walk: only when needed
        left = {}
        for key, value in now.items():
            if isinstance(value, set):
                extra = value - before[key] - others.get(key, set())
                if extra:
                    left[key] = sorted(extra)
            elif value > before[key]:
                left[key] = value - before[key]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def held_ids(but: int | None = None) -> dict[str, set[int]]:
    """IDs of the BPF programs, maps and links that some live process (but pid
    `but`) holds a descriptor of (from /proc/*/fdinfo).  On a machine shared with other
    tests, what is new but held by a live process is theirs or still running,
    not something a dead process left behind."""
    held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if but is not None and int(pid) == but:
            continue
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
