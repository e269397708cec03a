"""pytrace: eBPF network tracing tools, precompiled CO-RE objects driven from Python.

Each tool is usable as a library, e.g.

    from pytrace import TcpStates
    with TcpStates() as tracer:
        for ev in tracer.events(duration=5):
            print(ev)

Tool classes are imported lazily (attribute access), so `import pytrace` is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "TcpStates": "pytrace.tools.tcpstates",
    "TcpStateChange": "pytrace.tools.tcpstates",
    "TcpRtt": "pytrace.tools.tcprtt",
    "Log2Histogram": "pytrace.core.hist",
    "PytraceError": "pytrace.core.errors",
    "Terminate": "pytrace.core.stops",
    "stop_on_signals": "pytrace.core.stops",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytrace' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
