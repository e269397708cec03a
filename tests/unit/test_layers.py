"""The package's layers, as the code declares them, checked on its source:

    core/      the engine: libbpf binding, objects, ring buffer, BTF, variants,
               tracers, attach code, conversions.  A library user's import.
    spec/      the tool contract (ToolSpec, options, columns, generated types)
    cli/       the command line: arguments, signals, output, loops, reader
               scheduling, clocks, start-up speculation
    tools/, commands/, sinks/, vnet/, tunnelmon/: built on the three

The engine never imports the others, not even inside a function: a library
user gets no CLI state, cache or argument parsing with it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytrace

PACKAGE = Path(pytrace.__file__).resolve().parent
ABOVE_THE_ENGINE = ("cli", "spec", "tools", "commands", "sinks", "vnet", "tunnelmon", "gen")


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(relative level, module, names) of every import of a module, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(0, a.name, []) for a in node.names]
    return out


def test_the_engine_imports_nothing_above_it():
    wrong = []
    for path in sorted((PACKAGE / "core").glob("*.py")):
        for level, module, names in imports_of(path):
            if level == 0:
                parts = module.split(".")
                above = parts[0] == "pytrace" and len(parts) > 1 and parts[1] in ABOVE_THE_ENGINE
            elif level == 1:
                above = False                               # core's own modules
            else:
                top = module.split(".")[0] if module else None
                above = top in ABOVE_THE_ENGINE or (top is None and set(names) - {"__version__"})
            if above:
                wrong.append(f"core/{path.name}: {'.' * level}{module} {names}")
    assert not wrong, wrong


def test_a_library_user_loads_no_command_line():
    """Importing every engine module brings in no argparse and no cli module."""
    code = """
import pkgutil, sys, importlib
import pytrace.core
for m in pkgutil.iter_modules(pytrace.core.__path__):
    importlib.import_module("pytrace.core." + m.name)
bad = sorted(n for n in sys.modules if n == "argparse" or n.startswith("pytrace.cli"))
print(" ".join(bad))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [], out
