"""A BPF object from package data: open, configure, load, attach, release.

    with BpfObject("tcpstates", programs={"tcpstates_tp_btf"},
                   rodata={"target_family": 2}) as obj:
        obj.attach_all()
        ring = obj.map("events")

Everything the kernel holds for the object (programs, maps, links, tc hooks)
is released by close(), which __exit__ calls on normal exit, on exceptions and
on the KeyboardInterrupt/Terminate that SIGINT/SIGTERM/SIGHUP raise (core/stops).
"""

from __future__ import annotations

import ctypes as C
import errno
import mmap
import os
import struct

from . import corebtf, libbpf, objects
from .btf import ObjectTypes, Var
from .errors import PytraceError, UsageError
from .stops import releasing

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from collections.abc import Callable, Iterable     # collections.abc imports collections: ~1 ms
    from typing import Any


def _encode(var: Var, value: Any) -> bytes:
    """Pack a Python value for a global variable of the given BTF shape."""
    if var.fmt.endswith("s"):
        raw = bytes(value)
        if len(raw) > var.size:
            raise ValueError(f"{var.name}: {len(raw)} bytes do not fit in {var.size}")
        return raw.ljust(var.size, b"\0")
    if var.count > 1:
        values = list(value)
        if len(values) > var.count:
            raise ValueError(f"{var.name}: at most {var.count} values")
        values += [0] * (var.count - len(values))
        return struct.pack(f"<{var.count}{var.fmt}", *values)
    return struct.pack("<" + var.fmt, value)


