"""The tool registry: every module in this package that defines NAME is a tool.

Modules are discovered by file name and imported only when used, so starting
one tool does not pay for importing the others.  A tool module provides:

    NAME, SUMMARY           the command name and a one-line description
    add_arguments(parser)   its flags (plus cliutil.add_common)
    run(args) -> int        the command
    OBJECT (optional)       the BPF object whose source --ebpf prints (default NAME)
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(_HERE)]) if not m.name.startswith("_"))


def exists(name: str) -> bool:
    return name.isidentifier() and (_HERE / f"{name}.py").exists()


def load(name: str) -> ModuleType:
    return importlib.import_module(f"pytrace.tools.{name}")
