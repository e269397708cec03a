"""The kernel matrix's own rules: every shipped variant has a matrix case, each
floor is declared, the default choice is the one `pytrace list` predicts, and
a refusal is paid once per boot."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

import matrix
from helpers import run_cli
from scaffolding import bpf_object
from pytrace import tools as registry
from pytrace.commands.listing import _variants
from pytrace.core import features, loader
from pytrace.core.errors import PytraceError
from pytrace.core.loader import Variant

HERE = os.path.dirname(os.path.abspath(__file__))
# what a tool's class needs to be made at all (everything else has a default)
REQUIRED = {"count": {"tracepoints": ["syscalls:sys_enter_connect"]},
            "stackcount": {"patterns": ["t:syscalls:sys_enter_connect"]},
            "tunnelmon": {"dev": "lo"}}
# vnet picks a hook per point (tc, xdp, or the device tracepoints); its
# tests force each, and `pytrace list` shows the method a point gets by default
PER_POINT = {"vnet"}


def shipped() -> dict[str, list]:
    """tool -> its variants, as `pytrace list` sees them."""
    out = {}
    for name in registry.names():
        variants = _variants(registry.load(name))
        if variants:
            out[name] = variants
    return out


def tracer_class(name: str):
    declared = registry.spec(name)
    if declared is not None:
        return declared.tracer
    module = registry.load(name)
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "VARIANTS", None):
            return value
    return None


def test_every_shipped_variant_has_a_matrix_case():
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        importlib.import_module(os.path.basename(path)[:-3])     # each fills matrix.COVERED as it is collected
    missing = [f"{tool}:{v.hook}" for tool, variants in shipped().items() for v in variants
               if (tool, v.hook) not in matrix.COVERED]
    assert missing == [], "variants no matrix test attaches and checks (tests/matrix.py)"


def test_every_floor_is_declared_in_known_terms():
    for tool, variants in shipped().items():
        for v in variants:
            assert v.hook in features.KIND_SINCE, (tool, v.hook)
            assert not v.needs or v.needs in features.NEEDS, f"{tool} {v.hook}: {v.needs!r} is not in features.NEEDS"
            (major, minor), what = v.floor()
            assert (major, minor) >= (5, 8) and what, (tool, v)


def test_kernel_versions_parse():
    assert features.parse_version("6.1.0-57-amd64") == (6, 1)
    assert features.parse_version("6.12.118+deb13-amd64") == (6, 12)
    assert features.parse_version("5.10.0-46-amd64") == (5, 10)
    assert features.parse_version("6.18.44-fc-v1272") == (6, 18)
    assert features.floor("tp_btf") == ((5, 8), "the BPF ring buffer")
    assert features.floor("tp_btf", "tracepoint sk_data_ready") == ((6, 3), "tracepoint sk_data_ready")
    assert features.floor("sockops", "sockops TX timestamping") == ((6, 15), "sockops TX timestamping")


@pytest.mark.matrix
@pytest.mark.parametrize("name", sorted(set(shipped()) - PER_POINT))
def test_the_default_choice_is_the_predicted_one(name):
    """The variant a tool loads with no --hook is the one `pytrace list` names here."""
    cls = tracer_class(name)
    planned, reasons = loader.planned(cls.VARIANTS)
    tracer = cls(**REQUIRED.get(name, {}))
    try:
        tracer.open()
    except PytraceError as exc:
        matrix.DEFAULTS[name] = (planned and planned.hook, None)
        assert planned is None, f"{name}: `pytrace list` predicts {planned.hook}, but nothing loaded: {exc}"
        return
    try:
        loaded = tracer.variant.hook
    finally:
        tracer.close()
    matrix.DEFAULTS[name] = (planned and planned.hook, loaded)
    assert planned is not None and loaded == planned.hook, (name, loaded, reasons)


# what a tool's command line needs to start at all (REQUIRED's, as arguments)
REQUIRED_ARGS = {"count": ["syscalls:sys_enter_connect"], "stackcount": ["t:syscalls:sys_enter_connect"],
                 "tunnelmon": ["lo"]}


@pytest.mark.matrix
def test_a_kernel_below_every_floor_is_told_in_one_line():
    """A tool with no variant this kernel allows: its command says so in one
    line, naming each variant's missing feature, and exits 1."""
    below = {name: reasons for name, variants in shipped().items() if name not in PER_POINT
             for planned, reasons in [loader.planned(variants)] if planned is None}
    if not below:
        pytest.skip("every tool has a hook variant this kernel allows: no kernel below a floor here")
    for name, reasons in below.items():
        r = run_cli(name, *REQUIRED_ARGS.get(name, ()), timeout=60)
        lines = r.stderr.splitlines()
        assert r.returncode == 1 and len(lines) == 1 and r.stdout == "", (name, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
        for reason in reasons:
            assert reason.split(": ", 1)[1] in lines[0], (name, reason, lines[0])


@pytest.mark.matrix
def test_pytrace_list_names_the_planned_hook():
    out = run_cli("list").stdout
    for name, variants in shipped().items():
        row = next(line for line in out.splitlines() if line.split()[0] == name)
        planned, _ = loader.planned(variants)
        assert row.split()[1] == (planned.hook if planned else "NONE"), row


def test_a_refused_variant_costs_once_per_boot(tmp_path, monkeypatch):
    """A variant whose load the kernel refuses is remembered for the boot, for
    that build of the object and that configuration; doctor forgets."""
    from pytrace.core import cachefile
    monkeypatch.setattr(cachefile, "DIR", str(tmp_path))
    testdrop = bpf_object("testdrop")                        # tests/bpf/testdrop.bpf.c
    bad = Variant("tracepoint", ("testdrop_refused",))
    good = Variant("tracepoint", ("testdrop_accepted",))
    calls = []
    real = loader.BpfObject

    class Counting(real):
        def load(self):
            calls.append(tuple(sorted(self.programs)))
            return super().load()

    monkeypatch.setattr(loader, "BpfObject", Counting)

    def load_once() -> str:
        obj = loader.load("testdrop", testdrop, (bad, good))
        try:
            return obj.variant.hook
        finally:
            obj.close()

    assert load_once() == "tracepoint"
    assert calls == [("testdrop_refused",), ("testdrop_accepted",)]
    assert load_once() == "tracepoint"
    assert calls[2:] == [("testdrop_accepted",)]       # the refused variant was not tried again
    why = features.known_refused(testdrop, bad, repr([]))
    assert why and "verifier rejected" in why
    assert not features.known_refused(testdrop, bad, repr([("x", 1)]))   # another configuration
    assert not features.known_refused(testdrop, good, repr([]))
    features.forget_refusals()
    assert not features.known_refused(testdrop, bad, repr([]))
