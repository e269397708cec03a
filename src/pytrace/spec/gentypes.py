"""Generate the tools' event and row classes from each object's BTF (build time).

As cilium/ebpf's bpf2go turns a BPF object's BTF into Go types, build.py
calls write_package() after compiling, which for every tool with a SPEC
reads the record layouts of its object (core/btf.py, from the object's own
.BTF) and the tool's EventType declarations (spec/eventtype.py: renames and
conversions only), and writes pytrace/gen/<object>.py: one frozen slotted
class per type (core/event.Event), with from_raw/to_dict/from_dict written
out field by field, so that nothing is looked up by name per record.

The generated files are build output (like the .bpf.o files): not committed,
shipped as package data.  A field added to a C struct is in the class, its
to_dict() and the tool's --json after the next build, with no Python edit.

Usable on its own:  python3 -m pytrace.spec.gentypes [BPF_DIR [OUT_DIR]]
"""

from __future__ import annotations

import os
import sys

from ..core import convert
from ..core.btf import ObjectTypes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .eventtype import EventType


class GenError(Exception):
    pass


class _Raw:
    """A raw field as the record carries it: base name (arrays: one field whose
    values are name[0], name[1], ...), struct code, count, and the names it
    has in the raw tuple."""

    __slots__ = ("name", "fmt", "count", "names")

    def __init__(self, name: str, fmt: str, count: int):
        self.name, self.fmt, self.count = name, fmt, count
        self.names = (name,) if count == 1 else tuple(f"{name}[{i}]" for i in range(count))

    def zero(self):
        if self.fmt == "0s":        # a standalone type's text
            return ""
        if self.fmt.endswith("s"):
            return bytes(int(self.fmt[:-1] or 1))
        if self.fmt == "?":
            return False
        if self.fmt in ("f", "d"):
            return 0.0
        return 0


_STANDALONE_FORMATS = {"int": "q", "float": "d", "bool": "?", "str": "0s", "enum": "q"}


def raw_fields(et: EventType, types: ObjectTypes | None) -> list[_Raw]:
    """The raw fields of a type's records, in raw-tuple order."""
    if et.standalone:       # no BTF: the declared fields, typed by their conversions
        out = []
        for d in et.declared:
            kind = convert.get(d.conversion or "int").kind
            out.append(_Raw(d.raw, _STANDALONE_FORMATS.get(kind, "q"), 1))
        return out
    if et.struct is not None:
        return [_Raw(f.name, f.fmt, f.count) for f in types.struct(et.struct).fields]
    parts = types.map_types(et.map)
    if not parts:
        raise GenError(f"{et.name}: {types.path} has no map {et.map} (with BTF key and value types)")
    out: list[_Raw] = []
    for part in ("key", "value"):
        desc = parts.get(part)
        if desc is None:
            raise GenError(f"{et.name}: map {et.map} has no BTF {part} type")
        if desc in types.struct_names():
            out += [_Raw(f.name, f.fmt, f.count) for f in types.struct(desc).fields]
        else:   # a scalar (or array of scalars): the row's field is named key or value
            count = int(desc[:-1]) if desc[:-1].isdigit() and not desc.endswith("s") else 1
            out.append(_Raw(part, desc if count == 1 else desc[-1], count))
    seen: set[str] = set()
    for r in out:
        if r.name in seen:
            raise GenError(f"{et.name}: key and value of map {et.map} both have a field {r.name}")
        seen.add(r.name)
    return out


class _Field:
    """A resolved field of the generated class."""

    __slots__ = ("name", "raw", "conv", "args", "doc")

    def __init__(self, name: str, raw: _Raw, conv: convert.Conversion, args: list[_Raw], doc: str):
        self.name, self.raw, self.conv, self.args, self.doc = name, raw, conv, args, doc


