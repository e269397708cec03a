"""Record layouts from a BPF object's own BTF.

The event structs, map keys/values and the rodata/bss variables are declared
once, in C.  This module reads the object's `.BTF` section (with pyelftools)
and turns each of those C types into a `Layout`: a `struct` format string plus
field names, so user space decodes records exactly as the C declares them and
can never drift from it.

Parsing an ELF file and its BTF costs tens of milliseconds, so the result is
cached beside the object as `<obj>.layout.json`, keyed by the object's size and CRC:
build.py writes it, and a stale or missing cache is rebuilt on first use.
"""

from __future__ import annotations

import os
import struct
import zlib

from . import jsonfile
from .records import record

# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
_INT_FMT = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
            (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}
CACHE_VERSION = 4


class BTFError(Exception):
    pass


# The records below are immutable named tuples, not dataclasses: importing
# dataclasses costs a tool ~7 ms of start-up (it imports inspect).

class Field(record("Field", "name offset fmt count")):
    """One member of a record.

    name    dotted for nested structs: "key.addr"
    offset  in bytes
    fmt     one struct code: B H I Q b h i q ? or "Ns" for byte arrays
    count   >1 for arrays of integers (the code repeats)
    """
    __slots__ = ()


class Layout(record("Layout", "name size fields")):
    """Byte layout of one C type (name, size, fields: a tuple of Field), ready for struct.Struct."""
    __slots__ = ()

    @property
    def format(self) -> str:
        """Little-endian struct format covering exactly `size` bytes, with padding."""
        out, pos = ["<"], 0
        for f in self.fields:
            if f.offset > pos:
                out.append(f"{f.offset - pos}x")
            out.append(f.fmt if f.count == 1 else f"{f.count}{f.fmt}")
            pos = f.offset + struct.calcsize("<" + (f.fmt if f.count == 1 else f"{f.count}{f.fmt}"))
        if self.size > pos:
            out.append(f"{self.size - pos}x")
        return "".join(out)

    def projection(self, keep: set[str]) -> tuple[str, tuple[str, ...]]:
        """(format, names) decoding only the fields in keep: the others become
        padding, so struct builds no Python object for them."""
        fields = tuple(f for f in self.fields if f.name in keep)
        sub = Layout(self.name, self.size, fields)
        return sub.format, sub.names

    @property
    def names(self) -> tuple[str, ...]:
        """One name per value that struct.unpack yields (arrays repeat as name[i])."""
        out: list[str] = []
        for f in self.fields:
            if f.count == 1:
                out.append(f.name)
            else:
                out.extend(f"{f.name}[{i}]" for i in range(f.count))
        return tuple(out)

    def decode(self, buf: bytes) -> dict:
        """bytes -> {field: value}; arrays of integers become tuples."""
        vals = struct.unpack_from(self.format, buf)
        out, k = {}, 0
        for f in self.fields:
            if f.count == 1:
                out[f.name] = vals[k]
                k += 1
            else:
                out[f.name] = vals[k:k + f.count]
                k += f.count
        return out

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    def to_json(self) -> dict:
        return {"size": self.size, "fields": [[f.name, f.offset, f.fmt, f.count] for f in self.fields]}

    @classmethod
    def from_json(cls, name: str, d: dict) -> "Layout":
        return cls(name, d["size"], tuple(Field(*f) for f in d["fields"]))


class Var(record("Var", "name offset size fmt count")):
    """A global variable in .rodata/.bss/.data: where it is and its type (fmt, count as in Field)."""
    __slots__ = ()


