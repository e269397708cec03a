"""Compile the per-record expression of a text renderer into one comprehension.

The CLI's hot loop turns raw record tuples into output lines.  Indexing a
tuple eleven times per record costs more than the formatting itself, so the
loop is generated once per run with the record's own field names (from its
BTF layout, after any projection) as the unpacking target:

    rows = compile_rows(tracer.raw_fields, "fmt % (pid, comm, ...)", {"fmt": fmt})
    lines = rows(batch)

The field order therefore always follows the C struct; the expression only
names fields.
"""

from __future__ import annotations

import keyword
import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from collections.abc import Callable, Sequence
    from typing import Any


def _ident(field: str) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in field)   # re would cost start-up
    return name + "_" if keyword.iskeyword(name) else name


def compile_rows(fields: Sequence[str], expr: str, env: dict[str, Any]) -> Callable[[list[tuple]], list]:
    """A function mapping a batch of records to [expr for each record]."""
    target = ", ".join(_ident(f) for f in fields)
    src = f"def rows(batch):\n    return [{expr} for ({target},) in batch]\n"
    namespace = dict(env)
    exec(_compiled(src), namespace)  # noqa: S102 - our own expression
    return namespace["rows"]


MAX_CODES = 64


def _compiled(src: str):
    """compile(src), kept across runs under the start-up cache directory (see
    core/prefetch): a process's first compile() costs ~0.8 ms, the compiler
    setting itself up, on the way to a tool's first line.  The cache is
    trusted only if it is ours and no one else can write it, as with .pyc
    files; bytecode is per interpreter version, and so is the file."""
    from .prefetch import DIR
    path = os.path.join(DIR, f"rows-{sys.implementation.cache_tag}.marshal")
    codes: dict = {}
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                codes = marshal.load(fh)
    except (OSError, ValueError, EOFError, TypeError):
        pass
    code = codes.get(src) if isinstance(codes, dict) else None
    if code is not None:
        return code
    code = compile(src, "<pytrace rows>", "exec")
    if not isinstance(codes, dict) or len(codes) >= MAX_CODES:
        codes = {}
    codes[src] = code
    try:
        os.makedirs(DIR, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            marshal.dump(codes, fh)
        os.replace(tmp, path)
    except OSError:
        pass        # read-only: compile every time
    return code
