"""One table of libbpf's C prototypes (core/libbpf_protos.py) for both
bindings: every kind it uses is one core/libbpf can bind, every call the
bare binding makes is in it with kinds core/barelibbpf can bind, and the
installed libbpf.so.1 has every call the bare binding needs.  No privilege
needed: dlopen and symbol lookups only."""

from __future__ import annotations

from pytrace.core import barelibbpf, libbpf
from pytrace.core.libbpf_protos import BARE, PROTOTYPES


def kinds_of(name: str) -> list[str]:
    ret, args = PROTOTYPES[name]
    return [ret, *args]


def test_every_kind_of_the_table_has_a_ctypes_type():
    used = {k for name in PROTOTYPES for k in kinds_of(name)}
    assert used <= set(libbpf.KINDS), sorted(used - set(libbpf.KINDS))


def test_the_bare_binding_binds_its_calls_from_the_same_table():
    assert set(BARE) <= set(PROTOTYPES), sorted(set(BARE) - set(PROTOTYPES))
    for name in BARE:
        for kind in kinds_of(name):
            assert kind.endswith("*") or kind in barelibbpf.KINDS, (name, kind)


def test_the_installed_libbpf_has_every_call_of_the_bare_binding():
    lib = libbpf.lib()
    missing = [name for name in BARE if getattr(lib, name, None) is None]
    assert not missing, missing
    first = tuple(f"{libbpf.LIB_DIR}/{dep}" for dep in libbpf.deps_bundled)
    bare = barelibbpf.Library(libbpf.lib_path, first)
    assert all(callable(getattr(bare, name)) for name in BARE)
