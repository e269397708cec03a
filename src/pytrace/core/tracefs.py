"""tracefs for classic tracepoints: mounted on demand, unmounted if we mounted it.

Classic tracepoint attachment resolves the tracepoint id through tracefs.  Some
hosts (and `ip netns exec`, which remounts /sys) have it unmounted; the loader
mounts it when a classic tracepoint variant is chosen and, being a guest,
unmounts it again when the tool exits.
"""

from __future__ import annotations

import ctypes as C
import os

PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
MNT_DETACH = 2


def mounted() -> str | None:
    for p in PATHS:
        if os.path.exists(os.path.join(p, "events")):
            return p
    return None


def ensure() -> bool:
    """Mount tracefs if needed. True when this call mounted it (caller unmounts)."""
    if mounted():
        return False
    libc = C.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", PATHS[0].encode(), b"tracefs", 0, None) != 0:
        err = C.get_errno()
        raise OSError(err, f"mount tracefs on {PATHS[0]}: {os.strerror(err)}")
    return True


def unmount() -> None:
    libc = C.CDLL(None, use_errno=True)
    libc.umount2(PATHS[0].encode(), MNT_DETACH)
