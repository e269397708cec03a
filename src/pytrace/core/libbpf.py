"""ctypes binding to libbpf.so.1: the only module that declares C prototypes.

libbpf 1.1.2 (Debian 12) is the API floor: every function used here exists in
its export list.  Which copy is used (`origin`, shown by `pytrace doctor`):
  override  $PYTRACE_LIBBPF, and nothing else when it is set;
  system    the system's libbpf.so.1, when present and 1.1 or newer (it gets
            the distribution's fixes);
  bundled   else the copy build.py put in the wheel (pytrace/lib/), with the
            libraries it needs that a minimal host may lack (libelf.so.1):
            those are loaded first, by absolute path, unless the system has
            them, so the dynamic loader resolves libbpf's DT_NEEDED to them.

libbpf's own log goes through Python logging (logger "pytrace.libbpf"),
quiet unless -v raised the level.
"""

from __future__ import annotations

import ctypes as C
import os
import sys

from . import barelibbpf
from .errors import PytraceError
from .libbpf_protos import OPEN_OPTS, PROTOTYPES

MIN_VERSION = (1, 1)
LOGGER = "pytrace.libbpf"


def _logger():
    # logging is imported only when the log is wanted: it costs ~15 ms of start-up
    import logging
    return logging.getLogger(LOGGER)


def _log_wanted() -> bool:
    """True when the program configured logging so that libbpf's INFO shows."""
    logging = sys.modules.get("logging")
    return logging is not None and logging.getLogger(LOGGER).isEnabledFor(logging.INFO)

_lib: C.CDLL | None = None
_libc: C.CDLL | None = None
lib_path: str = ""          # the file loaded (symlinks resolved)
origin: str = ""            # "override", "system" or "bundled"
deps_bundled: list[str] = []  # bundled dependencies loaded for the bundled copy

# A string, not a pathlib.Path: pathlib costs a tool ~3 ms of start-up.
LIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "lib")
# What libbpf.so.1 links besides libc: bundled by build.py only if listed in
# BUNDLED_DEPS (libz is everywhere: dpkg, rpm and Python itself need it).
BUNDLED_DEPS = ("libelf.so.1",)
INSTALL_HINT = ("install libbpf 1.1 or newer (Debian/Ubuntu: apt-get install libbpf1; "
                "Fedora/RHEL: dnf install libbpf) or set PYTRACE_LIBBPF to a libbpf.so.1")


# libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
_PRINT_FN = C.CFUNCTYPE(C.c_int, C.c_int, C.c_char_p, C.c_void_p)


# the scalar kinds of core/libbpf_protos as ctypes types
_SCALARS = {"int": C.c_int, "u32": C.c_uint32, "u64": C.c_uint64, "bool": C.c_bool, "size": C.c_size_t,
            "str": C.c_char_p, "ptr": C.c_void_p}


class OpenOpts(C.Structure):
    """struct bpf_object_open_opts (libbpf_protos.OPEN_OPTS)."""
    _fields_ = [(name, _SCALARS[kind]) for name, kind in OPEN_OPTS]


class TcHook(C.Structure):
    """struct bpf_tc_hook."""
    _fields_ = [("sz", C.c_size_t), ("ifindex", C.c_int), ("attach_point", C.c_int),
                ("parent", C.c_uint32)]


class TcOpts(C.Structure):
    """struct bpf_tc_opts."""
    _fields_ = [("sz", C.c_size_t), ("prog_fd", C.c_int), ("flags", C.c_uint32),
                ("prog_id", C.c_uint32), ("handle", C.c_uint32), ("priority", C.c_uint32)]


class TracepointOpts(C.Structure):
    """struct bpf_tracepoint_opts (libbpf 1.1): a cookie per attachment."""
    _fields_ = [("sz", C.c_size_t), ("bpf_cookie", C.c_uint64)]


class UprobeOpts(C.Structure):
    """struct bpf_uprobe_opts (libbpf 1.1)."""
    _fields_ = [("sz", C.c_size_t), ("ref_ctr_offset", C.c_size_t), ("bpf_cookie", C.c_uint64),
                ("retprobe", C.c_bool), ("func_name", C.c_char_p)]