class _Types:
    """A parsed BTF type section (only what layouts need)."""

    def __init__(self, data: bytes):
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise BTFError("not BTF data (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self.strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types: list[tuple] = [(0, "", 0, 0, None)]  # id 0 is void
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            extra = None
            if kind == INT:
                extra = struct.unpack_from("<I", data, pos)[0]
                pos += 4
            elif kind == ARRAY:
                extra = struct.unpack_from("<III", data, pos)
                pos += 12
            elif kind in (STRUCT, UNION):
                extra = [struct.unpack_from("<III", data, pos + 12 * i) for i in range(vlen)]
                extra = [(m[0], m[1], m[2], kflag) for m in extra]
                pos += 12 * vlen
            elif kind == ENUM:
                extra = [struct.unpack_from("<Ii", data, pos + 8 * i) for i in range(vlen)]
                pos += 8 * vlen
            elif kind == ENUM64:
                extra = [struct.unpack_from("<III", data, pos + 12 * i) for i in range(vlen)]
                pos += 12 * vlen
            elif kind == FUNC_PROTO:
                pos += 8 * vlen
            elif kind == VAR:
                pos += 4
            elif kind == DATASEC:
                extra = [struct.unpack_from("<III", data, pos + 12 * i) for i in range(vlen)]
                pos += 12 * vlen
            elif kind == DECL_TAG:
                pos += 4
            self.types.append((kind, self.name(name_off), size_type, vlen, extra))

    def name(self, off: int) -> str:
        end = self.strings.index(b"\0", off)
        return self.strings[off:end].decode()

    def resolve(self, tid: int) -> int:
        while self.types[tid][0] in _MODIFIERS:
            tid = self.types[tid][2]
        return tid

    def size(self, tid: int) -> int:
        tid = self.resolve(tid)
        kind, _, size_type, _, extra = self.types[tid]
        if kind == ARRAY:
            return self.size(extra[0]) * extra[2]
        if kind == PTR:
            return 8
        return size_type

    def scalar(self, tid: int) -> str:
        """struct code of an integer-like type (int, enum, pointer, bool)."""
        tid = self.resolve(tid)
        kind, name, size_type, _, extra = self.types[tid]
        if kind == INT:
            encoding = (extra >> 24) & 0xF
            if encoding & 4:
                return "?"
            return _INT_FMT[(size_type, bool(encoding & 1))]
        if kind in (ENUM, ENUM64):
            return _INT_FMT[(size_type, False)]
        if kind == PTR:
            return "Q"
        raise BTFError(f"type {name or tid} (kind {kind}) is not a scalar")

    def fields(self, tid: int, prefix: str = "", base: int = 0) -> list[Field]:
        """Flatten a struct/union/scalar/array into Fields at byte offsets."""
        tid = self.resolve(tid)
        kind, name, _, _, extra = self.types[tid]
        if kind in (STRUCT, UNION):
            out: list[Field] = []
            for m_name_off, m_type, m_off, kflag in extra:
                bitsize = m_off >> 24 if kflag else 0
                bit_off = m_off & 0xFFFFFF if kflag else m_off
                if bitsize or bit_off % 8:
                    raise BTFError(f"bitfield in {name}: not supported in records")
                m_name = self.name(m_name_off)
                sub = f"{prefix}{m_name}" if m_name else prefix.rstrip(".")
                out.extend(self.fields(m_type, sub + "." if self.is_aggregate(m_type) else sub,
                                       base + bit_off // 8))
                if kind == UNION:
                    break  # a union is decoded as its first member
            return out
        if kind == ARRAY:
            elem, _, n = extra
            if self.types[self.resolve(elem)][0] == ARRAY or self.is_aggregate(elem):
                raise BTFError(f"array of aggregates in {prefix}: not supported in records")
            esize = self.size(elem)
            if esize == 1:
                return [Field(prefix, base, f"{n}s", 1)]
            return [Field(prefix, base, self.scalar(elem), n)]
        return [Field(prefix.rstrip("."), base, self.scalar(tid), 1)]

    def is_aggregate(self, tid: int) -> bool:
        return self.types[self.resolve(tid)][0] in (STRUCT, UNION)

    def layout(self, tid: int, name: str) -> Layout:
        return Layout(name, self.size(tid), tuple(self.fields(tid)))


def _elf_sections(path: str | os.PathLike) -> tuple[bytes, bytes, dict[str, dict[str, int]]]:
    """(.BTF bytes, .BTF.ext bytes, {section: {symbol: offset}}) for the global data sections."""
    from elftools.elf.elffile import ELFFile  # heavy import: only when no cache

    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        sec = elf.get_section_by_name(".BTF")
        if sec is None:
            raise BTFError(f"{os.path.basename(path)} has no .BTF section (built without -g?)")
        data = sec.data()
        ext = elf.get_section_by_name(".BTF.ext")
        ext_data = ext.data() if ext is not None else b""
        names = {i: s.name for i, s in enumerate(elf.iter_sections())}
        symoffs: dict[str, dict[str, int]] = {}
        symtab = elf.get_section_by_name(".symtab")
        for sym in symtab.iter_symbols() if symtab else ():
            shndx = sym["st_shndx"]
            if isinstance(shndx, int) and names.get(shndx, "").startswith((".rodata", ".bss", ".data")):
                symoffs.setdefault(names[shndx], {})[sym.name] = sym["st_value"]
    return data, ext_data, symoffs


# enum bpf_core_relo_kind: the two that are not about the kernel's types' layout
_TYPE_ID_LOCAL, _TYPE_ID_TARGET = 6, 7


def _core_needs(t: _Types, ext: bytes) -> dict:
    """What the object's CO-RE relocations (.BTF.ext) ask of the kernel's BTF:
    the essential names of their root types, and whether one wants a kernel
    type id (core/corebtf cannot serve that one)."""
    from .btfreduce import essential_name
    roots, target_ids = set(), False     # roots: (essential name, kind)
    if len(ext) >= 32:
        _magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", ext, 0)
        if hdr_len >= 32:
            relo_off, relo_len = struct.unpack_from("<II", ext, 24)
            pos = hdr_len + relo_off
            end = pos + relo_len
            rec_size = struct.unpack_from("<I", ext, pos)[0] if relo_len else 16
            pos += 4
            while pos < end:
                _sec, count = struct.unpack_from("<II", ext, pos)
                pos += 8
                for k in range(count):
                    _insn, type_id, _access, kind = struct.unpack_from("<IIII", ext, pos + k * rec_size)
                    if kind == _TYPE_ID_LOCAL:
                        continue
                    target_ids |= kind == _TYPE_ID_TARGET
                    kind, name = t.types[type_id][0], essential_name(t.types[type_id][1])
                    if name:
                        roots.add((name, kind))
                pos += count * rec_size
    return {"roots": [list(r) for r in sorted(roots)], "target_ids": target_ids}


def parse_object(path: str | os.PathLike) -> dict:
    """Everything user space needs from an object's BTF, as a JSON-able dict.

    - structs: every struct reachable from a map key/value or a global
      variable, by C name;
    - maps: map name -> {"key": type, "value": type} (struct name or code);
    - vars: section -> {variable: [offset, size, code, count]};
    - core: what its CO-RE relocations need of the kernel's BTF (core/corebtf);
    - ksyms: whether it has kernel symbol externs (kfuncs), which libbpf
      resolves against the running kernel's own BTF only.
    """
    data, ext, symoffs = _elf_sections(path)
    t = _Types(data)
    structs: dict[str, dict] = {}
    maps: dict[str, dict] = {}
    vars_: dict[str, dict[str, list]] = {}

    def describe(tid: int) -> str:
        r = t.resolve(tid)
        kind, name = t.types[r][0], t.types[r][1]
        if kind in (STRUCT, UNION):
            if name and name not in structs:
                structs[name] = t.layout(r, name).to_json()
            return name
        if kind == ARRAY:
            f = t.fields(r)[0]
            return f"{f.count}{f.fmt}" if f.count > 1 else f.fmt
        return t.scalar(r)

    for kind, sec_name, _, _, extra in t.types:
        if kind != DATASEC:
            continue
        for var_tid, var_off, var_size in extra:
            _, var_name, var_type, _, _ = t.types[var_tid]
            if sec_name == ".maps":
                entry = {}
                def_kind, _, _, _, members = t.types[t.resolve(var_type)]
                for m_name_off, m_type, _m_off, _k in members if def_kind == STRUCT else ():
                    m_name = t.name(m_name_off)
                    if m_name in ("key", "value"):
                        entry[m_name] = describe(t.types[t.resolve(m_type)][2])
                maps[var_name] = entry
            elif sec_name.startswith((".rodata", ".bss", ".data")):
                off = symoffs.get(sec_name, {}).get(var_name, var_off)
                r = t.resolve(var_type)
                if t.is_aggregate(r):
                    describe(r)
                    code, count = t.types[r][1], 1
                else:
                    f = t.fields(r, var_name)[0]
                    code, count = f.fmt, f.count
                vars_.setdefault(sec_name, {})[var_name] = [off, var_size, code, count]
    ksyms = any(kind == DATASEC and name == ".ksyms" for kind, name, _, _, _ in t.types)
    return {"structs": structs, "maps": maps, "vars": vars_, "core": _core_needs(t, ext), "ksyms": ksyms}


def _digest(path: str | os.PathLike) -> str:
    """Identity of an object's contents for the cache: size and CRC-32.

    (Not hashlib: it loads OpenSSL's libcrypto, 3+ MiB of resident memory
    for a check that needs no cryptographic strength.)"""
    with open(path, "rb") as fh:
        data = fh.read()
    return f"{len(data)}:{zlib.crc32(data):08x}"


def _cache_path(obj: str | os.PathLike) -> str:
    return os.fspath(obj) + ".layout.json"


def write_cache(obj: str | os.PathLike) -> dict:
    info = parse_object(obj)
    info["digest"] = _digest(obj)
    info["version"] = CACHE_VERSION
    tmp = f"{os.fspath(obj)}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        import json     # writing only; reading is jsonfile's
        fh.write(json.dumps(info, indent=0, sort_keys=True))
    os.replace(tmp, _cache_path(obj))
    return info


class ObjectTypes:
    """The layouts of one object, from the cache or parsed afresh."""

    def __init__(self, obj: str | os.PathLike):
        self.path = obj
        info = None
        cache = _cache_path(obj)
        try:
            with open(cache) as fh:
                info = jsonfile.loads(fh.read())
            if info.get("version") != CACHE_VERSION or info.get("digest") != _digest(obj):
                info = None
        except (OSError, ValueError):
            info = None
        if info is None:
            try:
                info = write_cache(obj)
            except OSError:  # read-only install: parse every time
                info = parse_object(obj)
        self._info = info

    def struct(self, name: str) -> Layout:
        try:
            return Layout.from_json(name, self._info["structs"][name])
        except KeyError:
            raise BTFError(f"{os.path.basename(self.path)}: no struct {name} in its BTF") from None

    def struct_names(self) -> set[str]:
        return set(self._info["structs"])

    def map_types(self, map_name: str) -> dict[str, str]:
        return self._info["maps"].get(map_name, {})

    def var(self, section: str, name: str) -> Var:
        try:
            off, size, code, count = self._info["vars"][section][name]
        except KeyError:
            raise BTFError(f"{os.path.basename(self.path)}: no variable {name} in {section}") from None
        return Var(name, off, size, code, count)

    @property
    def ksyms(self) -> bool:
        """Whether the object has kfunc/ksym externs (they need the kernel's own BTF)."""
        return bool(self._info.get("ksyms"))

    @property
    def core(self) -> dict:
        """{"roots": [[essential name, BTF kind] of each CO-RE root type], "target_ids": bool}."""
        return self._info.get("core") or {}

    def vars(self, section: str) -> dict[str, Var]:
        return {n: Var(n, *v) for n, v in self._info["vars"].get(section, {}).items()}
