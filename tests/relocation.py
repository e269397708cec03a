"""Programs as libbpf relocated them, for comparing the kernel BTFs CO-RE
can relocate against: the kernel's own, core/corebtf's reduced one, the one
pytrace carries for a kernel without BTF (test_corebtf, test_nobtf)."""

from __future__ import annotations

import ctypes as C
from typing import Iterable

from pytrace.core import libbpf, objects
from pytrace.core.bpfobject import BpfObject

LD_IMM64 = 0x18
# ld_imm64 source registers whose immediate is a map's fd: another fd each load
PSEUDO_MAP = {1, 2, 5, 6}       # MAP_FD, MAP_VALUE, MAP_IDX, MAP_IDX_VALUE
SHIPPED = [n[:-len(".bpf.o")] for n in objects.manifest()["objects"]]
# relocated against the kernel's own BTF, by (object, program), None where
# refused: the same in every test of a session, and each load costs seconds
# under the lab's TCG
_own: dict[tuple[str, str], bytes | None] = {}


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


def _load_together(name: str, group: list[str], btf: str) -> tuple[dict[str, bytes | None] | None, str | None]:
    """The programs of `group` loaded together, as relocated() gives them, or
    None if the load was refused (one program of the group or more)."""
    obj = BpfObject(name, programs=group)
    obj._own_btf = btf == "own"
    try:
        try:
            obj.open()
        except OSError:             # refused before libbpf (kfuncs without the kernel's BTF): all alike
            return dict.fromkeys(group), None
        used = obj.relocation_btf
        if btf == "reduced" and used is None:
            return dict.fromkeys(group), None
        try:
            obj.relocation_btf = None       # no retry against the kernel's own: what was asked must do
            obj.load()
        except OSError:
            return None, used
        lb = libbpf.lib()
        out: dict[str, bytes | None] = {}
        for program in group:
            prog = lb.bpf_object__find_program_by_name(obj.ptr, program.encode())
            count = lb.bpf_program__insn_cnt(prog)
            code = bytearray(C.string_at(lb.bpf_program__insns(prog), count * 8))
            for at in range(0, len(code), 8):
                if code[at] == LD_IMM64 and code[at + 1] >> 4 in PSEUDO_MAP:
                    code[at + 4:at + 8] = bytes(4)
            out[program] = bytes(code)
        return out, used
    finally:
        obj.close()


def relocated(name: str, btf: str, programs: list[str] | None = None, *, alone: Iterable[str] = ()
              ) -> tuple[dict[str, bytes | None], str | None]:
    """({program: its instructions as libbpf loaded them, map fds blanked, or
    None if its load was refused}, the reduced BTF used, if any) for the
    object's programs (all, or those named).  btf: "own" (the kernel's, or
    the one given or carried where it has none), "reduced" (every program
    None, and None used, if the object gets none), or "default" (what a tool
    would use).

    The programs are loaded together, one object load for all of them (under
    the lab's TCG each load's own cost, maps and BTF parsing, is most of it);
    a load the kernel refuses is split in halves until each refused program
    stands alone, so a refusal is still told program by program.  A
    program's instructions do not depend on the others loaded with it.
    `alone`: programs the caller expects to be refused (a variant below this
    kernel's floor), each loaded by itself from the start: a refused one
    then costs one load, not its share of the halvings.  Only the cost
    depends on it: every program is loaded and judged all the same."""
    names = programs_of(name) if programs is None else list(programs)
    codes: dict[str, bytes | None] = {}
    if btf == "own":
        codes = {p: _own[name, p] for p in names if (name, p) in _own}
    used = None
    alone = set(alone)
    pending = [[p] for p in reversed(names) if p in alone and p not in codes]
    pending.append([p for p in names if p not in alone and p not in codes])
    while pending:
        group = pending.pop()
        if not group:
            continue
        got, used_here = _load_together(name, group, btf)
        used = used or used_here
        if got is not None:
            codes.update(got)
        elif len(group) == 1:
            codes[group[0]] = None
        else:
            pending += [group[len(group) // 2:], group[:len(group) // 2]]
    if btf == "own":
        _own.update(((name, p), code) for p, code in codes.items())
    return {p: codes[p] for p in names}, used


def kernel_btf_programs(name: str) -> set[str]:
    """The programs of an object that cannot load without the kernel's own
    BTF, whatever relocates: those whose attach target is found in it
    (tp_btf, fentry/fexit, iterators, LSM), or all of an object with kfunc
    externs (libbpf resolves them in the running kernel's BTF).  One open
    of the object for all its programs."""
    if name not in _kernel_btf:
        if BpfObject(name).types.ksyms:
            _kernel_btf[name] = set(programs_of(name))
        else:
            lb = libbpf.lib()
            ptr = libbpf.check_ptr(lb.bpf_object__open_file(objects.path(name).encode(), None), name)
            try:
                found, prog = set(), lb.bpf_object__next_program(ptr, None)
                while prog:
                    if lb.bpf_program__section_name(prog).decode().split("/")[0] in _BY_KERNEL_BTF:
                        found.add(lb.bpf_program__name(prog).decode())
                    prog = lb.bpf_object__next_program(ptr, prog)
            finally:
                lb.bpf_object__close(ptr)
            _kernel_btf[name] = found
    return _kernel_btf[name]


def below_floor_programs(name: str) -> set[str]:
    """The programs of a tool's variants this kernel is below the floor of
    (the kernel refuses them, whatever the BTF): relocated()'s `alone`."""
    from pytrace import tools as registry
    from pytrace.commands.listing import _variants
    if name not in registry.names():
        return set()
    return {p for v in _variants(registry.load(name)) if v.unmet() is not None for p in v.programs}


_BY_KERNEL_BTF = ("tp_btf", "fentry", "fexit", "fmod_ret", "iter", "lsm")
_kernel_btf: dict[str, set[str]] = {}


def every_program(btf: str) -> dict[str, dict[str, str | None]]:
    """{object: {program: hex of relocated() or None}} for every shipped object."""
    hidden = not objects.kernel_has_btf()       # test_nobtf's run: those needing it are refused
    out = {}
    for name in SHIPPED:
        alone = below_floor_programs(name) | (kernel_btf_programs(name) if hidden else set())
        codes, _ = relocated(name, btf, alone=alone)
        out[name] = {program: code.hex() if code is not None else None for program, code in codes.items()}
    return out


if __name__ == "__main__":      # for a run in another mount namespace (test_nobtf)
    import json
    import sys
    json.dump(every_program(sys.argv[1]), sys.stdout)
