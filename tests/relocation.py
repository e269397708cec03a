"""Programs as libbpf relocated them, for comparing the kernel BTFs CO-RE
can relocate against: the kernel's own, core/corebtf's reduced one, the one
pytrace carries for a kernel without BTF (test_corebtf, test_nobtf)."""

from __future__ import annotations

import ctypes as C

from pytrace.core import libbpf, objects
from pytrace.core.bpfobject import BpfObject

LD_IMM64 = 0x18
# ld_imm64 source registers whose immediate is a map's fd: another fd each load
PSEUDO_MAP = {1, 2, 5, 6}       # MAP_FD, MAP_VALUE, MAP_IDX, MAP_IDX_VALUE
SHIPPED = [n[:-len(".bpf.o")] for n in objects.manifest()["objects"]]
# relocated against the kernel's own BTF, by (object, program): the same in
# every test of a session, and each load costs seconds under the lab's TCG
_own: dict[tuple[str, str], bytes] = {}


def programs_of(name: str) -> list[str]:
    lb = libbpf.lib()
    ptr = libbpf.check_ptr(lb.bpf_object__open_file(objects.path(name).encode(), None), name)
    try:
        out, prog = [], lb.bpf_object__next_program(ptr, None)
        while prog:
            out.append(lb.bpf_program__name(prog).decode())
            prog = lb.bpf_object__next_program(ptr, prog)
        return out
    finally:
        lb.bpf_object__close(ptr)


def relocated(name: str, program: str, btf: str) -> tuple[bytes | None, str | None]:
    """(program's instructions as libbpf loaded them, map fds blanked, or None
    if the load was refused; the reduced BTF used, if any).  btf: "own" (the
    kernel's, or the one given or carried where it has none), "reduced"
    (None, None if the object gets none), or "default" (what a tool would use)."""
    if btf == "own" and (name, program) in _own:
        return _own[name, program], None
    obj = BpfObject(name, programs=[program])
    obj._own_btf = btf == "own"
    try:
        try:
            obj.open()
        except OSError:             # refused before libbpf (kfuncs without the kernel's BTF)
            return None, None
        used = obj.relocation_btf
        if btf == "reduced" and used is None:
            return None, None
        try:
            obj.relocation_btf = None       # no retry against the kernel's own: what was asked must do
            obj.load()
        except OSError:
            return None, used
        lb = libbpf.lib()
        prog = lb.bpf_object__find_program_by_name(obj.ptr, program.encode())
        count = lb.bpf_program__insn_cnt(prog)
        code = bytearray(C.string_at(lb.bpf_program__insns(prog), count * 8))
        for at in range(0, len(code), 8):
            if code[at] == LD_IMM64 and code[at + 1] >> 4 in PSEUDO_MAP:
                code[at + 4:at + 8] = bytes(4)
        if btf == "own":
            _own[name, program] = bytes(code)
        return bytes(code), used
    finally:
        obj.close()


def every_program(btf: str) -> dict[str, dict[str, str | None]]:
    """{object: {program: hex of relocated() or None}} for every shipped object."""
    out = {}
    for name in SHIPPED:
        out[name] = {}
        for program in programs_of(name):
            code, _ = relocated(name, program, btf)
            out[name][program] = code.hex() if code is not None else None
    return out


if __name__ == "__main__":      # for a run in another mount namespace (test_nobtf)
    import json
    import sys
    json.dump(every_program(sys.argv[1]), sys.stdout)
