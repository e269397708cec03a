"""The suite runs as root against the real kernel: no mocks.

It needs the package importable with its built objects (scripts/test.sh sets
that up on a fresh machine).  Two tiers:

    tests/unit/   neither root nor a kernel: pure logic, over files and records
                  made by the test (scripts/test.sh runs it as nobody first)
    tests/        everything else: root, the real kernel, real traffic

A run that collects any test outside tests/unit must be root's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


UNIT = Path(__file__).resolve().parent / "unit"


def pytest_configure(config):
    _configure_matrix(config)


def pytest_collection_finish(session):
    """Root and the built objects, unless every test collected is a unit test."""
    if all(UNIT in Path(str(item.path)).parents for item in session.items):
        return
    if os.geteuid() != 0:
        pytest.exit("the pytrace suite loads BPF programs: run it as root (scripts/test.sh); "
                    "tests/unit alone needs no privilege", returncode=2)
    from pytrace.core import objects
    if not os.path.exists(os.path.join(objects.BPF_DIR, "tcpstates.bpf.o")):
        pytest.exit(f"no built BPF objects in {objects.BPF_DIR}: run scripts/test.sh (or python3 build.py)",
                    returncode=2)


# -- the kernel matrix (matrix.py, scripts/kernel_lab.py) ---------------------------

def pytest_addoption(parser):
    group = parser.getgroup("pytrace kernel matrix")
    group.addoption("--matrix-results", metavar="PATH",
                    help="write each (tool, hook variant) outcome and this kernel's facts as JSON to PATH")


def _configure_matrix(config):
    config.addinivalue_line("markers", "matrix: part of the kernel matrix (run in every guest of the kernel lab)")
    config.addinivalue_line("markers", "variant(tool, hook): the tool variant a matrix case checks")
    config.stash[_OUTCOMES] = {}


_OUTCOMES = pytest.StashKey[dict]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    for marker in item.iter_markers("variant"):
        _record(item, report, f"{marker.args[0]}:{marker.args[1]}")


def _record(item, report, key: str) -> None:
    seen = item.config.stash[_OUTCOMES].setdefault(key, {"passed": 0, "failed": 0, "skipped": 0, "reasons": []})
    if report.skipped and report.when in ("setup", "call"):
        seen["skipped"] += 1
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        seen["reasons"].append(reason.removeprefix("Skipped: "))
    elif report.failed:
        seen["failed"] += 1
        seen["reasons"].append(f"{item.nodeid}: {report.longreprtext.splitlines()[-1] if report.longreprtext else ''}")
    elif report.passed and report.when == "call":
        seen["passed"] += 1


@pytest.fixture(autouse=True)
def _nothing_left_in_the_kernel(request):
    """A matrix case leaves no program, map, link, tracefs mount or probe event behind."""
    if request.node.get_closest_marker("matrix") is None:
        yield
        return
    import kernelstate
    before = kernelstate.snapshot()
    yield
    left = kernelstate.left_since(before)
    assert not left, f"left in the kernel after the test: {left}"


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--matrix-results", None)
    if not path:
        return
    import json
    import matrix
    from pytrace.core import features
    data = {"release": features.kernel_release(), "version": list(features.kernel_version()),
            "kinds": {k: list(matrix.kind_usable(k)) for k in features.PROBED_KINDS},
            "variants": session.config.stash.get(_OUTCOMES, {}),
            "defaults": {tool: list(pair) for tool, pair in matrix.DEFAULTS.items()},
            "floors": matrix.floors()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)
