"""The tool registry: every module in this package is a tool, named by its file.

Modules are discovered by file name and imported only when used, so starting
one tool does not pay for importing the others.  A tool module declares

    SPEC = ToolSpec(...)     (pytrace.spec: name, summary, tracer, kind,
                              options, columns, event type, examples)

(or a spec/commands.CommandSpec, for a tool with subcommands: vnet,
tunnelmon) and command(name) returns it: the CLI, `pytrace replay`, `pytrace list`, the
exporter and the contract test (tests/test_contract.py) call only what
pytrace.spec's docstring lists.  A module without a SPEC is not a tool: the
registry refuses it (files starting with _ are the tools' shared parts).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:   # types is ~0.3 ms of every start-up
    from types import ModuleType
    from typing import Any

    from ..spec import ToolSpec

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(_HERE) if f.endswith(".py") and not f.startswith("_"))


def exists(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_") and os.path.exists(os.path.join(_HERE, f"{name}.py"))


def load(name: str) -> ModuleType:
    module = f"pytrace.tools.{name}"
    __import__(module)     # not importlib.import_module: importing importlib costs start-up
    return sys.modules[module]


def spec(name: str) -> ToolSpec:
    """The tool's declared SPEC."""
    declared = getattr(load(name), "SPEC", None)
    if declared is None:
        raise TypeError(f"pytrace/tools/{name}.py declares no SPEC (pytrace.spec.ToolSpec): not a tool")
    return declared


def command(name: str) -> Any:
    """What the commands call on a tool: its SPEC."""
    return spec(name)