class Map:
    """A loaded map: fd, sizes and the BTF layouts of its key and value."""

    def __init__(self, obj: "BpfObject", ptr: int, name: str):
        lb = libbpf.lib()
        self.obj, self.ptr, self.name = obj, ptr, name
        self.fd = lb.bpf_map__fd(ptr)
        self.type = lb.bpf_map__type(ptr)
        self.key_size = lb.bpf_map__key_size(ptr)
        self.value_size = lb.bpf_map__value_size(ptr)
        self.max_entries = lb.bpf_map__max_entries(ptr)

    def types(self) -> dict[str, str]:
        return self.obj.types.map_types(self.name)

    def _decoder(self, part: str):
        desc = self.types().get(part)
        if desc is None:
            raise PytraceError(f"map {self.name}: no BTF type for its {part}")
        if desc in self.obj.types.struct_names():
            return self.obj.types.struct(desc).decode
        fmt = struct.Struct("<" + desc)
        return lambda buf: fmt.unpack_from(buf)[0] if len(fmt.unpack_from(buf)) == 1 else fmt.unpack_from(buf)

    def decoded_items(self) -> list[tuple[Any, Any]]:
        """(key, value) pairs decoded by the BTF types of the map's key and value."""
        dk, dv = self._decoder("key"), self._decoder("value")
        return [(dk(k), dv(v)) for k, v in self.items()]

    def keys(self) -> list[bytes]:
        lb = libbpf.lib()
        out: list[bytes] = []
        cur = C.create_string_buffer(self.key_size)
        nxt = C.create_string_buffer(self.key_size)
        prev = None
        while lb.bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            out.append(nxt.raw)
            C.memmove(cur, nxt, self.key_size)
            prev = cur
            if len(out) > self.max_entries:  # the map changed under us; stop
                break
        return out

    def lookup(self, key: bytes, value_size: int | None = None) -> bytes | None:
        buf = C.create_string_buffer(value_size or self.value_size)
        if libbpf.lib().bpf_map_lookup_elem(self.fd, key, buf) != 0:
            return None
        return buf.raw

    def items(self, value_size: int | None = None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) now; one value buffer for the whole walk (maps
        are read at every interval, some with thousands of keys)."""
        lookup = libbpf.lib().bpf_map_lookup_elem
        buf = C.create_string_buffer(value_size or self.value_size)
        out = []
        for k in self.keys():
            if lookup(self.fd, k, buf) == 0:
                out.append((k, buf.raw))
        return out

    def percpu_sum(self, key: bytes) -> Any:
        """A per-CPU map's value for key, decoded by its BTF type and summed over
        the CPUs (integers add, integer arrays add element-wise); None if absent.

        The kernel returns one value per possible CPU, each padded to 8 bytes.
        """
        stride = (self.value_size + 7) // 8 * 8
        raw = self.lookup(key, stride * ncpus_possible())
        if raw is None:
            return None
        dv = self._decoder("value")
        total = None
        for off in range(0, len(raw), stride):
            total = _add(total, dv(raw[off:off + self.value_size]))
        return total

    def pop_decoded_items(self) -> list[tuple[Any, Any]]:
        """Every (key, value), decoded, each deleted as it is read (pop_items)."""
        dk, dv = self._decoder("key"), self._decoder("value")
        return [(dk(k), dv(v)) for k, v in self.pop_items()]

    def pop_items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) as bytes, each deleted as it is read: in one step
        with BPF_MAP_LOOKUP_AND_DELETE_ELEM where the kernel has it for this map
        (hash maps: Linux 5.14+), else lookup then delete.  For tools that print
        and reset per interval (tcptop) without losing what arrives meanwhile."""
        lb = libbpf.lib()
        buf = C.create_string_buffer(self.value_size)
        out = []
        for k in self.keys():
            if getattr(self, "_pop_ok", True):
                rc = lb.bpf_map_lookup_and_delete_elem(self.fd, k, buf)
                if rc == 0:
                    out.append((k, buf.raw))
                    continue
                if rc == -errno.ENOENT:     # libbpf 1.x returns -errno
                    continue
                self._pop_ok = False    # not for this map type on this kernel
            v = self.lookup(k)
            if v is not None:
                self.delete(k)
                out.append((k, v))
        return out

    # -- rows: key and value as one flat tuple, as a generated row type takes them ----------
    def _part_format(self, part: str) -> tuple[str, tuple[str, ...]]:
        desc = self.types().get(part)
        if desc is None:
            raise PytraceError(f"map {self.name}: no BTF type for its {part}")
        if desc in self.obj.types.struct_names():
            layout = self.obj.types.struct(desc)
            return layout.format, layout.names
        count = struct.calcsize("<" + desc) // struct.calcsize("<" + desc[-1]) if not desc.endswith("s") else 1
        return "<" + desc, (part,) if count == 1 else tuple(f"{part}[{i}]" for i in range(count))

    def row_names(self) -> tuple[str, ...]:
        """The names of a row's values (rows()): the key's fields, then the value's."""
        return self._part_format("key")[1] + self._part_format("value")[1]

    def rows(self, pop: bool = False) -> list[tuple]:
        """items() (pop: pop_items(), which empties the map), each key and value
        unpacked into one tuple (names: row_names())."""
        unpack_key = struct.Struct(self._part_format("key")[0]).unpack_from
        unpack_value = struct.Struct(self._part_format("value")[0]).unpack_from
        return [unpack_key(k) + unpack_value(v) for k, v in (self.pop_items() if pop else self.items())]

    def pop_rows(self) -> list[tuple]:
        """rows(pop=True): a generated row type's decoder() takes them (core/event.Event)."""
        return self.rows(pop=True)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        libbpf.check(libbpf.lib().bpf_map_update_elem(self.fd, key, value, flags), f"update {self.name}")

    def delete(self, key: bytes) -> None:
        libbpf.lib().bpf_map_delete_elem(self.fd, key)

    def clear(self) -> None:
        for k in self.keys():
            self.delete(k)


def _add(a: Any, b: Any) -> Any:
    """Sum of two decoded values of one type (for per-CPU maps); non-numbers keep a's."""
    if a is None:
        return b
    if isinstance(a, dict):
        return {k: _add(v, b[k]) for k, v in a.items()}
    if isinstance(a, tuple):
        return tuple(x + y for x, y in zip(a, b))
    if isinstance(a, int) and not isinstance(a, bool):
        return a + b
    return a


# libbpf's mark of an unresolved CO-RE relocation: call 0xbad2310 (BPF_JMP|BPF_CALL)
_POISON = bytes((0x85, 0, 0, 0)) + (0xBAD2310).to_bytes(4, "little")


