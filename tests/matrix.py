"""The kernel matrix: every tool, every hook variant, on every kernel of the lab.

A tool test that is part of the matrix takes its hook from variants(), which
parametrizes it over every variant the tool ships and marks each case
`matrix` (scripts/kernel_lab.py runs `pytest -m matrix` in each guest), and
opens the tracer with opened():

    @pytest.mark.parametrize("hook", variants(SocketIO))
    def test_socketio_calls_and_bytes_exact(hook):
        with opened(SocketIO, hook, pid=ME) as t:
            ...exact assertions...

opened() is where the kernel's answer is judged:
  - the hook kind is missing here (no kprobes, fentry refused): skip, naming it;
  - the kernel is older than the variant's declared floor: the tool must say
    so in one line (and then the case skips, naming the floor); loading
    there anyway fails the case, because the floor is wrong;
  - otherwise the variant must load, attach and pass the test's exact checks.
Every matrix case also checks that nothing it loaded stays in the kernel
(conftest.py: programs, links, maps, tracefs mounts, kprobe events).

The outcome of each (tool, hook) is recorded for the lab's report
(matrix_report.py), which checks that every variant was attached and checked
on at least one kernel that allows it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pytest

from pytrace.core import features
from pytrace.core.errors import PytraceError

# (tool, hook) of every variant some matrix test covers, filled at collection
COVERED: set[tuple[str, str]] = set()
# tool -> (planned hook, loaded hook) from test_matrix's default-choice check
DEFAULTS: dict[str, tuple[str | None, str | None]] = {}


def tool_of(cls) -> str:
    return getattr(cls, "TOOL", "") or cls.OBJECT


def variants(cls, *, tool: str | None = None, hooks: tuple[str, ...] | None = None,
             each: list | None = None, matrix: bool = True) -> list:
    """pytest parameters for every hook variant of a tracer class (or those
    named); with `each`, every hook combined with every value of it
    (parametrize "hook,value").  matrix=False: cases of the host only (they
    neither run in the guests nor count as a variant's matrix case)."""
    name = tool or tool_of(cls)
    params = []
    for v in cls.VARIANTS:
        if hooks is not None and v.hook not in hooks:
            continue
        if matrix:
            COVERED.add((name, v.hook))
        marks = [pytest.mark.matrix, pytest.mark.variant(name, v.hook)] if matrix else []
        if each is None:
            params.append(pytest.param(v.hook, id=v.hook, marks=marks))
        else:
            params += [pytest.param(v.hook, value, id=f"{v.hook}-{value}", marks=marks) for value in each]
    return params


def covers(tool: str, *hooks: str):
    """Mark a test that is not parametrized by hook as the matrix case of
    these variants of a tool (e.g. a tool with one variant, or a test that
    attaches several variants at once)."""
    def mark(test):
        for hook in hooks:
            COVERED.add((tool, hook))
            test = pytest.mark.variant(tool, hook)(test)
        return pytest.mark.matrix(test)
    return mark


_kinds: dict[str, tuple[bool, str]] = {}


def kind_usable(kind: str) -> tuple[bool, str]:
    """Does this kernel accept programs of this kind at all (the feature probe, once per session)."""
    if kind not in features.PROBED_KINDS:
        return True, ""
    if kind not in _kinds:
        _kinds[kind] = features.probe(kind)
    return _kinds[kind]


def floors() -> dict[str, str]:
    """tool:hook -> "major.minor" of every variant a matrix case covers."""
    from pytrace import tools as registry
    from pytrace.commands.listing import _variants
    out = {}
    for name in registry.names():
        for v in _variants(registry.load(name)):
            (major, minor), _what = v.floor()
            out[f"{name}:{v.hook}"] = f"{major}.{minor}"
    return out


def variant_of(cls, hook: str):
    for v in cls.VARIANTS:
        if v.hook == hook:
            return v
    raise AssertionError(f"{tool_of(cls)} has no {hook} variant")


def below_floor(variant) -> str | None:
    """Why the running kernel cannot have a variant (older than its floor, or a
    need's own check of this kernel fails), or None."""
    return variant.unmet()


def skip_unless_kind(hook: str) -> None:
    """Skip where this kernel lacks the hook kind; in the lab's guests (Debian's
    stock kernels, built with every kind pytrace uses) a kind refused at or
    above the kernel it came with fails instead: that is a regression, not a
    kernel's choice."""
    usable, reason = kind_usable(hook)
    if usable:
        return
    since, what = features.KIND_SINCE[hook]
    if in_guest() and features.parse_version(features.kernel_release()) >= features.parse_version(since):
        pytest.fail(f"{hook} programs refused on {features.kernel_release()} (Debian's kernel, {what} "
                    f"since {since}): {reason}")
    pytest.skip(f"this kernel lacks {hook} programs: {reason}")


@contextlib.contextmanager
def opened(cls, hook: str, *args, tool: str | None = None, **kwargs) -> Iterator:
    """The tracer with its `hook` variant forced, opened; closed afterwards.

    Skips (naming the hook) where this kernel lacks the hook kind; below the
    variant's floor it checks the one-line refusal and skips, naming the floor."""
    name = tool or tool_of(cls)
    variant = variant_of(cls, hook)
    skip_unless_kind(hook)
    too_old = below_floor(variant)
    tracer = cls(*args, hook=hook, **kwargs)
    try:
        tracer.open()
    except PytraceError as exc:
        if too_old is None:
            raise
        message = str(exc)
        assert "\n" not in message and too_old in message, \
            f"{name} {hook} below its floor must say what the kernel lacks, in one line: {message!r}"
        pytest.skip(f"{name} {hook} {too_old}: refused here ({features.kernel_release()}) as declared")
    if too_old is not None:
        tracer.close()
        pytest.fail(f"{name} {hook} loaded on {features.kernel_release()}, below its declared floor "
                    f"({too_old}): the floor is wrong")
    assert tracer.variant is not None and tracer.variant.hook == hook
    try:
        yield tracer
    finally:
        tracer.close()


def refusal_first(cls, hook: str, *args, tool: str | None = None, **kwargs) -> None:
    """For a case that builds something costly (test hosts in namespaces:
    seconds under the lab's TCG) before it opens its tracer: where this
    kernel lacks the hook kind or is below the variant's floor, judge that
    now, as opened() does (the one-line refusal, then the skip; a load that
    succeeds fails the case), and build nothing.  Elsewhere it does nothing."""
    skip_unless_kind(hook)
    if below_floor(variant_of(cls, hook)) is None:
        return
    with opened(cls, hook, *args, tool=tool, **kwargs):
        pass            # not reached: below its floor, opened() skips or fails


def cli_hook_or_skip(cls, hook: str, *, tool: str | None = None) -> None:
    """For matrix cases that drive the CLI with --hook: skip where the kernel
    lacks the kind or is below the variant's floor (the library case of the
    same variant checks the refusal message)."""
    skip_unless_kind(hook)
    why = below_floor(variant_of(cls, hook))
    if why:
        pytest.skip(f"{tool or tool_of(cls)} {hook} {why}; this kernel is {features.kernel_release()}")


def in_guest() -> bool:
    """True when running inside the kernel lab's guest (scripts/kernel_lab.py)."""
    return os.environ.get("PYTRACE_LAB_GUEST") == "1"
