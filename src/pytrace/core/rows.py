"""Compile the per-record expression of a text renderer into one comprehension.

The CLI's hot loop turns raw record tuples into output lines.  Indexing a
tuple eleven times per record costs more than the formatting itself, so the
loop is generated once per run with the record's own field names (from its
BTF layout, after any projection) as the unpacking target:

    rows = compile_rows(tracer.raw_fields, "fmt % (pid, comm, ...)", {"fmt": fmt})
    lines = rows(batch)

The field order therefore always follows the C struct; the expression only
names fields (field_variable() says which variable a field is bound to: an
array's name[0] becomes name_0_).
"""

from __future__ import annotations

import keyword
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from collections.abc import Callable, Sequence
    from typing import Any


def field_variable(field: str) -> str:
    """The variable a raw field is bound to in a compiled row (names[0] -> names_0_)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in field)   # re would cost start-up
    return name + "_" if keyword.iskeyword(name) else name


def compile_rows(fields: Sequence[str], expr: str, env: dict[str, Any]) -> Callable[[list[tuple]], list]:
    """A function mapping a batch of records to [expr for each record]."""
    target = ", ".join(field_variable(f) for f in fields)
    src = f"def rows(batch):\n    return [{expr} for ({target},) in batch]\n"
    namespace = dict(env)
    exec(_compiled(src), namespace)  # noqa: S102 - our own expression
    return namespace["rows"]


MAX_CODES = 64


def _compiled(src: str):
    """compile(src), kept across runs (core/cachefile): a process's first
    compile() costs ~0.8 ms, the compiler setting itself up, on the way to a
    tool's first line.  Bytecode is per interpreter version, and so is the file."""
    from . import cachefile
    name = f"rows-{sys.implementation.cache_tag}.marshal"
    codes = cachefile.read_dict(name)
    code = codes.get(src)
    if code is not None:
        return code
    code = compile(src, "<pytrace rows>", "exec")
    if len(codes) >= MAX_CODES:
        codes = {}
    codes[src] = code
    cachefile.write_dict(name, codes)
    return code
