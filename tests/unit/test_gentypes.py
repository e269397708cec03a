"""Event types generated from BTF (spec/gentypes.py): a field added to a C
struct reaches the generated class, to_dict() and --json with no Python
edit.  A tiny object is compiled here, with clang, twice: without and with
one more field; the same declaration serves both."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import types

import pytest

from pytrace.spec import gentypes
from pytrace.core.btf import ObjectTypes
from pytrace.spec import EventType
from pytrace.spec.jsonout import event_json

clang = shutil.which("clang") or shutil.which("clang-14")
pytestmark = pytest.mark.skipif(clang is None, reason="clang (a build dependency) is not installed")

# self-contained: what vmlinux.h and bpf_helpers.h would give
DEMO_C = """
typedef unsigned long long __u64;
typedef unsigned int __u32;
typedef unsigned short __u16;
typedef unsigned char __u8;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define BPF_MAP_TYPE_HASH 1

struct demo_event {
	__u64 ts_ns;
	__u8 saddr[16];
	__u16 family;
	__u16 lport;
	char comm[16];
	__u32 slots[3];
	EXTRA
};

struct demo_key {
	__u32 pid;
	__u16 pad;
	__u16 lport;
};

struct demo_value {
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, struct demo_key);
	__type(value, struct demo_value);
} rows SEC(".maps");

struct demo_event _event_type = {};
char LICENSE[] SEC("license") = "GPL";
"""

# what a tool would declare: renames and conversions only
DECLARED = """
    ts_ns
    comm: text                  # the command
    laddr <- saddr: address
    family: family
"""


def build(tmp_path, name: str, extra: str) -> ObjectTypes:
    """demo.bpf.o compiled with `extra` as the struct's last member."""
    src, obj = tmp_path / f"{name}.bpf.c", tmp_path / f"{name}.bpf.o"
    src.write_text(DEMO_C.replace("EXTRA", extra))
    subprocess.run([clang, "-target", "bpf", "-g", "-O2", "-c", str(src), "-o", str(obj)], check=True)
    return ObjectTypes(obj)


def generated(et: EventType, objtypes: ObjectTypes) -> types.ModuleType:
    """The module build.py would write for this object, imported."""
    module = types.ModuleType(f"demo_gen_{id(objtypes)}")
    exec(compile(gentypes.module_source("demo", [et], objtypes), module.__name__, "exec"), module.__dict__)
    return module


def declared() -> EventType:
    et = EventType("DemoEvent", struct="demo_event", fields=DECLARED)
    et.bind("demo")
    return et


def record(objtypes: ObjectTypes, **values) -> tuple:
    """A raw record of the object's struct as the ring buffer delivers it (packed, unpacked)."""
    layout = objtypes.struct("demo_event")
    fields = {"ts_ns": 5, "saddr": socket.inet_pton(socket.AF_INET, "192.0.2.7").ljust(16, b"\0"),
              "family": socket.AF_INET, "lport": 8080, "comm": b"curl".ljust(16, b"\0"),
              "slots[0]": 1, "slots[1]": 2, "slots[2]": 3, **values}
    raw = tuple(fields[n] for n in layout.names)
    assert struct.unpack(layout.format, struct.pack(layout.format, *raw)) == raw
    return raw


class Source:
    """What a renderer reads of a tracer: the raw field names, and a decoder."""

    def __init__(self, cls, fields):
        self.cls, self.raw_fields = cls, fields

    def decoder(self):
        return self.cls.decoder(self.raw_fields)


def test_a_field_added_in_c_reaches_the_event_and_json(tmp_path):
    before, after = build(tmp_path, "old", ""), build(tmp_path, "new", "__u32 retrans;")
    old, new = generated(declared(), before).DemoEvent, generated(declared(), after).DemoEvent
    # declared fields in their order, then the undeclared ones in C order
    assert old.FIELDS == ("ts_ns", "comm", "laddr", "family", "lport", "slots")
    assert new.FIELDS == old.FIELDS + ("retrans",)
    ev = new.from_raw(record(after, retrans=9))
    assert ev.retrans == 9 and ev.slots == (1, 2, 3) and str(ev.laddr) == "192.0.2.7" and ev.comm == "curl"
    assert ev.to_dict() == {"ts_ns": 5, "comm": "curl", "laddr": "192.0.2.7", "family": "AF_INET", "lport": 8080,
                            "slots": [1, 2, 3], "retrans": 9}
    # --json: the spec's renderer, given the generated class
    et = declared()
    et._cls = new
    line = event_json(et, Source(new, after.struct("demo_event").names))([record(after, retrans=9)])
    got = json.loads(line)
    assert list(got) == ["time", "ts_ns", "comm", "laddr", "family", "lport", "slots", "retrans"]
    assert got["retrans"] == 9


