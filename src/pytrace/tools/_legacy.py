"""A tool module without a SPEC, offered to the commands as if it had one.

The unwritten rules the commands used to apply to every tool module live
here now, and only for the tools still written that way: when the last one
declares its SPEC, this file goes.  The protocol is pytrace.spec's; the old
module attributes it reads:

    NAME, SUMMARY, OBJECT (default NAME), add_arguments(parser), run(args)
    renderer(source, args, out), or _json_renderer(source) / _text_renderer(source, args, out)
        (called with what their parameter names ask for: tracer/source, args, out)
    intro(args), render_snapshot(snap, args), replay_intro(args, snap)
    the first class of the module with VARIANTS (the tracer), whose
    make_event's return annotation names the event dataclass (exporter)
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any


class LegacyTool:
    spec = None
    kind = ""

    def __init__(self, name: str, module: ModuleType):
        self.name, self.module = name, module
        self.summary = getattr(module, "SUMMARY", "")
        self.object = getattr(module, "OBJECT", name)
        self.render_snapshot = getattr(module, "render_snapshot", None)

    @property
    def sources(self) -> tuple[str, ...]:
        from ..core import cliutil
        return (self.module.__file__, cliutil.__file__)

    @property
    def tracer(self) -> type | None:
        """The first class of the module that has VARIANTS (defined there)."""
        from ..core.tracer import Tracer
        for value in vars(self.module).values():
            if isinstance(value, type) and issubclass(value, Tracer) and getattr(value, "VARIANTS", None) \
                    and value.__module__ == self.module.__name__:
                return value
        return None

    @property
    def variants(self) -> tuple:
        for value in vars(self.module).values():
            variants = getattr(value, "VARIANTS", None)
            if variants and isinstance(value, type):
                return tuple(variants)
        return tuple(getattr(self.module, "VARIANTS", ()))

    def types(self) -> tuple:
        return ()

    def add_arguments(self, parser: Any) -> None:
        self.module.add_arguments(parser)

    def run(self, args: Any) -> int:
        return self.module.run(args)

    def intro(self, args: Any) -> str:
        intro = getattr(self.module, "intro", None)
        return intro(args) if intro is not None else ""

    def replay_intro(self, args: Any, snap: Any) -> str:
        late = getattr(self.module, "replay_intro", None)
        return late(args, snap) if late is not None else ""

    def event_renderer(self, source: Any, args: Any, out: Any) -> Callable[[list[tuple]], str | bytes]:
        from ..core import cliutil
        from ..core.errors import PytraceError
        module = self.module
        if hasattr(module, "renderer"):
            return _call(module.renderer, source, args, out)
        if getattr(args, "json", False):
            fn = getattr(module, "_json_renderer", None)
            return _call(fn, source, args, out) if fn else cliutil.json_renderer(source)
        if hasattr(module, "_text_renderer"):
            return _call(module._text_renderer, source, args, out)
        raise PytraceError(f"{self.name} has no renderer replay can use for its text output "
                           "(replay --json prints its events)")

    # -- the exporter: the event dataclass, from make_event's return annotation -----------------
    def _event_type(self) -> type | None:
        import dataclasses
        import typing
        cls = self.tracer
        if cls is None:
            return None
        try:
            make = cls.make_event
            named = make.__annotations__.get("return")
            if isinstance(named, str) and named.isidentifier():
                # a class its module makes on first use (PEP 562 __getattr__, e.g.
                # tcplife's TcpSession) is in its globals once asked for
                getattr(sys.modules.get(make.__module__), named, None)
            kind = typing.get_type_hints(make).get("return")
        except Exception:
            return None
        return kind if kind is not None and dataclasses.is_dataclass(kind) else None

    def event_fields(self) -> set[str] | None:
        import dataclasses
        kind = self._event_type()
        return {f.name for f in dataclasses.fields(kind)} if kind else None

    def numeric_field(self, name: str) -> bool:
        import typing
        kind = self._event_type()
        try:
            hint = typing.get_type_hints(kind).get(name) if kind else None
        except Exception:
            hint = None
        return hint is None or hint in (int, float)


def _call(fn: Callable, source: Any, args: Any, out: Any) -> Any:
    """Call a legacy renderer factory, passing what its parameters name."""
    import inspect
    from ..core.errors import PytraceError
    by_name = {"tracer": source, "source": source, "args": args, "out": out}
    params = list(inspect.signature(fn).parameters)
    if not all(p in by_name for p in params):
        raise PytraceError(f"cannot call {fn.__module__}.{fn.__name__}{inspect.signature(fn)} to replay")
    return fn(*(by_name[p] for p in params))