class TestRunOpts(C.Structure):
    """struct bpf_test_run_opts (libbpf 1.1): running a syscall program uses
    only the context fields."""
    _fields_ = [("sz", C.c_size_t), ("data_in", C.c_void_p), ("data_out", C.c_void_p),
                ("data_size_in", C.c_uint32), ("data_size_out", C.c_uint32),
                ("ctx_in", C.c_void_p), ("ctx_out", C.c_void_p),
                ("ctx_size_in", C.c_uint32), ("ctx_size_out", C.c_uint32),
                ("retval", C.c_uint32), ("repeat", C.c_int), ("duration", C.c_uint32),
                ("flags", C.c_uint32), ("cpu", C.c_uint32), ("batch_size", C.c_uint32)]

# core/libbpf_protos' kinds as ctypes types
KINDS: dict[str, object] = {
    **_SCALARS, "void": None, "print_fn": _PRINT_FN, "size*": C.POINTER(C.c_size_t),
    "OpenOpts*": C.POINTER(OpenOpts), "TracepointOpts*": C.POINTER(TracepointOpts),
    "UprobeOpts*": C.POINTER(UprobeOpts), "TcHook*": C.POINTER(TcHook), "TcOpts*": C.POINTER(TcOpts),
}


def _candidates() -> list[tuple[str, str]]:
    """(origin, what to dlopen), best first."""
    env = os.environ.get("PYTRACE_LIBBPF")
    if env:
        return [("override", env)]
    out = [("system", "libbpf.so.1")]
    bundled = os.path.join(LIB_DIR, "libbpf.so.1")
    if os.path.exists(bundled):
        out.append(("bundled", bundled))
    return out


class _LinkMap(C.Structure):
    """The head of glibc's struct link_map (dlinfo RTLD_DI_LINKMAP)."""
    _fields_ = [("l_addr", C.c_void_p), ("l_name", C.c_char_p)]


def loaded_file(handle: C.CDLL) -> str:
    """The file the dynamic loader actually mapped for a handle, symlinks resolved."""
    RTLD_DI_LINKMAP = 2
    for where in (None, "libdl.so.2"):  # dlinfo moved into libc in glibc 2.34
        try:
            dlinfo = C.CDLL(where).dlinfo
        except (OSError, AttributeError):
            continue
        dlinfo.argtypes = [C.c_void_p, C.c_int, C.c_void_p]
        lm = C.POINTER(_LinkMap)()
        if dlinfo(handle._handle, RTLD_DI_LINKMAP, C.byref(lm)) == 0 and lm and lm.contents.l_name:
            return os.path.realpath(lm.contents.l_name.decode())
    return handle._name


def _preload_bundled_deps() -> list[str]:
    """Make the bundled libbpf's dependencies resolvable: the system's if any, else ours."""
    used = []
    for soname in BUNDLED_DEPS:
        try:
            C.CDLL(soname)
            continue
        except OSError:
            pass
        copy = os.path.join(LIB_DIR, soname)
        if os.path.exists(copy):
            C.CDLL(copy)  # by absolute path; its soname then satisfies libbpf's DT_NEEDED
            used.append(soname)
    return used


def _version_of(lib: C.CDLL) -> tuple[int, int]:
    lib.libbpf_major_version.restype = C.c_uint32
    lib.libbpf_minor_version.restype = C.c_uint32
    return lib.libbpf_major_version(), lib.libbpf_minor_version()


@_PRINT_FN
def _print(level: int, fmt: bytes, va_list: int) -> int:
    # Format with the C library's vsnprintf: libbpf hands us a va_list.
    # (Registered only while the log is enabled: formatting costs time.)
    buf = C.create_string_buffer(1 << 17)  # verifier logs are long
    _libc.vsnprintf(buf, len(buf), fmt, C.c_void_p(va_list))
    msg = buf.value.decode(errors="replace").rstrip()
    if msg:
        import logging
        _logger().log({LIBBPF_WARN: logging.WARNING, LIBBPF_INFO: logging.INFO}.get(level, logging.DEBUG),
                "%s", msg)
    return 0