def resolve(et: EventType, raws: list[_Raw]) -> list[_Field]:
    by_name = {r.name: r for r in raws}
    where = f"{et.name} ({et.object}: {'struct ' + et.struct if et.struct else 'map ' + str(et.map)})"
    if et.standalone:
        where = f"{et.name} ({et.object}: standalone)"
    for hidden in et.hidden:
        if hidden not in by_name:
            raise GenError(f"{where}: -{hidden}: no such raw field (has: {', '.join(by_name)})")
    fields: list[_Field] = []
    used: set[str] = set()
    for decl in et.declared:
        raw = by_name.get(decl.raw)
        if raw is None:
            raise GenError(f"{where}: {decl.name} <- {decl.raw}: no such raw field (has: {', '.join(by_name)})")
        try:
            conv = convert.get(decl.conversion or convert.identity_for(raw.fmt, raw.count))
        except KeyError as exc:
            raise GenError(f"{where}: {decl.name}: {exc.args[0]}") from None
        arg_names = decl.args if decl.args is not None else conv.needs
        args = []
        for a in arg_names:
            if a not in by_name:
                raise GenError(f"{where}: {decl.name}: {conv.name} needs raw field {a}, which is not there "
                               f"(name another: {conv.name}(FIELD))")
            args.append(by_name[a])
        fields.append(_Field(decl.name, raw, conv, args, decl.doc))
        used.add(raw.name)
    taken = {f.name for f in fields}
    for raw in raws:
        if raw.name in used or raw.name in et.hidden:
            continue
        name = raw.name.replace(".", "_")
        if name in taken:
            raise GenError(f"{where}: raw field {raw.name} would be field {name}, which is declared already: "
                           f"rename one, or leave it out (-{raw.name})")
        conv = convert.get(convert.identity_for(raw.fmt, raw.count))
        fields.append(_Field(name, raw, conv, [], ""))
        taken.add(name)
    return fields


def _local(raw_name: str) -> str:
    """The variable of a raw value in from_raw: r_<name>, dots and brackets made _."""
    return "r_" + raw_name.replace(".", "_").replace("[", "_").replace("]", "")


def _value_of(raw: _Raw) -> str:
    """The raw value of a field as from_raw has it: one variable, or a tuple of an array's."""
    if raw.count == 1:
        return _local(raw.name)
    return "(" + ", ".join(_local(n) for n in raw.names) + ")"


class _Imports:
    """The functions generated code calls, each under a private alias."""

    def __init__(self) -> None:
        self.alias: dict[object, str] = {}
        self.lines: dict[str, list[str]] = {}

    def __call__(self, fn) -> str:
        if fn in self.alias:
            return self.alias[fn]
        module, name = fn.__module__, fn.__name__
        alias = f"_{name}"
        while alias in self.alias.values():
            alias += "_"
        self.alias[fn] = alias
        self.lines.setdefault(module, []).append(f"{name} as {alias}")
        return alias

    def render(self) -> str:
        return "".join(f"from {m} import (\n" + "".join(f"    {n},\n" for n in names) + ")\n"
                       for m, names in sorted(self.lines.items()))


def class_source(et: EventType, types: ObjectTypes, imports: _Imports) -> str:
    """The source of one generated class."""
    raws = raw_fields(et, types)
    fields = resolve(et, raws)
    all_raw = [n for r in raws for n in r.names]
    zeros = [r.zero() for r in raws for _ in r.names]
    names = tuple(f.name for f in fields)
    if et.time is not None and et.time not in names:
        raise GenError(f"{et.name}: time={et.time!r} is not one of its fields ({', '.join(names)})")
    time_field = et.time or ("ts_ns" if "ts_ns" in names else None)
    source = f"struct {et.struct}" if et.struct else f"map {et.map} (its key, then its value)" if et.map \
        else "its declaration (a tool without BPF)"
    doc = (et.doc or f"One record of {et.object}.").strip()
    width = max(len(n) for n in names)
    kinds = {f.name: f.conv.kind for f in fields}
    conv_width = max(len(f.conv.name) for f in fields)
    doc_lines = [f"        {f.name:<{width}}  {f.conv.name:<{conv_width}}  {f.doc}".rstrip() for f in fields]
    out = [f"class {et.name}(_Event):",
           f'    """{doc}',
           "",
           (f"    From {source} of {et.object}.bpf.o's BTF.  Fields (conversion, what):" if not et.standalone else
            f"    From {source}.  Fields (conversion, what):"),
           *doc_lines,
           '    """',
           f"    __slots__ = {names!r}",
           "    FIELDS = __slots__",
           f"    RAW_FIELDS = {tuple(all_raw)!r}",
           f"    RAW_DEFAULTS = {tuple(zeros)!r}",
           f"    KINDS = {kinds!r}",
           f"    TIME = {time_field!r}",
           "",
           f"    def __init__(self, {', '.join(names)}):"]
    out += [f"        _set(self, {n!r}, {n})" for n in names]
    out += ["", "    @classmethod", "    def from_raw(cls, raw):",
            f"        {', '.join(_local(n) for n in all_raw)}, = raw",
            "        self = _new(cls)"]
    for f in fields:
        value = _value_of(f.raw)
        if f.conv.value is not None:
            value = f"{imports(f.conv.value)}({', '.join([value, *(_value_of(a) for a in f.args)])})"
        out.append(f"        _set(self, {f.name!r}, {value})")
    out += ["        return self", "", "    def to_dict(self):", "        return {"]
    for f in fields:
        value = f"self.{f.name}"
        if f.conv.json is not None:
            value = f"{imports(f.conv.json)}({value})"
        out.append(f"            {f.name!r}: {value},")
    out += ["        }", "", "    @classmethod", "    def from_dict(cls, d):", "        return cls("]
    for f in fields:
        value = f"d[{f.name!r}]"
        if f.conv.parse is not None:
            value = f"{imports(f.conv.parse)}({value})"
        out.append(f"            {value} if {f.name!r} in d else None,")
    out += ["        )", ""]
    return "\n".join(out) + "\n"


