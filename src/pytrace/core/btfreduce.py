"""The kernel's BTF cut down to given root types and what they are made
of: core/corebtf's file (see there for why, and for what is kept).

Reads /sys/kernel/btf/vmlinux; libbpf's own parse of it gives the types'
offsets and finds them by name, in C.
"""

from __future__ import annotations

import posix
import struct

from .btf import (ARRAY, CONST, ENUM, ENUM64, FLOAT, FUNC_PROTO, FWD, INT, PTR, RESTRICT, STRUCT, TYPE_TAG,
                  TYPEDEF, UNION, VOLATILE)
from .corebtf import BTF_DIR, KERNEL_BTF

_REFERS = {PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
# what a relocation's root can be (named, and not a function, variable or section)
_ROOT_KINDS = {INT, STRUCT, UNION, ENUM, FWD, TYPEDEF, FLOAT, ENUM64}


class Unusable(Exception):
    """The kernel's BTF could not be read or reduced."""


def essential_name(name: str) -> str:
    """libbpf's bpf_core_essential_name_len: `name` up to its last flavour
    separator, an X___Y with X and Y not underscores (cgroup___ids -> cgroup)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


class _Source:
    """The kernel's raw BTF, with its types' offsets found as needed.

    Walking all ~125k types in Python to index them costs ~85 ms; only the
    types the closure reaches are needed, so the offsets come from libbpf's
    own parse (btf__type_by_id, ~12 ms in C) and are looked up, not walked."""

    def __init__(self, data: bytes):
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise ValueError("not raw BTF")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self.data = data
        self.t0, self.t1 = hdr_len + type_off, hdr_len + type_off + type_len
        self.s0 = hdr_len + str_off
        self.strings = data[self.s0:self.s0 + str_len]
        from . import libbpf
        self._lb = libbpf.lib()
        self._btf = self._lb.btf__parse(KERNEL_BTF.encode(), None)
        if not self._btf:
            raise ValueError("libbpf cannot parse the kernel's BTF")
        self.count = self._lb.btf__type_cnt(self._btf)
        self._base = self._lb.btf__type_by_id(self._btf, 1)
        self._off: dict[int, int] = {}

    def close(self) -> None:
        self._lb.btf__free(self._btf)

    def offset(self, tid: int) -> int:
        """Where type tid's record starts in data."""
        off = self._off.get(tid)
        if off is None:
            off = self._off[tid] = self.t0 + self._lb.btf__type_by_id(self._btf, tid) - self._base
        return off

    def in_modules(self, roots) -> set[str]:
        """The names of `roots` that a loaded module's BTF has a type for."""
        found: set[str] = set()
        if not roots:
            return found
        for module in sorted(posix.listdir(BTF_DIR)):
            if module == "vmlinux":
                continue
            btf = self._lb.btf__parse_split(f"{BTF_DIR}/{module}".encode(), self._btf)
            if not btf:
                continue
            try:
                for name, kind in roots:
                    for k in (ENUM, ENUM64) if kind in (ENUM, ENUM64) else (kind,):
                        if self._lb.btf__find_by_name_kind(btf, name.encode(), k) > 0:
                            found.add(name)
            finally:
                self._lb.btf__free(btf)
        return found

    def record(self, tid: int) -> tuple[int, int, int, int, int, int]:
        """(name_off, info, size_or_type, kind, vlen, offset of the extra bytes)."""
        off = self.offset(tid)
        name_off, info, size_type = struct.unpack_from("<III", self.data, off)
        return name_off, info, size_type, (info >> 24) & 0x1F, info & 0xFFFF, off + 12

    def name(self, off: int) -> bytes:
        return self.strings[off:self.strings.index(b"\0", off)]

    def ids_named(self, name: str, kind: int) -> list[int]:
        """The kernel's type of this name and kind (an enum's: either width).

        libbpf's candidate search takes every type of the essential name;
        btf__find_by_name_kind gives the first, in C (~0.1 ms: a Python walk
        over all types would cost ~85).  The kernel rarely has two types of
        one name and kind, and a load this makes fail is retried against the
        kernel's own BTF (BpfObject.load), once a boot."""
        out = []
        for k in (ENUM, ENUM64) if kind in (ENUM, ENUM64) else (kind,):
            tid = self._lb.btf__find_by_name_kind(self._btf, name.encode(), k)
            if tid > 0:
                out.append(tid)
        return out


def reduce_kernel(roots) -> tuple[bytes, set[str], set[str]]:
    """(raw BTF of the candidates of `roots`, (name, kind) pairs, and what
    they are made of; the names the kernel's BTF has no type for; those of
    them a loaded module's BTF has).  Raises Unusable."""
    try:
        with open(KERNEL_BTF, "rb") as fh:
            data = fh.read()
        src = _Source(data)
        try:
            image, absent = _reduce(src, roots)
            return image, absent, src.in_modules({r for r in roots if r[0] in absent})
        finally:
            src.close()
    except (OSError, ValueError, struct.error) as exc:
        raise Unusable(str(exc)) from None


def _reduce(src: _Source, roots) -> tuple[bytes, set[str]]:
    found: dict[str, list[int]] = {}
    for name, kind in sorted(roots):
        found.setdefault(name, []).extend(src.ids_named(name, kind))
    absent = {name for name, ids in found.items() if not ids}
    start = sorted({tid for ids in found.values() for tid in ids})
    # pointers on a root's own chain of typedefs and modifiers keep their target
    whole_ptrs = set()
    for tid in start:
        while tid:
            _n, _i, ref, kind, _v, _x = src.record(tid)
            if kind not in _REFERS:
                break
            if kind == PTR:
                whole_ptrs.add(tid)
            tid = ref
    new_id: dict[int, int] = {}
    order: list[int] = []
    void_ptr = [0]          # the one `void *` every other pointer becomes

    def want(tid: int) -> int:
        if tid == 0:
            return 0
        if tid not in new_id:
            kind = src.record(tid)[3]
            if kind == PTR and tid not in whole_ptrs:
                if not void_ptr[0]:
                    order.append(-1)
                    void_ptr[0] = len(order)
                new_id[tid] = void_ptr[0]
            else:
                order.append(tid)
                new_id[tid] = len(order)
        return new_id[tid]

    for tid in start:
        want(tid)
    strings = {b"": 0}
    string_table = [b"\0"]
    string_end = [1]

    def string(off: int) -> int:
        text = src.name(off)
        if text not in strings:
            strings[text] = string_end[0]
            string_table.append(text + b"\0")
            string_end[0] += len(text) + 1
        return strings[text]

    out = []
    i = 0
    while i < len(order):           # want() appends as members are met
        tid = order[i]
        i += 1
        if tid == -1:
            out.append(struct.pack("<III", 0, PTR << 24, 0))
            continue
        name_off, info, size_type, kind, vlen, x = src.record(tid)
        data = src.data
        if kind in _REFERS:
            out.append(struct.pack("<III", string(name_off), info, want(size_type)))
        elif kind in (STRUCT, UNION):
            members = [struct.unpack_from("<III", data, x + 12 * k) for k in range(vlen)]
            out.append(struct.pack("<III", string(name_off), info, size_type))
            out.extend(struct.pack("<III", string(m_name), want(m_type), m_off) for m_name, m_type, m_off in members)
        elif kind == ARRAY:
            elem, index, nelems = struct.unpack_from("<III", data, x)
            out.append(struct.pack("<III", 0, info, 0))
            out.append(struct.pack("<III", want(elem), want(index), nelems))
        elif kind in (ENUM, ENUM64):
            size = 8 if kind == ENUM else 12
            out.append(struct.pack("<III", string(name_off), info, size_type))
            for k in range(vlen):
                item = x + size * k
                out.append(struct.pack("<I", string(struct.unpack_from("<I", data, item)[0])))
                out.append(data[item + 4:item + size])
        elif kind == FUNC_PROTO:
            params = [struct.unpack_from("<II", data, x + 8 * k) for k in range(vlen)]
            out.append(struct.pack("<III", 0, info, want(size_type)))
            out.extend(struct.pack("<II", string(p_name), want(p_type)) for p_name, p_type in params)
        elif kind in (INT, FWD, FLOAT):
            out.append(struct.pack("<III", string(name_off), info, size_type))
            out.append(data[x:x + 4] if kind == INT else b"")     # an INT's encoding word
        else:               # FUNC, VAR, DATASEC, DECL_TAG: never what a type is made of
            raise ValueError(f"type {tid} of kind {kind} met in a type's closure")
    types = b"".join(out)
    names = b"".join(string_table)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(names))
    return header + types + names, absent