def lib() -> C.CDLL:
    """Load and bind libbpf once; raise PytraceError with what to install if impossible."""
    global _lib, _libc, lib_path, origin, deps_bundled
    if _lib is not None:
        return _lib
    tried = []
    for kind, cand in _candidates():
        try:
            deps = _preload_bundled_deps() if kind == "bundled" else []
            handle = C.CDLL(cand, use_errno=True)
        except OSError as exc:
            tried.append(f"{kind} {cand}: {exc}")
            continue
        try:
            version = _version_of(handle)
        except AttributeError:
            tried.append(f"{kind} {cand}: not libbpf 1.x")
            continue
        if version < MIN_VERSION:
            tried.append(f"{kind} {cand}: version {version[0]}.{version[1]} is older than "
                         f"{MIN_VERSION[0]}.{MIN_VERSION[1]}")
            continue
        _lib, lib_path, origin, deps_bundled = handle, loaded_file(handle), kind, deps
        break
    if _lib is None:
        if os.environ.get("PYTRACE_LIBBPF"):
            raise PytraceError(f"PYTRACE_LIBBPF: cannot use {'; '.join(tried)}")
        raise PytraceError(f"no usable libbpf.so.1: {INSTALL_HINT} (tried: {'; '.join(tried)})")
    for name, (res, args) in PROTOTYPES.items():
        fn = getattr(_lib, name, None)
        if fn is None:  # optional in this libbpf build
            continue
        fn.restype, fn.argtypes = KINDS[res], [KINDS[a] for a in args]
    _libc = C.CDLL(None, use_errno=True)
    _libc.vsnprintf.argtypes = [C.c_char_p, C.c_size_t, C.c_char_p, C.c_void_p]
    set_log(_log_wanted())
    return _lib


def set_log(enabled: bool) -> None:
    """Route libbpf's log to Python logging, or silence it (the default)."""
    _lib.libbpf_set_print(_print if enabled else _PRINT_FN())


def version() -> str:
    lb = lib()
    return lb.libbpf_version_string().decode()


def strerror(err: int) -> str:
    err = abs(err)
    buf = C.create_string_buffer(256)
    lib().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode()


def open_object(path: str, programs, map_sizes, btf_path: str | None) -> tuple[int, set[str]]:
    """bpf_object__open_file() with only `programs` to be loaded (all if None)
    and maps resized: (the libbpf object, the names of its programs).
    BpfObject.open() uses it; cli/prefetch opens the same way through
    barelibbpf.  Raises OSError; the caller closes the object on later errors."""
    lb = lib()
    opts = None
    if btf_path:
        opts = OpenOpts(sz=C.sizeof(OpenOpts), btf_custom_path=btf_path.encode())
    name = os.path.basename(path)
    ptr = check_ptr(lb.bpf_object__open_file(path.encode(), opts), f"open {name}")
    try:
        known = barelibbpf.prepare(lb, ptr, programs, map_sizes, check)
    except BaseException:
        lb.bpf_object__close(ptr)
        raise
    return ptr, known


def section(ptr: int, name: str) -> tuple[int, int]:
    """(address, size) of a global-data section's image (.rodata...), (0, 0) if none."""
    lb = lib()
    m = lb.bpf_object__find_map_by_name(ptr, name.encode())
    if not m:
        return 0, 0
    size = C.c_size_t()
    addr = lb.bpf_map__initial_value(m, C.byref(size))
    return (addr, size.value) if addr else (0, 0)


def check(ret: int, what: str) -> int:
    """Raise OSError for a negative libbpf return (libbpf 1.x returns -errno)."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {strerror(ret)}")
    return ret


def check_ptr(ptr: int | None, what: str) -> int:
    """Pointer-returning libbpf calls give NULL and set errno."""
    if not ptr:
        err = C.get_errno() or 22
        raise OSError(err, f"{what}: {strerror(err)}")
    return ptr
