"""EventType: what a tool declares about one record type; the rest comes from BTF.

The C struct (or a map's key and value) says which fields a record has; a
tool only says what differs in Python, one line per field it cares about:

    TCPSTATES_EVENT = EventType("TcpStateChange", struct="tcpstates_event", fields='''
        ts_ns                      # CLOCK_MONOTONIC of the change
        skaddr: hex                # the socket's kernel address
        laddr <- saddr: address    # raw saddr, converted with raw family (the default)
        oldstate: TcpState
        ms <- delta_us: us_to_ms   # time spent in oldstate
        -pad                       # a raw field nobody wants
    ''')

Each line is `[-]name [<- raw] [: conversion[(raw, ...)]] [# doc]`:
  name <- raw     the field `name` holds raw field `raw` (default: the same name)
  : conversion    one of core/convert.py's (address, text, hex, TcpState,
                  family, us_to_ms, ...); `address(af)` passes other raw fields
                  than the conversion's default needs
  -raw            leave the raw field out
  # doc           the field's line in the generated class's docstring
A raw field no line mentions is kept under its own name, unconverted: a field
added in C appears in the event, its to_dict() and --json at the next build,
with no Python edit.  Fields come in the order of the lines, then the
unmentioned ones in C order.

A tool without BPF (nstat) declares standalone=True: no struct or map, the
declared lines are the fields, each of the kind its conversion says
(int, float, bool, str; default int).

build.py generates the class (spec/gentypes.py) into pytrace/gen/<object>.py;
`.cls` imports it when first asked (the CLI's text output never asks).
A type is bound to its object by the ToolSpec that uses it (or object=).
"""

from __future__ import annotations

import sys


class FieldDecl:
    """One declared line: field name, its raw field, conversion (or ""), the raw
    fields the conversion takes besides (None: its default needs), doc."""

    __slots__ = ("name", "raw", "conversion", "args", "doc")

    def __init__(self, name: str, raw: str, conversion: str, args: tuple[str, ...] | None, doc: str):
        self.name, self.raw, self.conversion, self.args, self.doc = name, raw, conversion, args, doc

    def __repr__(self) -> str:
        conv = f": {self.conversion}" if self.conversion else ""
        args = f"({', '.join(self.args)})" if self.args is not None else ""
        return f"FieldDecl({self.name} <- {self.raw}{conv}{args})"


class EventType:
    """A record type's declaration (see the module docstring).

    name    the generated class's name (TcpStateChange)
    struct  the C struct of a ring-buffer record, or
    map     the name of a map whose key and value make one row (tcptop's flows)
    fields  the declaration lines
    time    the field holding CLOCK_MONOTONIC ns (default: ts_ns, if the type
            has one): --json adds the wall-clock "time" from it
    doc     the class's docstring (first line: what one instance is)
    """

    __slots__ = ("name", "struct", "map", "object", "doc", "time", "declared", "hidden", "_cls", "standalone")

    def __init__(self, name: str, *, struct: str | None = None, map: str | None = None, fields: str = "",
                 time: str | None = None, doc: str = "", object: str | None = None, standalone: bool = False):
        if standalone and (struct is not None or map is not None):
            raise ValueError(f"{name}: a standalone type has no struct= or map=")
        if not standalone and (struct is None) == (map is None):
            raise ValueError(f"{name}: give struct= (a ring-buffer record) or map= (a map's rows), not both")
        self.standalone = standalone
        self.name, self.struct, self.map, self.object = name, struct, map, object
        self.doc, self.time = doc, time
        self.declared, self.hidden = parse_fields(name, fields)
        self._cls: type | None = None

    def bind(self, object_name: str) -> None:
        """The object whose BTF the type comes from (the tracer's OBJECT)."""
        if self.object is None:
            self.object = object_name
        elif self.object != object_name:
            raise ValueError(f"{self.name} is {self.object}'s type, not {object_name}'s")

    @property
    def module(self) -> str:
        """The generated module (pytrace/gen/<object>.py)."""
        if self.object is None:
            raise RuntimeError(f"{self.name} is not bound to an object (a ToolSpec binds it)")
        return f"pytrace.gen.{self.object}"

    @property
    def cls(self) -> type:
        """The generated class, imported on first use."""
        cls = self._cls
        if cls is None:
            module = self.module
            try:
                __import__(module)
            except ImportError:
                from ..core.errors import PytraceError
                raise PytraceError(f"{module} is missing: the event types were not generated for this "
                                   "install (reinstall pytrace, or run python3 build.py in a source tree)") from None
            cls = self._cls = getattr(sys.modules[module], self.name)
        return cls

    def field(self, name: str) -> FieldDecl:
        """The declaration of field `name` (an undeclared one: its raw field, unconverted)."""
        for decl in self.declared:
            if decl.name == name:
                return decl
        return FieldDecl(name, name, "", None, "")

    def __repr__(self) -> str:
        where = f"struct {self.struct}" if self.struct else f"map {self.map}" if self.map else "standalone"
        return f"EventType({self.name}, {where}, object={self.object})"


def parse_fields(type_name: str, text: str) -> tuple[tuple[FieldDecl, ...], frozenset[str]]:
    declared: list[FieldDecl] = []
    hidden: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line, _, doc = line.partition("#")
        line, doc = line.strip(), doc.strip()
        if not line:
            continue
        where = f"{type_name} fields, line {n}: {line!r}"
        if line.startswith("-"):
            raw = line[1:].strip()
            if not _name_ok(raw):
                raise ValueError(f"{where}: -RAW names a raw field to leave out")
            hidden.add(raw)
            continue
        head, _, conv = line.partition(":")
        name, arrow, raw = head.partition("<-")
        name, raw, conv = name.strip(), (raw.strip() if arrow else name.strip()), conv.strip()
        args = None
        if "(" in conv:
            conv, _, rest = conv.partition("(")
            if not rest.endswith(")"):
                raise ValueError(f"{where}: conversion(raw, ...) lacks its ')'")
            args = tuple(a.strip() for a in rest[:-1].split(",") if a.strip())
            conv = conv.strip()
        if not name.isidentifier() or not _name_ok(raw) or (conv and not conv.replace(".", "_").isidentifier()):
            raise ValueError(f"{where}: expected NAME [<- RAW] [: CONVERSION]")
        if any(d.name == name for d in declared):
            raise ValueError(f"{where}: {name} is declared twice")
        declared.append(FieldDecl(name, raw, conv, args, doc))
    return tuple(declared), frozenset(hidden)


def _name_ok(raw: str) -> bool:
    """A raw field name: C identifiers, dotted for nested structs (key.addr)."""
    return bool(raw) and all(part.isidentifier() for part in raw.split("."))


def public_classes(module: str, **types: EventType):
    """A tool module's PEP 562 __getattr__ for its generated classes, imported on
    first use (the CLI's text output never imports them):

        __getattr__ = public_classes(__name__, Connect=CONNECT_EVENT, ConnectCount=CONNECT_COUNT)
    """
    def module_getattr(name: str) -> type:
        et = types.get(name)
        if et is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return et.cls
    module_getattr.__doc__ = f"{', '.join(types)}: the classes generated from BTF (PEP 562)."
    return module_getattr