class BpfObject:
    def __init__(self, name: str, programs: Iterable[str] | None = None,
                 rodata: dict[str, Any] | None = None,
                 map_sizes: dict[str, int] | None = None):
        self.name = name
        self.path = objects.path(name)
        self.types = ObjectTypes(self.path)
        self.programs = set(programs) if programs is not None else None
        self.rodata = dict(rodata or {})
        self.map_sizes = dict(map_sizes or {})
        self.ptr: int | None = None
        # the reduced kernel BTF it relocates against (core/corebtf), if any
        self.relocation_btf: str | None = None
        self._own_btf = False           # after a refused load with it: the kernel's own
        self._prepares: list[Callable[["BpfObject"], None]] = []
        self.links: list[int] = []
        self._cleanups: list[Callable[[], None]] = []
        self._mmaps: dict[str, mmap.mmap] = {}

    # -- life cycle ---------------------------------------------------------
    def open(self) -> "BpfObject":
        if self.types.ksyms and not objects.kernel_has_btf():
            # libbpf resolves kfuncs (even weak ones) in the running kernel's
            # own BTF: neither a carried BTF nor --btf can stand in for it
            raise OSError(errno.ENOENT, f"{os.path.basename(self.path)}: its kfunc references need the kernel's "
                                        f"own BTF ({objects.KERNEL_BTF}), which this kernel does not show")
        btf = objects.custom_btf()
        if btf is None and not self._own_btf:
            btf = self.relocation_btf = corebtf.load_path(self.types.core, objects.core_roots(),
                                                          os.path.basename(self.path))
        self.ptr, known = libbpf.open_object(str(self.path), self.programs, self.map_sizes.items(), btf)
        missing = (self.programs or set()) - known
        if missing:
            raise PytraceError(f"{os.path.basename(self.path)} has no program {', '.join(sorted(missing))}")
        if self.rodata:
            self._write_section(".rodata", self.rodata)
        return self

    def prepare(self, step: Callable[["BpfObject"], None]) -> None:
        """Run step(self) between open and load (e.g. bpf_map__reuse_fd), now
        and again if load() has to open the object afresh."""
        self._prepares.append(step)
        step(self)

    def load(self) -> "BpfObject":
        if self.ptr is None:
            self.open()
        rc = libbpf.lib().bpf_object__load(self.ptr)
        if rc < 0 and self.relocation_btf is not None and self._poisoned():
            # maybe a relocation the reduced BTF could not resolve: try the
            # kernel's own once, and if that loads, this boot's later loads of
            # the object use it too (a refused program without the mark is
            # not loaded twice; one whose mark is in dead code may be)
            libbpf.lib().bpf_object__close(self.ptr)
            self.ptr, self.relocation_btf, self._own_btf = None, None, True
            self.open()
            for step in self._prepares:
                step(self)
            rc = libbpf.lib().bpf_object__load(self.ptr)
            if rc == 0:
                corebtf.refused(objects.core_roots(), os.path.basename(self.path))
        libbpf.check(rc, f"load {os.path.basename(self.path)}")
        return self

    def _poisoned(self) -> bool:
        """Whether libbpf left a failed CO-RE relocation's mark in a program
        it was to load: a call of the impossible helper 0xbad2310."""
        lb = libbpf.lib()
        prog = lb.bpf_object__next_program(self.ptr, None)
        while prog:
            count = lb.bpf_program__insn_cnt(prog)
            insns = lb.bpf_program__insns(prog)
            if insns and count and lb.bpf_program__autoload(prog):
                code = C.string_at(insns, count * 8)
                if _POISON in code and any(code[i:i + 8] == _POISON for i in range(0, len(code), 8)):
                    return True
            prog = lb.bpf_object__next_program(self.ptr, prog)
        return False

    def close(self) -> None:
        # One step after another (links, tc hooks, mounts): a stop that lands
        # in between waits until all of them are done (core/stops).
        with releasing():
            lb = libbpf.lib() if self.ptr is not None or self.links else None
            while self.links:
                lb.bpf_link__destroy(self.links.pop())
            for mm in self._mmaps.values():
                mm.close()
            self._mmaps.clear()
            while self._cleanups:
                try:
                    self._cleanups.pop()()
                except OSError:
                    pass
            if self.ptr is not None:
                lb.bpf_object__close(self.ptr)
                self.ptr = None

    def __enter__(self) -> "BpfObject":
        try:
            return self.load()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run fn when the object is closed (tc hooks, mounts...), last in first out."""
        self._cleanups.append(fn)

    def _live(self) -> int:
        """The libbpf object; libbpf would dereference a NULL one, so a closed
        (or never opened) object is an error here, not a crash."""
        if self.ptr is None:
            raise PytraceError(f"{os.path.basename(self.path)}: the BPF object is closed")
        return self.ptr

    # -- programs -----------------------------------------------------------
    def program(self, name: str) -> int:
        return libbpf.check_ptr(libbpf.lib().bpf_object__find_program_by_name(self._live(), name.encode()),
                                f"find program {name}")

    def program_fd(self, name: str) -> int:
        return libbpf.lib().bpf_program__fd(self.program(name))

    def attach(self, name: str) -> int:
        """Attach by section name (tracepoints, tp_btf, raw_tp, fentry, kprobe...)."""
        link = libbpf.check_ptr(libbpf.lib().bpf_program__attach(self.program(name)), f"attach {name}")
        self.links.append(link)
        return link

    def keep_link(self, link: int) -> int:
        """Own a link made by a specialised attach call (uprobe, cgroup, xdp...)."""
        self.links.append(link)
        return link

    def attach_all(self) -> None:
        for name in sorted(self.programs or ()):
            self.attach(name)

    # -- maps and globals -----------------------------------------------------
    def _map_ptr(self, name: str) -> int:
        return libbpf.check_ptr(libbpf.lib().bpf_object__find_map_by_name(self._live(), name.encode()),
                                f"find map {name}")

    def map(self, name: str) -> Map:
        return Map(self, self._map_ptr(name), name)

    def _section_ptr(self, section: str) -> tuple[int, int]:
        self._map_ptr(section)          # a clear error if there is no such section
        ptr, size = libbpf.section(self._live(), section)
        if not ptr:
            raise PytraceError(f"{os.path.basename(self.path)}: {section} is not mapped")
        return ptr, size

    def section_image(self, section: str) -> bytes | None:
        """The bytes of a global-data section (e.g. .rodata as written before
        load: cli/prefetch.py replays it); None if the object has none."""
        ptr, size = libbpf.section(self._live(), section)
        return C.string_at(ptr, size) if ptr else None

    def _write_section(self, section: str, values: dict[str, Any]) -> None:
        ptr, size = self._section_ptr(section)
        known = self.types.vars(section)
        for key, value in values.items():
            var = known.get(key)
            if var is None:
                raise PytraceError(f"{os.path.basename(self.path)}: no setting {key} in {section}")
            try:
                raw = _encode(var, value)
            except (struct.error, ValueError, TypeError, OverflowError) as exc:
                # a value from the command line that cannot fit its field
                raise UsageError(f"{key}={value!r} does not fit its {var.size}-byte field ({exc})") from None
            if var.offset + len(raw) > size:
                raise PytraceError(f"{os.path.basename(self.path)}: {key} lies outside {section}")
            C.memmove(ptr + var.offset, raw, len(raw))

    def global_u64(self, name: str, section: str = ".bss") -> "GlobalU64":
        """A live view of a u64 global (e.g. lost_events), after load.

        libbpf 1.1 maps global data onto the kernel map only for skeletons,
        so the section's map is mmap'ed here (it is BPF_F_MMAPABLE).
        """
        mm = self._mmaps.get(section)
        if mm is None:
            m = self.map(section)
            size = (m.value_size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            mm = self._mmaps[section] = mmap.mmap(m.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        return GlobalU64(mm, self.types.var(section, name).offset)


class GlobalU64:
    __slots__ = ("_mm", "_off")

    def __init__(self, mm: mmap.mmap, off: int):
        self._mm, self._off = mm, off

    @property
    def value(self) -> int:
        return _U64.unpack_from(self._mm, self._off)[0]


_U64 = struct.Struct("Q")   # native: one 8-byte load, never a torn read


def ncpus_possible() -> int:
    """Number of possible CPUs (per-CPU map values have one slot each)."""
    try:
        with open("/sys/devices/system/cpu/possible") as fh:
            text = fh.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n
