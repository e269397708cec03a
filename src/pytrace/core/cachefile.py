"""Files pytrace keeps between runs, under /run/pytrace ($PYTRACE_CACHE):
the kernel feature probes, the remembered loads and arguments of cli/prefetch,
the compiled row code of core/rows and the reduced kernel BTF of
core/corebtf.  Nothing there outlives a reboot.  PYTRACE_NO_CACHE=1 turns
the cache off: nothing is read, nothing written.

Four of them steer what a root process loads, runs or dlopens, so nobody
else may be able to plant or replace them:

- the directory is created 0700, and before anything in it is read it is
  opened (O_NOFOLLOW: not a symlink) and checked: ours (the effective
  user's), a directory, writable by no group and no other user.  Any other
  directory is not used at all (said once, under -v);
- files are opened through that directory's descriptor with O_NOFOLLOW,
  and read only if they are regular files of ours that no one else can
  write (the trust model of .pyc files);
- a file is written whole into a temporary file of a name no one can
  guess, created with O_EXCL|O_NOFOLLOW (never someone else's file, never
  through a link), fchmod'ed 0600 and renamed over the old one.

Missing, untrusted or unwritable files are never an error: the caller then
works without the cache.
"""

from __future__ import annotations

# posix, not os: cli/prefetch reads its file before anything else is
# imported, and os costs ~1.5 ms of start-up there (write() imports it)
import marshal
import posix
import sys

_dir = posix.environ.get(b"PYTRACE_CACHE")
DIR = _dir.decode(sys.getfilesystemencoding(), "surrogateescape") if _dir else "/run/pytrace"
ENABLED = posix.environ.get(b"PYTRACE_NO_CACHE", b"") in (b"", b"0")

_S_IFMT, _S_IFDIR, _S_IFREG = 0o170000, 0o040000, 0o100000
_OPEN_DIR = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
# O_NONBLOCK: a FIFO in the directory must not hang the open
_OPEN_READ = posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC | posix.O_NONBLOCK
_OPEN_NEW = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC

# (DIR, descriptor or -1) of the directory as checked, once per process and
# DIR (tests point DIR elsewhere); the reason it is not used, until said
_checked: tuple[str, int] | None = None
_untrusted: str | None = None


def _dir_fd(create: bool = False) -> int:
    """A descriptor of DIR if it is trustworthy, else -1 (create: make it first if missing)."""
    global _checked, _untrusted
    if not ENABLED:
        return -1
    if _checked is not None:
        if _checked[0] == DIR:
            return _checked[1]
        if _checked[1] >= 0:
            posix.close(_checked[1])
        _checked = None
    try:
        fd = posix.open(DIR, _OPEN_DIR)
    except FileNotFoundError:
        if not create:
            return -1           # nothing cached yet: looked at again when something is written
        try:
            import os
            os.makedirs(DIR, 0o700, exist_ok=True)      # the umask can only narrow 0700
            fd = posix.open(DIR, _OPEN_DIR)
        except OSError:
            return -1           # a read-only /run: work without the cache
    except OSError as exc:      # ELOOP: a symlink; ENOTDIR, EACCES...
        _checked, _untrusted = (DIR, -1), f"cannot open it as a directory ({exc.strerror})"
        _say()
        return -1
    st = posix.fstat(fd)
    why = None
    if st.st_uid != posix.geteuid():
        why = f"owned by uid {st.st_uid}, not {posix.geteuid()}"
    elif st.st_mode & 0o022:
        why = f"writable by others (mode {st.st_mode & 0o7777:o})"
    if why is not None:
        posix.close(fd)
        fd = -1
        _untrusted = why
    _checked = (DIR, fd)
    _say()
    return fd


def _say() -> None:
    """Why the cache is not used, once, if logging shows debug messages (-v):
    logging is imported only by -v (it costs start-up), so it is looked up."""
    global _untrusted
    logging = sys.modules.get("logging")
    if _untrusted is None or logging is None:
        return
    log = logging.getLogger("pytrace.cache")
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"not using the cache directory {DIR}: {_untrusted}")
        _untrusted = None


def read(name: str) -> bytes | None:
    """The bytes of DIR/name, or None if it is missing or not trusted."""
    dfd = _dir_fd()
    if dfd < 0:
        _say()
        return None
    try:
        fd = posix.open(name, _OPEN_READ, dir_fd=dfd)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if st.st_mode & _S_IFMT != _S_IFREG or st.st_uid != posix.geteuid() or st.st_mode & 0o022:
            return None
        chunks = []
        while True:
            chunk = posix.read(fd, max(st.st_size, 4096))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        posix.close(fd)


def boot_id() -> str:
    """This boot's id (/proc/sys/kernel/random/boot_id), "" if unreadable:
    what is kept for one boot only (probe results, the reduced BTF) says so."""
    try:
        fd = posix.open("/proc/sys/kernel/random/boot_id", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return posix.read(fd, 64).decode().strip()
    except OSError:
        return ""
    finally:
        posix.close(fd)


def usable() -> bool:
    """Whether files can be kept: DIR is (or now is) a trustworthy directory."""
    return _dir_fd(create=True) >= 0


def trusted_path(name: str) -> str | None:
    """DIR/name for a library that opens it by name (libbpf's btf_custom_path),
    if it is a file read() would trust; else None.  Nobody else can replace
    it afterwards: the directory is ours and writable by no one else."""
    dfd = _dir_fd()
    if dfd < 0:
        return None
    try:
        st = posix.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return None
    if st.st_mode & _S_IFMT != _S_IFREG or st.st_uid != posix.geteuid() or st.st_mode & 0o022:
        return None
    return f"{DIR}/{name}"


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
    if not ENABLED:
        return
    try:
        data = marshal.dumps(value)
    except ValueError:
        return
    write(name, data)


def write(name: str, data: bytes) -> None:
    """Replace DIR/name with data (nothing happens on a read-only /run, or
    in a directory that is not trusted)."""
    dfd = _dir_fd(create=True)
    if dfd < 0:
        _say()
        return
    import os
    tmp = f".{name}.{os.urandom(8).hex()}.tmp"      # not guessable, and never an existing file
    try:
        fd = os.open(tmp, _OPEN_NEW, 0o600, dir_fd=dfd)
    except OSError:
        return
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)    # replaces a link itself, never its target
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
