"""Files pytrace keeps between runs, under /run/pytrace ($PYTRACE_CACHE):
the kernel feature probes, the remembered loads and arguments of core/prefetch
and the compiled row code of core/rows.  Nothing there outlives a reboot.

Three of them steer what a root process loads or runs, so a file is read only
if it is ours and no one else can write it (the trust model of .pyc files),
and written whole (a temporary file renamed over it), readable by all.
Missing, untrusted or unwritable files are never an error: the caller then
works without the cache.
"""

from __future__ import annotations

# posix, not os: core/prefetch reads its file before anything else is
# imported, and os costs ~1.5 ms of start-up there (write() imports it)
import marshal
import posix
import sys

_dir = posix.environ.get(b"PYTRACE_CACHE")
DIR = _dir.decode(sys.getfilesystemencoding(), "surrogateescape") if _dir else "/run/pytrace"


def read(name: str) -> bytes | None:
    """The bytes of DIR/name, or None if it is missing or not trusted."""
    try:
        with open(f"{DIR}/{name}", "rb") as fh:
            st = posix.fstat(fh.fileno())
            if st.st_uid != posix.geteuid() or st.st_mode & 0o022:
                return None
            return fh.read()
    except OSError:
        return None


def read_dict(name: str) -> dict:
    """The dict marshalled in DIR/name (prefetch's remembered loads, rows'
    compiled code); {} if it is missing, untrusted or not a dict."""
    data = read(name)
    try:
        value = marshal.loads(data) if data is not None else {}
    except (ValueError, EOFError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def write_dict(name: str, value: dict) -> None:
    """Replace DIR/name with value, marshalled; nothing if marshal cannot
    store one of its values."""
    try:
        data = marshal.dumps(value)
    except ValueError:
        return
    write(name, data)


def write(name: str, data: bytes) -> None:
    """Replace DIR/name with data (nothing happens on a read-only /run)."""
    import os
    path = os.path.join(DIR, name)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(DIR, exist_ok=True)
        with open(tmp, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
