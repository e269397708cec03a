"""Classic tracepoints by name: find them, read their record formats, and
compile a small filter/key language over their fields for in-kernel use.

Used by `pytrace count` and `pytrace stackcount`, whose one precompiled
program reads any tracepoint's record: what it reads is described by field
references (offset, size, kind, signedness) taken from tracefs `format`
files and handed to the kernel as rodata, so no compiler is needed.

    names = resolve(["net:net_dev_xmit", "syscalls:sys_exit_conn*"])
    fmt = record_format("syscalls:sys_exit_connect")        # {field: TpField}
    conds = parse_filter("ret < 0 && ret != -EINPROGRESS")  # [Cond]

Names: "category:name", also written "t:category:name",
"tracepoint:category:name" or "category/name"; shell wildcards allowed.
"""

from __future__ import annotations

import difflib
import errno
import fnmatch
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import tracefs
from .errors import PytraceError, UsageError

# field kinds, as the kernel side (src/bpf/count.bpf.c) knows them
KIND_INT, KIND_CHARS, KIND_DATALOC = 1, 2, 3
STR_LEN = 32   # strings are compared and kept up to 31 characters

OPS = ("==", "!=", "<=", ">=", "<", ">", "&")
OP_CODES = {op: i for i, op in enumerate(OPS)}


def events_dir() -> Path:
    """The events/ directory of tracefs (mounted by the caller: see tracefs.ensure)."""
    where = tracefs.mounted()
    if where is None:
        raise PytraceError("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
    return Path(where) / "events"


def all_names() -> list[str]:
    """Every classic tracepoint as 'category:name'."""
    root = events_dir()
    out = []
    for cat in sorted(os.listdir(root)):
        d = root / cat
        if not d.is_dir():
            continue
        for name in sorted(os.listdir(d)):
            if (d / name / "format").exists():
                out.append(f"{cat}:{name}")
    return out


def normalize(spec: str) -> str:
    """'t:net:x', 'tracepoint:net:x', 'net/x' -> 'net:x'."""
    s = spec.strip()
    for prefix in ("tracepoint:", "t:"):
        if s.startswith(prefix) and s.count(":") == 2:
            s = s[len(prefix):]
    if ":" not in s and s.count("/") == 1:
        s = s.replace("/", ":")
    return s


def resolve(specs: list[str], known: list[str] | None = None) -> list[str]:
    """Tracepoint specs (wildcards allowed) -> the tracepoints they name, in order,
    each once.  An unknown name is a UsageError listing the nearest real ones."""
    known = all_names() if known is None else known
    known_set = set(known)
    out: list[str] = []
    for spec in specs:
        name = normalize(spec)
        if name.count(":") != 1 or not all(name.split(":")):
            raise UsageError(f"tracepoint '{spec}': write it as category:name (e.g. net:net_dev_xmit)")
        if any(c in name for c in "*?["):
            hits = [k for k in known if fnmatch.fnmatchcase(k, name)]
        else:
            hits = [name] if name in known_set else []
        if not hits:
            near = difflib.get_close_matches(name.replace("*", ""), known, n=5, cutoff=0.6)
            hint = f" (near: {', '.join(near)})" if near else " (none near it; see /sys/kernel/tracing/events)"
            raise UsageError(f"unknown tracepoint '{spec}'{hint}")
        for h in hits:
            if h not in out:
                out.append(h)
    return out


@dataclass(frozen=True)
class TpField:
    name: str
    ctype: str        # as the format file spells it
    offset: int
    size: int
    signed: bool
    kind: int         # KIND_INT, KIND_CHARS, KIND_DATALOC, or 0 (not usable: other arrays)

    @property
    def is_str(self) -> bool:
        return self.kind in (KIND_CHARS, KIND_DATALOC)

    def ref(self) -> int:
        """Packed for the kernel: offset | size << 16 | kind << 24 | signed << 28."""
        return self.offset | min(self.size, 255) << 16 | self.kind << 24 | int(self.signed) << 28


_FIELD_RE = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                       r"\s*signed:(?P<signed>\d+);")