def test_records_of_another_build_decode_by_name(tmp_path):
    """A recording made before the field existed decodes with it zero; one made
    after, by the older class, without it."""
    before, after = build(tmp_path, "old", ""), build(tmp_path, "new", "__u32 retrans;")
    old, new = generated(declared(), before).DemoEvent, generated(declared(), after).DemoEvent
    older = new.decoder(before.struct("demo_event").names)(record(before))
    assert older.retrans == 0 and older.lport == 8080
    newer = old.decoder(after.struct("demo_event").names)(record(after, retrans=9))
    assert newer.to_dict() == {k: v for k, v in older.to_dict().items() if k != "retrans"}


def test_generated_class_is_frozen_slotted_and_round_trips(tmp_path):
    cls = generated(declared(), build(tmp_path, "new", "__u32 retrans;")).DemoEvent
    ev = cls.from_raw(record(ObjectTypes(tmp_path / "new.bpf.o"), retrans=1))
    assert not hasattr(ev, "__dict__") and cls.__slots__ == cls.FIELDS
    with pytest.raises(AttributeError):
        ev.lport = 1
    assert cls.from_dict(ev.to_dict()) == ev
    assert cls.from_dict({k: str(v) for k, v in ev.to_dict().items() if k != "slots"}).lport == 8080
    assert {ev: 1}[cls.from_dict(ev.to_dict())] == 1


def test_a_map_row_type_from_key_and_value(tmp_path):
    objtypes = build(tmp_path, "new", "")
    et = EventType("DemoRow", map="rows", fields="port <- lport\n-pad\nbytes")
    et.bind("demo")
    cls = generated(et, objtypes).DemoRow
    assert cls.FIELDS == ("port", "bytes", "pid") and cls.RAW_FIELDS == ("pid", "pad", "lport", "bytes")
    assert cls.from_raw((7, 0, 443, 1000)).to_dict() == {"port": 443, "bytes": 1000, "pid": 7}


@pytest.mark.parametrize("fields,needle", [
    ("laddr <- nosuch: address", "nosuch: no such raw field"),
    ("comm: nosuchconversion", "no conversion 'nosuchconversion'"),
    ("-nosuch", "-nosuch: no such raw field"),
    ("laddr <- saddr: address(af)", "needs raw field af"),
    ("family <- lport", "would be field family"),
])
def test_a_declaration_that_does_not_fit_the_btf_says_why(tmp_path, fields, needle):
    objtypes = build(tmp_path, "new", "")
    et = EventType("Bad", struct="demo_event", fields=fields)
    et.bind("demo")
    with pytest.raises(gentypes.GenError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        gentypes.module_source("demo", [et], objtypes)


def test_the_installed_classes_are_the_build_s():
    """build.py wrote pytrace/gen/ for the objects installed beside it."""
    from pytrace.core import objects
    from pytrace.core.event import Event
    from pytrace.tools.tcpstates import TcpStateChange
    gen_dir = os.path.join(os.path.dirname(objects.BPF_DIR), "gen")
    declared_now = gentypes.declared_types()
    assert set(declared_now) <= {n[:-3] for n in os.listdir(gen_dir) if n.endswith(".py")}
    for object_name, (types_list, where) in declared_now.items():
        standalone = all(et.standalone for et in types_list)       # a tool without BPF (nstat)
        types = None if standalone else ObjectTypes(os.path.join(objects.BPF_DIR, f"{object_name}.bpf.o"))
        text = gentypes.module_source(object_name, types_list, types, ", ".join(where))
        with open(os.path.join(gen_dir, f"{object_name}.py")) as fh:
            assert fh.read() == text, object_name
    assert issubclass(TcpStateChange, Event) and pickle.loads(pickle.dumps(TcpStateChange)) is TcpStateChange


def test_field_declarations_parse_strictly():
    et = EventType("T", struct="s", fields="""
        a                 # kept, documented
        b <- c: address(f, g)
        -pad
    """)
    assert [(d.name, d.raw, d.conversion, d.args, d.doc) for d in et.declared] == \
        [("a", "a", "", None, "kept, documented"), ("b", "c", "address", ("f", "g"), "")]
    assert et.hidden == {"pad"}
    for bad in ("a <- ", "1a", "a: x(", "a\na"):
        with pytest.raises(ValueError):
            EventType("T", struct="s", fields=bad)
    with pytest.raises(ValueError):
        EventType("T", fields="a")                   # neither struct= nor map=


def test_every_tool_exposes_its_generated_classes():
    """A tool's generated classes are its module's attributes (spec.public_classes,
    PEP 562), each EventType it declares under its own name, and only those."""
    import importlib
    import pkgutil
    import pytrace.tools
    from pytrace.spec import public_classes
    seen = 0
    for info in pkgutil.iter_modules(pytrace.tools.__path__):
        mod = importlib.import_module(f"pytrace.tools.{info.name}")
        declared = [v for v in vars(mod).values() if isinstance(v, EventType)]
        if not declared:
            continue
        assert mod.__getattr__.__qualname__ == f"{public_classes.__name__}.<locals>.module_getattr", info.name
        for et in declared:
            assert getattr(mod, et.name) is et.cls, (info.name, et.name)
            seen += 1
        with pytest.raises(AttributeError, match=f"pytrace.tools.{info.name}"):
            getattr(mod, "NoSuchClass")
    assert seen >= 16
