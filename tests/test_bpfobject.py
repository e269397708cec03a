"""BpfObject's life cycle at the libbpf boundary: a closed object refuses use
with an error instead of handing libbpf a NULL object (which crashed the
interpreter)."""

from __future__ import annotations

import pytest

from scaffolding import bpf_object
from pytrace.core.bpfobject import BpfObject
from pytrace.core.errors import PytraceError


def test_a_closed_object_raises_instead_of_crashing():
    obj = BpfObject(bpf_object("testdrop"), programs={"testdrop_ingress"}, rodata={"target_port": 1})
    with obj:
        assert obj.map(".bss").fd >= 0
        assert obj.program_fd("testdrop_ingress") >= 0
    with pytest.raises(PytraceError, match="closed"):
        obj.map(".bss")
    with pytest.raises(PytraceError, match="closed"):
        obj.program("testdrop_ingress")
    obj.close()                                 # closing twice is harmless
