"""The tool registry: every module in this package that defines NAME is a tool.

Modules are discovered by file name and imported only when used, so starting
one tool does not pay for importing the others.  A tool module provides:

    NAME, SUMMARY           the command name and a one-line description
    add_arguments(parser)   its flags (plus cliutil.add_common)
    run(args) -> int        the command
    OBJECT (optional)       the BPF object whose source --ebpf prints (default NAME)
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:   # types is ~0.3 ms of every start-up
    from types import ModuleType

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(_HERE) if f.endswith(".py") and not f.startswith("_"))


def exists(name: str) -> bool:
    return name.isidentifier() and os.path.exists(os.path.join(_HERE, f"{name}.py"))


def load(name: str) -> ModuleType:
    module = f"pytrace.tools.{name}"
    __import__(module)     # not importlib.import_module: importing importlib costs start-up
    return sys.modules[module]
