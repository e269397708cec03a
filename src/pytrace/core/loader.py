"""Pick the best hook variant of a tool that this kernel accepts, and load it.

A tool's object carries one set of programs per hook kind (fentry, kprobe,
tp_btf, raw_tp, tracepoint, ...).  Variants are listed best first; we load
exactly one.  Kinds already known to fail on this boot are skipped at once
(core/features.py); a variant that fails makes us probe its kind, so the next
start skips it too.  `--hook KIND` forces one variant.
"""

from __future__ import annotations

import errno

from . import features, objects, privileges, tracefs
from .bpfobject import BpfObject
from .errors import PytraceError, UsageError
from .records import record

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from collections.abc import Callable, Sequence     # collections.abc imports collections: ~1 ms
    from typing import Any


class Variant(record("Variant", "hook programs note needs", defaults=("", ""))):
    """One way to hook a tool, immutable (a named tuple: no dataclasses import at start-up).

    hook      fentry, kprobe, tp_btf, raw_tp, tracepoint, uprobe, tc, xdp, ...
    programs  program names (C functions) in the object, a tuple
    note      shown by `pytrace list` (e.g. "approximation"); "" by default
    needs     what the variant needs beyond its hook kind and the ring buffer,
              a key of features.NEEDS ("tracepoint sock_send_length"),
              which says which kernel brought it

    Its floor (floor()) is the oldest kernel that has all it needs: a claim
    the kernel matrix checks both ways (a refusal on a kernel at or above it
    fails the matrix, and so does a load below it).
    """
    __slots__ = ()

    def floor(self) -> tuple[tuple[int, int], str]:
        """((major, minor), what that kernel brought): the newest of the floors of
        the variant's needs, its hook kind and the ring buffer."""
        return features.floor(self.hook, self.needs)

    def unmet(self) -> str | None:
        """Why this kernel cannot have the variant (older than its floor, or a
        need's own check fails), or None."""
        return features.unmet(self.hook, self.needs)


if TYPE_CHECKING:
    Attach = Callable[[BpfObject, Variant], None]


def _default_attach(obj: BpfObject, variant: Variant) -> None:
    for name in variant.programs:
        obj.attach(name)


def hooks_of(variants: Sequence[Variant]) -> list[str]:
    return [v.hook for v in variants]


def load(tool: str, obj_name: str, variants: Sequence[Variant], *, rodata: dict[str, Any] | None = None,
         hook: str | None = None, map_sizes: dict[str, int] | None = None,
         attach: Attach | None = None, need_net_admin: bool = False,
         before_load: Callable[[BpfObject], None] | None = None) -> BpfObject:
    """Load and attach the best usable variant; the object records it as .variant.

    before_load(obj), if given, runs between open and load (e.g. to make the
    object share a map that another object holds, via bpf_map__reuse_fd).
    """
    privileges.require(tool, need_net_admin)
    objects.check_kernel_btf()
    if hook is not None:
        chosen = [v for v in variants if v.hook == hook]
        if not chosen:
            raise UsageError(f"--hook {hook}: {tool} has hooks {', '.join(hooks_of(variants))}")
    else:
        chosen = list(variants)
    attach = attach or _default_attach
    config = repr(sorted((rodata or {}).items()))
    reasons: list[str] = []
    for variant in chosen:
        # kinds and variants known to fail on this boot cost nothing (a
        # verifier refusal can take seconds of CPU: it is paid once per boot)
        cached = None if hook else (features.known_unusable(variant.hook)
                                    or features.known_refused(obj_name, variant, config))
        if cached:
            reasons.append(f"{variant.hook}: {cached}")
            continue
        obj = BpfObject(obj_name, programs=variant.programs, rodata=rodata, map_sizes=map_sizes)
        try:
            obj.open()
            if variant.hook == "tracepoint" and tracefs.ensure():
                obj.on_close(tracefs.unmount)
            if before_load is not None:
                obj.prepare(before_load)
            obj.load()
            attach(obj, variant)
        except OSError as exc:
            obj.close()
            why = _why(variant, exc)
            if not features.known_unusable(variant.hook):
                features.remember_refusal(obj_name, variant, exc, why, config)
            reasons.append(f"{variant.hook}: {why}")
            continue
        except BaseException:
            obj.close()
            raise
        obj.variant = variant
        return obj
    raise PytraceError(f"no hook usable on this kernel (tried {'; '.join(reasons)})")


def _why(variant: Variant, exc: OSError) -> str:
    """Why a variant failed: the kind itself (probed and cached), a kernel older
    than the variant's floor, or this tool's program."""
    kind = variant.hook
    if kind in features.PROBED_KINDS:
        usable, reason = features.learn(kind)
        if not usable:
            return reason
    missing = variant.unmet()
    if missing:
        return f"{missing}; this kernel is {features.kernel_release()}"
    if exc.errno in (errno.EACCES, errno.EINVAL, errno.E2BIG) and "load" in str(exc):
        return f"the verifier rejected the {kind} program ({exc.strerror}; -v shows its log)"
    return features.explain(kind, exc)


def planned(variants: Sequence[Variant]) -> tuple[Variant | None, list[str]]:
    """Which variant would load here, judged by the feature probes (for `pytrace list`)."""
    reasons = []
    for v in variants:
        entry = features.cached(v.hook)
        if entry is None and v.hook in features.PROBED_KINDS:
            entry = features.learn(v.hook)
        if entry is not None and not entry[0]:
            reasons.append(f"{v.hook}: {entry[1]}")
            continue
        missing = v.unmet()
        if missing:
            reasons.append(f"{v.hook}: {missing}")
            continue
        return v, reasons
    return None, reasons