def parse_format(text: str) -> dict[str, TpField]:
    out: dict[str, TpField] = {}
    for m in _FIELD_RE.finditer(text):
        decl = m["decl"].strip()
        ctype, _, name = decl.rpartition(" ")
        off, size, signed = int(m["off"]), int(m["size"]), m["signed"] == "1"
        array = re.search(r"\[(\d*)\]$", name)
        if array:
            name = name[:array.start()]
        if ctype.startswith("__data_loc") or ctype.startswith("__rel_loc"):
            # __rel_loc is relative to the field's end; only __data_loc is supported
            kind = KIND_DATALOC if ctype.startswith("__data_loc") and "char" in ctype else 0
        elif array:
            kind = KIND_CHARS if ctype.split()[-1] == "char" else 0
        elif size in (1, 2, 4, 8):
            kind = KIND_INT
        else:
            kind = 0
        out[name] = TpField(name, ctype, off, size, signed, kind)
    return out


@lru_cache(maxsize=None)
def _format_text(name: str) -> str:
    cat, ev = name.split(":")
    try:
        return (events_dir() / cat / ev / "format").read_text()
    except OSError as exc:
        raise PytraceError(f"cannot read the format of {name}: {exc.strerror}") from None


def record_format(name: str) -> dict[str, TpField]:
    """{field name: TpField} of a tracepoint's record."""
    return parse_format(_format_text(name))


# -- the filter / key language ------------------------------------------------------

@dataclass(frozen=True)
class Cond:
    field: str
    op: str
    value: int | bytes       # bytes for a string comparison
    text: str                # as written, for messages

    def matches(self, v: int | str) -> bool:
        """The condition evaluated in Python (for tests and documentation)."""
        if isinstance(self.value, bytes):
            eq = str(v).encode()[:STR_LEN - 1] == self.value.rstrip(b"\0")
            return eq if self.op == "==" else not eq
        return {"==": v == self.value, "!=": v != self.value, "<": v < self.value,
                "<=": v <= self.value, ">": v > self.value, ">=": v >= self.value,
                "&": bool(v & self.value)}[self.op]


_COND_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>|&|=)\s*(.+?)\s*$")


def _value(text: str) -> int | bytes:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        return t[1:-1].encode()
    neg = t.startswith("-")
    body = t[1:] if neg else t
    if body.startswith("E") and body.isupper() and hasattr(errno, body):
        v = getattr(errno, body)
        return -v if neg else v
    try:
        return int(t, 0)
    except ValueError:
        return t.encode()     # a bare word: only valid against a string field


def parse_filter(expr: str) -> list[Cond]:
    """'ret < 0 && ret != -EINPROGRESS' -> [Cond, Cond] (all must hold)."""
    if "||" in expr:
        raise UsageError(f"filter '{expr}': only && is supported (give several --filter to AND them)")
    out = []
    for part in expr.split("&&"):
        m = _COND_RE.match(part)
        if not m:
            raise UsageError(f"filter '{part.strip()}': expected FIELD OP VALUE with OP one of "
                             f"{' '.join(OPS)} (e.g. 'ret < 0')")
        field, op, raw = m.groups()
        op = "==" if op == "=" else op
        value = _value(raw)
        if isinstance(value, bytes):
            if len(value) >= STR_LEN:
                raise UsageError(f"filter '{part.strip()}': strings of at most {STR_LEN - 1} characters")
        out.append(Cond(field, op, value, part.strip()))
    return out


def field_for(name: str, tp: str, fields: dict[str, TpField], what: str) -> TpField:
    """The field `name` of tracepoint tp, or a UsageError saying which exist."""
    f = fields.get(name)
    if f is None:
        usable = [n for n, x in fields.items() if x.kind and not n.startswith("common_")]
        raise UsageError(f"{what}: tracepoint {tp} has no field '{name}' "
                         f"(fields: {', '.join(usable) or 'none'})")
    if not f.kind:
        raise UsageError(f"{what}: field '{name}' of {tp} ({f.ctype}) is not an integer or a string")
    return f


def check_cond(cond: Cond, f: TpField, tp: str) -> None:
    if f.is_str and not isinstance(cond.value, bytes):
        raise UsageError(f"filter '{cond.text}': {tp} field '{f.name}' is a string; compare it "
                         "with a string")
    if f.is_str and cond.op not in ("==", "!="):
        raise UsageError(f"filter '{cond.text}': strings compare only with == and !=")
    if not f.is_str and isinstance(cond.value, bytes):
        raise UsageError(f"filter '{cond.text}': '{cond.value.decode()}' is not a number "
                         f"({tp} field '{f.name}' is {f.ctype})")
