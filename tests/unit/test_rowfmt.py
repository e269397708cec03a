"""The native text formatter (src/native/rowfmt.c via core/rowfmt.py) prints
every tool's lines byte for byte as the CPython path does.

Each event tool's own columns, in each of its text modes, over its own record
layout (the shipped objects' BTF), render records made here both ways: as a
RawBatch (the ring's bytes, printed by the native program) and as the tuples
it stands for (printed by core/rows.py).  The records are chosen to hit what
the two could disagree on: number boundaries, the largest values, every
address family, command names that are not ASCII or fill their array."""

from __future__ import annotations

import os
import random
import socket
import struct

import pytest

from helpers import captured_output
from pytrace import tools as registry
from pytrace.core import convert, objects, rowfmt
from pytrace.core.btf import ObjectTypes
from pytrace.core.ringbuf import HDR, RawBatch
from pytrace.spec import EVENTS
from test_tool_parsers import parser_of

# The tools whose default lines must stay native: the storm benchmark's (bench/README.md)
MUST_BE_NATIVE = {"tcpstates": ([], ["-w"], ["-s"], ["-T"]), "tcplife": ([], ["-w"], ["-s"], ["-T"])}


class RingStandIn:
    """What event_text reads of a live tracer's ring."""

    def __init__(self, stride: int):
        self.stride, self.header, self.raw = stride, HDR, False


class Source:
    """A live tracer as event_text sees it: fields, layout, ring, projection."""

    def __init__(self, layout):
        self.layout = layout
        self.raw_fields = layout.names
        self.stride = (HDR + layout.size + 7) & ~7
        self.ring = RingStandIn(self.stride)
        self.unpacker = self._unpacker(layout.format)

    def _unpacker(self, fmt: str) -> struct.Struct:
        pad = self.stride - HDR - self.layout.size
        return struct.Struct(f"<{HDR}x{fmt.lstrip('<')}{pad}x")

    def project(self, fields) -> None:
        fmt, self.raw_fields = self.layout.projection(set(fields))
        self.unpacker = self._unpacker(fmt)


INTS = {"B": 8, "H": 16, "I": 32, "Q": 64, "b": 8, "h": 16, "i": 32, "q": 64}


def int_value(rng: random.Random, code: str) -> int:
    bits = INTS[code]
    top = (1 << bits) - 1
    v = rng.choice([0, 1, 2, 9, 10, 17, 99, 100, 999, 1000, 1001, 4999, 5000, 9999, 10**6 - 1, 10**6,
                    top, top - 4, top - 4999, 1 << (bits - 1), (1 << (bits - 1)) - 1,
                    rng.randrange(256), rng.randrange(1 << 16), rng.getrandbits(bits), rng.getrandbits(bits),
                    rng.randrange(1 << min(bits, 40)), rng.randrange(1 << min(bits, 50))])   # times: many seconds
    v &= top
    if code.islower() and v >> (bits - 1):
        v -= 1 << bits
    return v


def bytes_value(rng: random.Random, size: int) -> bytes:
    if size == 16 and rng.random() < 0.6:      # an address of any family
        kind = rng.randrange(4)
        if kind == 0:
            raw = socket.inet_pton(socket.AF_INET, rng.choice(["192.0.2.1", "198.51.100.255", "0.0.0.0",
                                                               "203.0.113.10"]))
        elif kind == 1:
            raw = socket.inet_pton(socket.AF_INET6, rng.choice(["2001:db8::1", "::", "::1", "::ffff:192.0.2.9",
                                                                "2001:db8:0:0:1:0:0:1", "fe80::1:2:3:4"]))
        else:
            raw = bytes(rng.getrandbits(8) for _ in range(16))
        return raw.ljust(16, b"\0")
    text = rng.choice([b"curl", b"python3", b"", b"x" * size, b"conn\xffstorm", b"\xc3\xa9t\xc3\xa9",
                       b"tab\there", b"a" * (size - 1), bytes(rng.getrandbits(7) for _ in range(size))])
    return text[:size].ljust(size, b"\0")


def records(layout, rng: random.Random, n: int) -> bytes:
    """n records of layout, each in its ring slot (header, record, padding)."""
    stride = (HDR + layout.size + 7) & ~7
    out = bytearray()
    for _ in range(n):
        rec = bytearray(layout.size)
        for f in layout.fields:
            code = f.fmt
            if code.endswith("s"):
                size = int(code[:-1])
                rec[f.offset:f.offset + size] = bytes_value(rng, size)
                continue
            if code == "?":
                rec[f.offset] = rng.randrange(2)
                continue
            width = struct.calcsize(code)
            for k in range(f.count):
                # a family field's usual values often, so addresses are printed both ways
                v = rng.choice([2, 10, 2, 10]) if f.name.endswith("family") and rng.random() < 0.8 \
                    else int_value(rng, code)
                struct.pack_into("<" + code, rec, f.offset + k * width, v)
        out += struct.pack("<II", layout.size, 0) + rec + bytes(stride - HDR - layout.size)
    return bytes(out)


