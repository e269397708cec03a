"""The reduced kernel BTF that CO-RE relocation runs against (core/corebtf,
core/btfreduce): every program of every shipped object comes out of
relocation exactly as it does against the kernel's whole BTF; the file is
made once a boot; a load it makes fail falls back to the kernel's own BTF
and says so once.  Part of the kernel matrix: each kernel's BTF is reduced
and compared there."""

from __future__ import annotations

import ctypes as C
import os
import socket

import pytest

from helpers import tcp_roundtrip
from pytrace.core import cachefile, corebtf, libbpf, objects
from pytrace.core.bpfobject import BpfObject
from pytrace.core.net import TcpState as S
from pytrace.tools.tcpstates import TcpStates

LD_IMM64 = 0x18
# ld_imm64 source registers whose immediate is a map's fd: another fd each load
PSEUDO_MAP = {1, 2, 5, 6}       # MAP_FD, MAP_VALUE, MAP_IDX, MAP_IDX_VALUE
CLIENT = [(S.CLOSE, S.SYN_SENT), (S.SYN_SENT, S.ESTABLISHED), (S.ESTABLISHED, S.FIN_WAIT1),
          (S.FIN_WAIT1, S.FIN_WAIT2), (S.FIN_WAIT2, S.CLOSE)]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache directory of the test's own: the reduced BTF is made there afresh."""
    path = tmp_path / "cache"
    monkeypatch.setattr(cachefile, "DIR", str(path))
    return path


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


def relocated(name: str, program: str, reduced: bool) -> tuple[bytes | None, str | None]:
    """(the program's instructions as libbpf loaded them, map fds blanked, or
    None if the load was refused; the reduced BTF used, if any)."""
    obj = BpfObject(name, programs=[program])
    obj._own_btf = not reduced
    try:
        obj.open()
        used = obj.relocation_btf
        if reduced and used is None:
            return None, None
        try:
            # no retry against the kernel's own BTF here: the reduced one must do
            obj.relocation_btf = None
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
        return bytes(code), used
    finally:
        obj.close()


SHIPPED = [n[:-len(".bpf.o")] for n in objects.manifest()["objects"]]


@pytest.mark.matrix
@pytest.mark.parametrize("name", SHIPPED)
def test_every_program_relocates_as_against_the_whole_btf(name, own_cache):
    compared = 0
    for program in programs_of(name):
        whole, _ = relocated(name, program, reduced=False)
        if whole is None:
            continue            # this kernel refuses the program whatever the BTF (its floor, fentry here)
        cut, used = relocated(name, program, reduced=True)
        if used is None:
            core = BpfObject(name).types.core
            assert core.get("target_ids") or not core.get("roots"), \
                f"{name} has relocations and yet no reduced BTF"
            return
        assert cut is not None, f"{program}: refused when relocated against {used}"
        assert cut == whole, f"{program}: relocated differently against the reduced BTF"
        compared += 1
    assert compared or name == "probe", f"no program of {name} loads on this kernel"


def test_made_once_a_boot_and_much_smaller(own_cache):
    with TcpStates():
        pass
    made = sorted(p.name for p in own_cache.glob("corebtf-*"))
    assert len(made) == 2, made            # the BTF and what is known of it
    btf = next(own_cache.glob("corebtf-*.btf"))
    assert corebtf.of_this_boot(str(btf))
    assert btf.stat().st_size * 20 < os.stat(corebtf.KERNEL_BTF).st_size
    stamp = btf.stat().st_mtime_ns
    with TcpStates() as tracer:
        assert tracer.obj.relocation_btf == str(btf)
    assert btf.stat().st_mtime_ns == stamp


def test_a_load_it_makes_fail_falls_back_once(own_cache):
    """A reduced BTF that lacks what tcpstates reads (here: nothing in it at
    all) fails the load; the kernel's own BTF then serves, the events are
    exact, and the object is not given the reduced BTF again this boot."""
    with TcpStates():
        pass
    btf = next(own_cache.glob("corebtf-*.btf"))
    empty = (0xEB9F).to_bytes(2, "little") + bytes([1, 0]) + (24).to_bytes(4, "little") + bytes(12) \
        + (1).to_bytes(4, "little") + b"\0"
    btf.write_bytes(empty)
    with TcpStates() as tracer:
        assert tracer.obj.relocation_btf is None
        conn = tcp_roundtrip()
        events = list(tracer.events(duration=0.3))
    client = [e for e in events if e.rport == conn.server_port and e.lport in (0, conn.client_port)]
    assert [(e.oldstate, e.newstate) for e in client] == CLIENT
    assert all(e.pid == os.getpid() and e.family == socket.AF_INET for e in client[:1])
    assert all(str(e.laddr) == str(e.raddr) == "127.0.0.1" for e in client)
    info = cachefile.read_dict(next(own_cache.glob("corebtf-*.info")).name)
    assert info["refused"] == ["tcpstates.bpf.o"]
    obj = BpfObject("tcpstates")
    try:
        obj.open()
        assert obj.relocation_btf is None
    finally:
        obj.close()
