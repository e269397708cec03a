"""The reduced kernel BTF that CO-RE relocation runs against (core/corebtf,
core/btfreduce): every program of every shipped object comes out of
relocation exactly as it does against the kernel's whole BTF; the file is
made once a boot; a load it makes fail falls back to the kernel's own BTF
and says so once.  Part of the kernel matrix: each kernel's BTF is reduced
and compared there."""

from __future__ import annotations

import os
import socket

import pytest

from helpers import tcp_roundtrip
from relocation import SHIPPED, below_floor_programs, relocated
from pytrace import tools as registry
from pytrace.commands.listing import _variants
from pytrace.core import cachefile, corebtf, loader
from pytrace.core.bpfobject import BpfObject
from pytrace.core.net import TcpState as S
from pytrace.tools.tcpstates import TcpStates

CLIENT = [(S.CLOSE, S.SYN_SENT), (S.SYN_SENT, S.ESTABLISHED), (S.ESTABLISHED, S.FIN_WAIT1),
          (S.FIN_WAIT1, S.FIN_WAIT2), (S.FIN_WAIT2, S.CLOSE)]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache directory of the test's own: the reduced BTF is made there afresh."""
    path = tmp_path / "cache"
    monkeypatch.setattr(cachefile, "DIR", str(path))
    return path


@pytest.fixture(scope="module")
def sweep_cache(tmp_path_factory):
    """One cache directory for the whole sweep: its reduced BTF is made once,
    not once an object (each making reads the kernel's whole BTF; the file
    is the same every time, and the sweep's loads never mark an object
    refused in it: they do not retry without it)."""
    path = tmp_path_factory.mktemp("corebtf") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cachefile, "DIR", str(path))
        yield path


@pytest.mark.matrix
@pytest.mark.parametrize("name", SHIPPED)
def test_every_program_relocates_as_against_the_whole_btf(name, sweep_cache):
    # those below this kernel's floor each by itself: a refusal costs one load, not relocated()'s halvings
    whole, _ = relocated(name, "own", alone=below_floor_programs(name))
    # a program this kernel refuses whatever the BTF (its floor, fentry here) is not compared
    loadable = [program for program, code in whole.items() if code is not None]
    compared = 0
    if loadable:
        cut, used = relocated(name, "reduced", loadable)
        if used is None:
            core = BpfObject(name).types.core
            info = next((cachefile.read_dict(p.name) for p in sweep_cache.glob("corebtf-*.info")), {})
            in_modules = {r for r, _kind in core.get("roots", ())} & set(info.get("in_modules", ()))
            assert core.get("target_ids") or not core.get("roots") or in_modules, \
                f"{name} has relocations and yet no reduced BTF"
            return
        for program in loadable:
            assert cut[program] is not None, f"{program}: refused when relocated against {used}"
            assert cut[program] == whole[program], f"{program}: relocated differently against the reduced BTF"
            compared += 1
    if compared or name == "probe":
        return
    variants = _variants(registry.load(name)) if name in registry.names() else []
    planned, reasons = loader.planned(variants)
    if variants and planned is None:
        pytest.skip(f"{name}: this kernel is below every variant's floor ({'; '.join(reasons)})")
    pytest.fail(f"no program of {name} loads on this kernel")


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


def test_without_a_cache_to_keep_it_the_kernels_own_serves(own_cache):
    """PYTRACE_NO_CACHE, or a directory another user could write: nothing is
    made (it would be made again at every load), the kernel's BTF serves."""
    own_cache.mkdir(mode=0o700)
    os.chmod(own_cache, 0o777)
    with TcpStates() as tracer:
        assert tracer.obj.relocation_btf is None
    assert not list(own_cache.glob("corebtf-*"))