def text_modes(name: str, spec) -> list[list[str]]:
    parser = parser_of(name)
    flags = {s for a in parser._actions for s in a.option_strings}
    modes = [[]]
    for extra in (["-w"], ["-s"], ["-v"], ["-x"], ["-w", "-s"], ["-T"], ["-T", "-w"]):
        if set(extra) <= flags:
            modes.append(extra)
    return modes


def event_tools():
    for name in registry.names():
        spec = registry.command(name)
        if getattr(spec, "kind", None) != EVENTS or spec.event is None or spec._text is not None:
            continue
        yield name, spec


def render_both(name: str, spec, argv: list[str], seed: int) -> tuple[bytes, bytes, bool]:
    args = parser_of(name).parse_args(argv)
    layout = ObjectTypes(objects.path(spec.tracer.OBJECT)).struct(spec.event.struct)
    source = Source(layout)
    render = spec.event_renderer(source, args, captured_output())
    stride = source.stride
    rng = random.Random(seed)
    kept: list[bytes] = []  # a value the kernel never sends may be beyond a tool's own table in CPython too
    for _ in range(10):
        made = records(layout, rng, 600)
        for i in range(0, len(made), stride):
            try:
                render([source.unpacker.unpack_from(made, i)])
            except (IndexError, KeyError, ValueError, OverflowError, OSError):
                continue
            kept.append(made[i:i + stride])
        if len(kept) >= 300:
            break
    assert len(kept) >= 300, f"{name}: {len(kept)} of 6000 made records can be printed at all"
    buf = b"".join(kept)
    batch = RawBatch(buf, len(kept), stride, source.unpacker)
    return render(batch), render(list(batch)), source.ring.raw


CASES = [(name, argv) for name, spec in event_tools() for argv in text_modes(name, spec)]


@pytest.mark.skipif(rowfmt.library() is None, reason=f"native formatter: {rowfmt.why_not}")
@pytest.mark.parametrize("name,argv", CASES, ids=[f"{n}{''.join(a)}" for n, a in CASES])
def test_native_lines_are_the_cpython_lines(name, argv):
    spec = registry.command(name)
    native, cpython, used = render_both(name, spec, argv, seed=hash((name, tuple(argv))) & 0xFFFF)
    assert native == cpython
    if name in MUST_BE_NATIVE and argv in MUST_BE_NATIVE[name]:
        assert used, f"{name} {' '.join(argv)} no longer prints natively"


def test_every_native_form_is_declared_with_a_text_form():
    """A conversion's native form says the same as its text form: both exist, or neither's
    promise is checked by the test above."""
    for name in convert.names():
        conv = convert.get(name)
        if conv.native is not None:
            assert conv.text is not None, name
            assert conv.native[0] in ("dec", "hex", "fixed", "text", "addr", "names"), name


def test_the_library_is_built_and_loads():
    """build.py builds it into the package; a tree without it would print every line in CPython."""
    if os.environ.get(rowfmt.OFF_ENV) == "python":
        pytest.skip(f"{rowfmt.OFF_ENV}=python turns the native formatter off")
    assert rowfmt.library() is not None, rowfmt.why_not
    assert rowfmt.status().startswith("native (")


@pytest.mark.skipif(rowfmt.library() is None, reason=f"native formatter: {rowfmt.why_not}")
@pytest.mark.parametrize("code", sorted(INTS))
def test_every_integer_size_and_sign_in_decimal_and_hex(code):
    """Each C integer field as "%d" (and, unsigned, "%x"), padded either way, at its boundaries."""
    from pytrace.core.btf import Field
    field = Field("v", 0, code, 1)
    size = struct.calcsize(code)
    stride = (HDR + size + 7) & ~7
    rng = random.Random(code)
    values = sorted({int_value(rng, code) for _ in range(400)})
    buf = b"".join(struct.pack("<II", size, 0) + struct.pack("<" + code, v) + bytes(stride - HDR - size)
                   for v in values)
    forms = [(("dec",), "d")] + ([(("hex",), "x")] if code.isupper() else [])
    for native, letter in forms:
        for width, left in ((None, False), (6, True), (22, False)):
            program = rowfmt.Program()
            program.field(native, field, None, width, left, None)
            program.literal(b"\n")
            fmt = f"%{'-' if left else ''}{width or ''}{letter}\n".encode()
            unpacker = struct.Struct(f"<{HDR}x{code}{stride - HDR - size}x")
            formatter = program.formatter(stride, HDR, lambda rec: fmt % rec)
            got = formatter.format(RawBatch(buf, len(values), stride, unpacker))
            assert got == b"".join(fmt % v for v in values), (native, width, left)