def module_source(object_name: str, types_list: list[EventType], types: ObjectTypes,
                  declared_in: str = "its tool") -> str:
    """The source of pytrace/gen/<object>.py: every declared type of one object."""
    imports = _Imports()
    classes = [class_source(et, types, imports) for et in types_list]
    source = "" if all(et.standalone for et in types_list) else f"{object_name}.bpf.o's BTF and\n"
    head = (f'"""{object_name}\'s record types, generated by pytrace.spec.gentypes from '
            f"{source}the declarations in {declared_in}: "
            'do not edit (python3 build.py writes it again)."""\n\n')
    return (head + "from pytrace.core.event import Event as _Event\n" + imports.render()
            + "\n_set = object.__setattr__\n_new = object.__new__\n\n\n" + "\n\n".join(classes))


def declared_types() -> dict[str, tuple[list[EventType], list[str]]]:
    """object -> (the EventTypes the tools' SPECs use, the tool modules declaring
    them); imports every tool module."""
    from .. import tools as registry
    out: dict[str, tuple[list[EventType], list[str]]] = {}
    for name in registry.names():
        spec = getattr(registry.load(name), "SPEC", None)
        if spec is None:
            continue
        for et in spec.types():
            listed, where = out.setdefault(et.object, ([], []))
            if all(other is not et for other in listed):
                listed.append(et)
            if f"pytrace/tools/{name}.py" not in where:
                where.append(f"pytrace/tools/{name}.py")
    return out


INIT = '''"""Record classes generated by build.py from each BPF object's BTF (spec/gentypes.py).

Build output, like the objects in pytrace/bpf: not committed, do not edit.
"""
'''


def write_package(bpf_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[str]:
    """Write pytrace/gen/ for the objects in bpf_dir; returns the files written or
    kept.  A file is rewritten only when its text changes (parallel builds)."""
    bpf_dir = os.fspath(bpf_dir)
    out_dir = os.fspath(out_dir) if out_dir is not None else os.path.join(os.path.dirname(bpf_dir), "gen")
    os.makedirs(out_dir, exist_ok=True)
    wanted = {"__init__.py": INIT}
    for object_name, (types_list, where) in sorted(declared_types().items()):
        path = os.path.join(bpf_dir, f"{object_name}.bpf.o")
        if all(et.standalone for et in types_list):
            types = None
        elif not os.path.exists(path):
            raise GenError(f"{object_name}.bpf.o is not built: its types cannot be generated")
        else:
            types = ObjectTypes(path)
        wanted[f"{object_name}.py"] = module_source(object_name, types_list, types, ", ".join(where))
    for name, text in wanted.items():
        _write_if_changed(os.path.join(out_dir, name), text)
    for name in os.listdir(out_dir):
        if name.endswith(".py") and name not in wanted:
            os.unlink(os.path.join(out_dir, name))
    return sorted(os.path.join(out_dir, n) for n in wanted)


def _write_if_changed(path: str, text: str) -> None:
    try:
        with open(path) as fh:
            if fh.read() == text:
                return
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bpf_dir = argv[0] if argv else os.path.join(here, "bpf")
    try:
        for path in write_package(bpf_dir, argv[1] if len(argv) > 1 else None):
            print(path)
    except GenError as exc:
        print(f"gentypes: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


