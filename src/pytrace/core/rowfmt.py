"""The native text formatter: ring records -> lines in C, driven from here.

src/native/rowfmt.c, built by build.py into pytrace/native/librowfmt.so,
runs a small op program over a whole drained batch as it lies in the ring
(no tuple per record, no Python per field): ~0.1 us a line where the CPython
path (core/rows.py) takes ~2 us.  spec/text.py builds the program from the
shown columns; each conversion declares its native form in core/convert.py
(`native=`), and a column without one leaves the whole renderer on the
CPython path.

Exactness: rowfmt.c prints only what it prints byte for byte as the CPython
path does; any other record (a non-ASCII command name, an unknown address
family, a number beyond a name table) is handed back, and Formatter prints
that one record the CPython way (tests/test_rowfmt.py).

When the library is missing, built for another machine, or turned off
(PYTRACE_ROWFMT=python, for A/B runs), every tool prints through CPython;
`pytrace doctor` says which.
"""

from __future__ import annotations

import ctypes as C
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

NATIVE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "native")
LIBRARY = "librowfmt.so"
OFF_ENV = "PYTRACE_ROWFMT"          # "python": never use the library

# op kinds: rowfmt.c's enum rf_kind
LIT, UDEC, SDEC, HEX, FIXED, TEXT, ADDR, NAME, HMS = range(1, 10)
NO_CUT = 0xFFFF
NO_NAME = 0xFFFFFFFF                 # a name table's hole: that value is printed by CPython
MAX_CHUNK_BYTES = 4 << 20            # the output buffer's most, whatever the batch
SLACK = 16                           # rowfmt.c copies in 16-byte chunks: room beyond a line and the pool
MAX_TEXT = 64                        # rowfmt.c's scratch holds a text field of at most this


class _Op(C.Structure):
    """struct rf_op, field for field (rowfmt_op_size() checks the size at load)."""
    _fields_ = [("kind", C.c_uint8), ("size", C.c_uint8), ("size2", C.c_uint8), ("left", C.c_uint8),
                ("digits", C.c_uint8), ("shift", C.c_uint8), ("off", C.c_uint16), ("off2", C.c_uint16),
                ("width", C.c_uint16), ("cut", C.c_uint16), ("pad_", C.c_uint16),
                ("a", C.c_uint64), ("b", C.c_uint64), ("c", C.c_uint64)]


_lib: C.CDLL | None = None
why_not: str | None = None           # why the library is not used (None: not tried yet, or used)
_tried = False


def library() -> C.CDLL | None:
    """The loaded library, or None (why_not then says why)."""
    global _lib, why_not, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get(OFF_ENV) == "python":
        why_not = f"turned off ({OFF_ENV}=python)"
        return None
    path = os.path.join(NATIVE_DIR, LIBRARY)
    try:
        lib = C.CDLL(path)
        run, size = lib.rowfmt_run, lib.rowfmt_op_size
    except (OSError, AttributeError) as exc:
        why_not = f"not loaded ({exc})"
        return None
    size.restype = C.c_uint32
    if size() != C.sizeof(_Op):
        why_not = f"{path} is of another version (op of {size()} bytes, expected {C.sizeof(_Op)})"
        return None
    run.restype = C.c_size_t
    run.argtypes = (C.c_void_p, C.c_uint32, C.c_char_p, C.c_void_p, C.c_char_p, C.c_uint32, C.c_uint32,
                    C.c_uint32, C.c_uint32, C.c_size_t, C.c_void_p, C.c_size_t,
                    C.POINTER(C.c_uint32), C.POINTER(C.c_uint32))
    _lib = lib
    return lib


def status() -> str:
    """One line for `pytrace doctor`."""
    lib = library()
    if lib is None:
        return f"CPython (the native formatter is {why_not})"
    return f"native ({os.path.join(NATIVE_DIR, LIBRARY)})"


# Struct codes of the record fields a native op reads, and their sizes
_UNSIGNED = {"B": 1, "H": 2, "I": 4, "Q": 8}
_SIGNED = {"b": 1, "h": 2, "i": 4, "q": 8}


class Unsupported(Exception):
    """The program cannot print this column natively: the renderer stays on CPython."""


