"""tracefs for classic tracepoints: mounted on demand, unmounted if we mounted it.

Classic tracepoint attachment resolves the tracepoint id through tracefs.  Some
hosts (and `ip netns exec`, which remounts /sys) have it unmounted; the loader
mounts it when a classic tracepoint variant is chosen and, being a guest,
unmounts it again when the tool exits.

Whether tracefs is mounted is read from the mount table, not from its files:
a user with CAP_BPF and CAP_PERFMON but not root finds /sys/kernel/tracing
mounted and closed to it (mode 700), and is told that, not to mount it.
"""

from __future__ import annotations

import ctypes as C
import os

PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
MNT_DETACH = 2


def _mount_points() -> set[str]:
    """Where tracefs is mounted in this mount namespace."""
    points = set()
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields, _, rest = line.partition(" - ")
                if rest.split(" ", 1)[0] == "tracefs":
                    points.add(fields.split(" ")[4])
    except OSError:
        pass
    return points


def mounted() -> str | None:
    """Where tracefs is mounted (the first of PATHS), reachable or not."""
    for p in PATHS:
        if os.path.exists(os.path.join(p, "events")):
            return p
    points = _mount_points()
    for p in PATHS:
        if p in points:
            return p
    return None


def closed(where: str) -> str | None:
    """Why this process cannot use tracefs mounted at where, or None if it can."""
    try:
        os.stat(os.path.join(where, "events"))
        return None
    except PermissionError:
        pass
    except OSError as exc:
        return str(exc.strerror)
    try:
        mode = f"mode {os.stat(where).st_mode & 0o777:o}"
    except OSError:
        mode = "closed"
    return f"closed to uid {os.geteuid()} ({mode}): classic tracepoints need root or CAP_DAC_READ_SEARCH"


def ensure() -> bool:
    """Mount tracefs if needed. True when this call mounted it (caller unmounts).
    OSError if it is mounted and closed to us, or cannot be mounted."""
    where = mounted()
    if where is not None:
        why = closed(where)
        if why is not None:
            raise OSError(13, f"tracefs is mounted at {where} but {why}")      # EACCES
        return False
    libc = C.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", PATHS[0].encode(), b"tracefs", 0, None) != 0:
        err = C.get_errno()
        raise OSError(err, f"mount tracefs on {PATHS[0]}: {os.strerror(err)}")
    return True


def unmount() -> None:
    libc = C.CDLL(None, use_errno=True)
    libc.umount2(PATHS[0].encode(), MNT_DETACH)
