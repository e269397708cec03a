"""Facts about the running kernel from its BTF, through libbpf's btf API.

Used where values differ between kernels and must not be hard-coded, e.g.
the enum skb_drop_reason names for tcpdrop/skbdrop.  Honours an external BTF
file (PYTRACE_BTF / --btf) like the loader does.
"""

from __future__ import annotations

import ctypes as C
from functools import lru_cache

from . import libbpf, objects
from .errors import PytraceError

BTF_KIND_ENUM, BTF_KIND_ENUM64 = 6, 19


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


def drop_reasons() -> dict[int, str]:
    """enum skb_drop_reason as {value: 'NO_SOCKET', ...} (prefix SKB_DROP_REASON_ removed)."""
    prefix = "SKB_DROP_REASON_"
    return {v: (n[len(prefix):] if n.startswith(prefix) else n)
            for v, n in enum_values("skb_drop_reason").items()}