class Program:
    """The ops of one line, built column by column (spec/text.py)."""

    def __init__(self) -> None:
        self.ops: list[dict] = []
        self.pool = bytearray()
        self.names: list[int] = []     # (offset, length) pairs into pool, flat
        self._tables: dict[tuple, tuple[int, int]] = {}
        self.line_max = 0

    def literal(self, text: bytes) -> None:
        if not text:
            return
        last = self.ops[-1] if self.ops else None
        if last is not None and last["kind"] == LIT and last["a"] + last["b"] == len(self.pool):
            last["b"] += len(text)      # a column's separator runs on into the next literal
        else:
            self.ops.append({"kind": LIT, "a": len(self.pool), "b": len(text)})
        self.pool += text
        self.line_max += len(text)

    def field(self, native: tuple, field, other, width: int | None, left: bool, cut: int | None) -> None:
        """One column: native is its conversion's native form (core/convert.py);
        field the raw field's layout (core/btf.Field), other that of the field
        the conversion needs (an address's family), if any."""
        if field.count != 1:
            raise Unsupported(f"{field.name} is an array")
        kind, *params = native
        op = {"off": field.offset, "width": width or 0, "left": int(bool(left and width)), "cut": NO_CUT}
        code = field.fmt
        if kind == "dec":
            div, shift = params if params else (1, 0)
            if code in _SIGNED and div == 1 and shift == 0:
                op.update(kind=SDEC, size=_SIGNED[code])
            else:
                op.update(kind=UDEC, size=self._unsigned(field), a=div, shift=shift)
            longest = 20
        elif kind == "hex":
            op.update(kind=HEX, size=self._unsigned(field))
            longest = 16
        elif kind == "fixed":
            add, div, fdiv, digits = params
            op.update(kind=FIXED, size=self._unsigned(field), a=add, b=div, c=fdiv, digits=digits)
            longest = 21 + digits
        elif kind == "text":
            if not code.endswith("s"):
                raise Unsupported(f"{field.name} is not a char array")
            size = int(code[:-1])
            if size > MAX_TEXT:
                raise Unsupported(f"{field.name} is longer than {MAX_TEXT} bytes")
            op.update(kind=TEXT, size=size, cut=NO_CUT if cut is None else cut)
            longest = size if cut is None else min(cut, size)
        elif kind == "addr":
            if code != "16s" or other is None:
                raise Unsupported(f"{field.name} is not a 16-byte address with a family")
            op.update(kind=ADDR, size=16, off2=other.offset, size2=self._unsigned(other))
            longest = 46                # INET6_ADDRSTRLEN: inet_ntop writes up to it
        elif kind == "hms":         # a time form (spec/text.py), not a conversion: the Clock's offset
            op.update(kind=HMS, size=self._unsigned(field), a=params[0])
            longest = 8
        elif kind == "names":
            table, limit = params
            size = self._unsigned(field)
            limit = min(limit, 1 << (8 * size))
            first, longest = self._table(table, limit)
            op.update(kind=NAME, size=size, a=first, b=limit)
        else:
            raise Unsupported(f"no native op {kind}")
        if cut is not None and kind != "text":
            raise Unsupported("a precision on a number")
        self.ops.append(op)
        self.line_max += max(width or 0, longest)

    def _table(self, table: Callable[[int], bytes | None], limit: int) -> tuple[int, int]:
        """(first entry, longest name) of the names of 0..limit-1, put in the
        pool once per program (oldstate and newstate share theirs)."""
        known = self._tables.get((table, limit))
        if known is not None:
            return known
        first = len(self.names) // 2
        texts = [table(v) for v in range(limit)]
        entries = self.names
        for text in texts:
            if text is None:
                entries += (0, NO_NAME)
            else:
                entries += (len(self.pool), len(text))
                self.pool += text
        known = self._tables[(table, limit)] = first, max((len(t) for t in texts if t is not None), default=0)
        return known

    @staticmethod
    def _unsigned(field) -> int:
        if field.fmt not in _UNSIGNED:
            raise Unsupported(f"{field.name} is not an unsigned integer")
        return _UNSIGNED[field.fmt]

    def formatter(self, stride: int, header: int, slow: Callable[[tuple], bytes]) -> Formatter | None:
        """The program ready to run over records of `stride` bytes (each `header`
        bytes into its slot); slow(record) prints one record's tuple the CPython
        way.  None when the library is not there."""
        lib = library()
        if lib is None:
            return None
        return Formatter(lib, self, stride, header, slow)


class Formatter:
    """format(batch): the lines of a core/ringbuf.RawBatch, as bytes."""

    def __init__(self, lib: C.CDLL, program: Program, stride: int, header: int,
                 slow: Callable[[tuple], bytes]):
        self._run = lib.rowfmt_run
        ops = (_Op * len(program.ops))()
        for slot, op in zip(ops, program.ops):
            for name, value in op.items():
                setattr(slot, name, value)
        self._ops, self._nops = ops, len(program.ops)
        self._pool = bytes(program.pool) + bytes(SLACK)
        self._names = (C.c_uint32 * max(1, len(program.names)))(*program.names)
        self.stride, self.header, self.line_max = stride, header, program.line_max
        self._slow = slow
        self._out = C.create_string_buffer(0)
        self._done, self._deferred = C.c_uint32(), C.c_uint32()

    def _room(self, records: int) -> int:
        want = min(max(records, 1) * self.line_max, MAX_CHUNK_BYTES) + self.line_max + SLACK
        if C.sizeof(self._out) < want:
            self._out = C.create_string_buffer(want)
        return C.sizeof(self._out)

    def format(self, batch) -> bytes:
        buf, n = batch.buf, batch.n
        parts, i = [], 0
        done, deferred = self._done, self._deferred
        pdone, pdeferred = C.byref(done), C.byref(deferred)
        while i < n:
            cap = self._room(n - i)
            out = self._out
            written = self._run(self._ops, self._nops, self._pool, self._names, buf, self.stride, self.header,
                                i, n, self.line_max, out, cap, pdone, pdeferred)
            if written:
                parts.append(C.string_at(out, written))
            i += done.value
            if deferred.value:
                parts.append(self._slow(batch.tuple_at(i)))
                i += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)
