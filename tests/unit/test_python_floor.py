"""The Python that pyproject.toml declares (requires-python) is the one the code needs.

Needs neither root nor a kernel: it reads and imports source only.  Three
checks: this interpreter meets the floor; every module parses with the
floor's grammar (ast's feature_version rejects `except*`, `match` and the
like when the floor predates them); and, where an interpreter of exactly the
floor version is installed, every module of the package imports under it,
which is what syntax cannot show (dataclass(slots=True), `X | None`
evaluated at import, a standard module the floor lacks).
"""

from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "pytrace"


def declared_floor() -> tuple[int, int]:
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"\s*$', text, re.M)
    assert found, 'pyproject.toml has no requires-python = ">=X.Y"'
    return int(found.group(1)), int(found.group(2))


def _version_of(python: str) -> tuple[int, ...] | None:
    try:
        proc = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return tuple(map(int, proc.stdout.split())) if proc.returncode == 0 else None


def floor_interpreter(floor: tuple[int, int]) -> str | None:
    """$PYTRACE_FLOOR_PYTHON, else the first that runs of pythonX.Y on PATH
    (pyenv's shim there fails when that version is not selected) and pyenv's."""
    given = os.environ.get("PYTRACE_FLOOR_PYTHON")
    if given:
        assert _version_of(given) == floor, f"PYTRACE_FLOOR_PYTHON={given} is not Python {floor[0]}.{floor[1]}"
        return given
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python{floor[0]}.{floor[1]}"),
                  *sorted(glob.glob(os.path.join(root, "versions", f"{floor[0]}.{floor[1]}.*", "bin", "python")))]
    return next((c for c in candidates if c and _version_of(c) == floor), None)


def test_this_interpreter_meets_the_floor():
    assert sys.version_info[:2] >= declared_floor()


def test_every_module_parses_with_the_floors_grammar():
    floor = declared_floor()
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        try:
            ast.parse(path.read_text(), str(path), feature_version=floor)
        except SyntaxError as exc:
            bad.append(f"{path.relative_to(REPO)}:{exc.lineno}: {exc.msg}")
    assert not bad, "\n".join(bad)


# Import every module of the package; print the ones that fail, one a line.
_IMPORT_ALL = """
import importlib, pkgutil, sys
import pytrace
failed = []
for info in pkgutil.walk_packages(pytrace.__path__, "pytrace.", onerror=failed.append):
    if info.name.endswith(".__main__"):      # python -m's entry: it runs the command
        continue
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
print("\\n".join(map(str, failed)))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_under_the_floor():
    floor = declared_floor()
    python = floor_interpreter(floor)
    if python is None:
        pytest.skip(f"no Python {floor[0]}.{floor[1]} here (set PYTRACE_FLOOR_PYTHON)")
    import elftools
    # the package from this tree, then the pure-Python dependencies from this
    # environment, after the floor's own standard library
    deps = os.path.dirname(os.path.dirname(elftools.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), deps]), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([python, "-c", _IMPORT_ALL], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"under {python}:\n{proc.stdout}{proc.stderr}"
