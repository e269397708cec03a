"""Facts about the running kernel from its BTF, through libbpf's btf API.

Used where values differ between kernels and must not be hard-coded, e.g.
the enum skb_drop_reason names for tcpdrop/skbdrop.  Honours an external BTF
file (PYTRACE_BTF / --btf) like the loader does.
"""

from __future__ import annotations

import ctypes as C
import struct
from functools import lru_cache

from . import libbpf, objects
from .errors import PytraceError

BTF_KIND_ENUM, BTF_KIND_FUNC, BTF_KIND_ENUM64 = 6, 12, 19


class _BtfType(C.Structure):
    _fields_ = [("name_off", C.c_uint32), ("info", C.c_uint32), ("size", C.c_uint32)]


class _BtfEnum(C.Structure):
    _fields_ = [("name_off", C.c_uint32), ("val", C.c_int32)]


class _BtfEnum64(C.Structure):
    _fields_ = [("name_off", C.c_uint32), ("val_lo32", C.c_uint32), ("val_hi32", C.c_uint32)]


@lru_cache(maxsize=1)
def _vmlinux() -> int:
    lb = libbpf.lib()
    custom = objects.custom_btf()
    ptr = lb.btf__parse(custom.encode(), None) if custom else lb.btf__load_vmlinux_btf()
    if not ptr:
        raise PytraceError("cannot load the kernel's BTF (/sys/kernel/btf/vmlinux or PYTRACE_BTF)")
    return ptr


@lru_cache(maxsize=None)
def func_arg_count(name: str) -> int | None:
    """How many arguments the kernel function `name` takes (its BTF), None if unknown."""
    lb = libbpf.lib()
    btf = _vmlinux()
    tid = lb.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_FUNC)
    if tid <= 0:
        return None
    func = _BtfType.from_address(lb.btf__type_by_id(btf, tid))
    proto = _BtfType.from_address(lb.btf__type_by_id(btf, func.size))     # a FUNC's "size" is its proto's id
    return proto.info & 0xFFFF


@lru_cache(maxsize=None)
def enum_values(name: str) -> dict[int, str]:
    """{value: enumerator name} of a kernel enum; {} if this kernel has no such enum."""
    lb = libbpf.lib()
    btf = _vmlinux()
    for kind, member in ((BTF_KIND_ENUM, _BtfEnum), (BTF_KIND_ENUM64, _BtfEnum64)):
        tid = lb.btf__find_by_name_kind(btf, name.encode(), kind)
        if tid <= 0:
            continue
        t = _BtfType.from_address(lb.btf__type_by_id(btf, tid))
        vlen = t.info & 0xFFFF
        base = C.addressof(t) + C.sizeof(_BtfType)
        out = {}
        for i in range(vlen):
            m = member.from_address(base + i * C.sizeof(member))
            val = m.val if member is _BtfEnum else (m.val_hi32 << 32) | m.val_lo32
            out[val] = lb.btf__name_by_offset(btf, m.name_off).decode()
        return out
    return {}


@lru_cache(maxsize=None)
def enum_with_member(member: str) -> dict[int, str]:
    """{value: enumerator name} of the kernel enum, named or anonymous, that has
    the enumerator `member` (NET_RX_SOFTIRQ's enum has no name); {} if none.

    libbpf finds types by name only, and walking the ~100k types through ctypes
    costs a tenth of a second at start-up; instead the raw BTF is searched for
    the enumerator's string offset and the enum around that spot is checked.
    """
    path = objects.custom_btf() or "/sys/kernel/btf/vmlinux"
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    except (OSError, struct.error):
        return {}
    if magic != 0xEB9F:      # not raw BTF (e.g. an ELF file): caller falls back
        return {}
    t0, t1 = hdr_len + type_off, hdr_len + type_off + type_len
    strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
    pos = strings.find(b"\0" + member.encode() + b"\0")
    if pos < 0:
        return {}
    needle = struct.pack("<I", pos + 1)
    hit = data.find(needle, t0, t1)
    while hit >= 0:
        if (hit - t0) % 4 == 0:
            found = _enum_around(data, t0, t1, hit, strings)
            if found:
                return found
        hit = data.find(needle, hit + 1, t1)
    return {}


def _enum_around(data: bytes, t0: int, t1: int, hit: int, strings: bytes) -> dict[int, str] | None:
    """The enum whose k-th member name sits at `hit`, if the bytes before it are
    an ENUM/ENUM64 header and every member names a string: else None."""
    def name(off: int) -> str | None:
        if off <= 0 or off >= len(strings) or strings[off - 1] != 0:
            return None
        return strings[off:strings.index(b"\0", off)].decode(errors="replace")

    for kind, msize in ((BTF_KIND_ENUM, 8), (BTF_KIND_ENUM64, 12)):
        for k in range(0, 4096):
            hdr = hit - 12 - msize * k
            if hdr < t0:
                break
            _name_off, info, _size = struct.unpack_from("<III", data, hdr)
            vlen = info & 0xFFFF
            if (info >> 24) & 0x1F != kind or k >= vlen or hdr + 12 + msize * vlen > t1:
                continue
            out = {}
            for i in range(vlen):
                m = hdr + 12 + msize * i
                if kind == BTF_KIND_ENUM:
                    off, val = struct.unpack_from("<Ii", data, m)
                else:
                    off, lo, hi = struct.unpack_from("<III", data, m)
                    val = (hi << 32) | lo
                text = name(off)
                if text is None:
                    break
                out[val] = text
            else:
                return out
    return None


def drop_reasons() -> dict[int, str]:
    """enum skb_drop_reason as {value: 'NO_SOCKET', ...} (prefix SKB_DROP_REASON_ removed)."""
    prefix = "SKB_DROP_REASON_"
    return {v: (n[len(prefix):] if n.startswith(prefix) else n)
            for v, n in enum_values("skb_drop_reason").items()}
