"""libbpf through _ctypes alone: the calls of the speculative load at start-up.

cli/prefetch starts loading a remembered object in a thread before the CLI
imports anything, and every millisecond before that thread starts is one
more before the first event (the load is the critical path of start-up).
The ctypes package costs ~3.5 ms to import (os, struct, its own classes),
the C module under it ~0.6 ms.  So the dozen calls made before the thread
starts go through _ctypes directly: the same dlopen (the library is then
shared with core/libbpf's binding), the same foreign calls with the GIL
released, declared with _ctypes' simple types.  Everything else uses
core/libbpf.

prepare() is the step between opening an object and loading it, shared
with core/libbpf.open_object so both loads are made the same way.
"""

from __future__ import annotations

import _ctypes

from .libbpf_protos import BARE, OPEN_OPTS, PROTOTYPES


class _Ptr(_ctypes._SimpleCData):
    _type_ = "P"        # ctypes.c_void_p: an int or None


class _Str(_ctypes._SimpleCData):
    _type_ = "z"        # ctypes.c_char_p: bytes or None


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _UInt(_ctypes._SimpleCData):
    _type_ = "I"


class _Bool(_ctypes._SimpleCData):
    _type_ = "?"


class _Size(_ctypes._SimpleCData):
    _type_ = "L"        # size_t on LP64, the only ABI libbpf's hosts have here


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


# core/libbpf_protos' kinds as _ctypes types (a struct pointer is passed as an address)
KINDS = {"int": _Int, "u32": _UInt, "bool": _Bool, "size": _Size, "str": _Str, "ptr": _Ptr, "void": None,
         "print_fn": _Ptr}


class _OpenOpts(_ctypes.Structure):
    _fields_ = [(name, KINDS[kind]) for name, kind in OPEN_OPTS]


def open_opts(btf_custom_path: str) -> _OpenOpts:
    """bpf_object_open_opts naming the BTF to relocate against; pass
    _ctypes.addressof() of it, and keep it until the open returns."""
    return _OpenOpts(sz=_ctypes.sizeof(_OpenOpts), btf_custom_path=btf_custom_path.encode())


def _kind(name: str):
    return _Ptr if name.endswith("*") else KINDS[name]


class Library:
    """libbpf at `path` (and the libraries in `first`, by absolute path,
    before it: the bundled copy's dependencies), its log silenced as
    core/libbpf leaves it by default.  Raises OSError."""

    def __init__(self, path: str, first=()):
        for dep in first:
            _ctypes.dlopen(dep, 0)
        self._handle = _ctypes.dlopen(path, 0)    # ctypes.CDLL's mode (_ctypes adds RTLD_NOW)
        for name in BARE:
            restype, argtypes = PROTOTYPES[name]
            fn = _Function((name, self))
            fn.restype, fn.argtypes = _kind(restype), tuple(_kind(a) for a in argtypes)
            setattr(self, name, fn)
        self.libbpf_set_print(None)     # libbpf's default prints its warnings on stderr


# Large per-socket hashes are declared BPF_F_NO_PREALLOC: preallocating 65536
# elements is ~2 ms of a tool's start-up, and since 6.1 (bpf_mem_alloc) an
# element allocated on insert costs about the same.  Older kernels refuse
# run-time allocation to these program types under PREEMPT_RT and warn about
# it otherwise (a kernel WARN in dmesg), so an object loading any of them gets
# its hashes preallocated, as declared before.  BPF_PROG_TYPE_TRACING (tp_btf,
# fentry), which needs a newer kernel anyway, was never restricted.
_PREALLOC_ONLY = frozenset((2, 5, 7, 17, 24))  # kprobe, tracepoint, perf_event, raw_tp, raw_tp_writable
_HASHES = frozenset((1, 5))                   # BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH
BPF_F_NO_PREALLOC = 1


def prepare(lb, ptr: int, programs, map_sizes, check) -> set[str]:
    """An opened object made ready to load: only `programs` autoloaded (all
    if None), hashes preallocated where those need it, maps resized.  lb is
    either binding; check(ret, what) raises on a negative libbpf return.
    Returns the names of the object's programs."""
    known = set()
    prealloc = False
    prog = lb.bpf_object__next_program(ptr, None)
    while prog:
        name = lb.bpf_program__name(prog).decode()
        known.add(name)
        if programs is not None:
            lb.bpf_program__set_autoload(prog, name in programs)
        if (programs is None or name in programs) and lb.bpf_program__type(prog) in _PREALLOC_ONLY:
            prealloc = True
        prog = lb.bpf_object__next_program(ptr, prog)
    if prealloc:
        m = lb.bpf_object__next_map(ptr, None)
        while m:
            flags = lb.bpf_map__map_flags(m)
            if flags & BPF_F_NO_PREALLOC and lb.bpf_map__type(m) in _HASHES:
                check(lb.bpf_map__set_map_flags(m, flags & ~BPF_F_NO_PREALLOC), "preallocate a hash map")
            m = lb.bpf_object__next_map(ptr, m)
    for map_name, size in map_sizes:
        if not 0 < size < 1 << 32:      # ctypes would pass it on modulo 2**32
            from .errors import UsageError
            raise UsageError(f"map {map_name}: {size} entries is not a size the kernel takes (1..4294967295)")
        m = lb.bpf_object__find_map_by_name(ptr, map_name.encode())
        if not m:
            check(-2, f"find map {map_name}")     # ENOENT
        check(lb.bpf_map__set_max_entries(m, size), f"resize {map_name}")
    return known
