"""`pytrace list`: every tool, and the hook it would use on this kernel."""

from __future__ import annotations

import sys

from .. import tools as registry
from ..core import loader, privileges
from ..core.errors import UsageError


def _variants(module) -> list:
    """The hook variants of a tool module (tests/matrix.py reads them too)."""
    name = module.__name__.rsplit(".", 1)[-1]
    return list(registry.command(name).variants)


def run(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: pytrace list\n\nList the tools and the hook variant each would use on this kernel.")
        return 0
    if argv:
        raise UsageError(f"unrecognized arguments: {' '.join(argv)} (see pytrace list -h)")
    can_probe = not privileges.missing()
    rows = []
    for name in registry.names():
        tool = registry.command(name)      # its SPEC, or a legacy module alike
        variants = list(tool.variants)
        hooks = ",".join(v.hook for v in variants) or "-"
        if not variants:
            here = "no BPF"
        elif not can_probe:
            here = "? (needs root to probe)"
        else:
            chosen, _ = loader.planned(variants)
            here = chosen.hook + (f" ({chosen.note})" if chosen.note else "") if chosen else "NONE usable"
        rows.append((name, here, hooks, tool.summary))
    w = [max(len(r[i]) for r in rows + [("TOOL", "HOOK HERE", "VARIANTS", "")]) for i in range(3)]
    sys.stdout.write(f"{'TOOL':<{w[0]}}  {'HOOK HERE':<{w[1]}}  {'VARIANTS':<{w[2]}}  DESCRIPTION\n")
    for name, here, hooks, summary in rows:
        sys.stdout.write(f"{name:<{w[0]}}  {here:<{w[1]}}  {hooks:<{w[2]}}  {summary}\n")
    return 0
