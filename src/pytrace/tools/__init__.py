"""The tool registry: name -> module.  Modules are imported only when used,
so starting one tool does not pay for importing the others."""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module under pytrace.tools; order is the order of `pytrace list`
TOOLS: dict[str, str] = {
    "tcpstates": "tcpstates",
    "tcprtt": "tcprtt",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(f"pytrace.tools.{TOOLS[name]}")


def names() -> list[str]:
    return list(TOOLS)
