"""The kernel's BTF cut down to what the objects' CO-RE relocations read,
made once per boot and handed to libbpf as btf_custom_path.

Why: libbpf relocates each CO-RE access by searching the target BTF for the
types whose name matches the access's root type, one pass over every type
of the kernel (~125k) per distinct root.  filter.h's cgroup and namespace
reads gave every tool about eight more roots, ~5 ms more of each load even
with no filter asked for.  Against a BTF that holds only those candidates
the search is over a few hundred types, and libbpf does not parse the
kernel's BTF at all for an object whose programs do not attach by BTF id.

What is kept, so that every relocation resolves exactly as against the
whole BTF (tests/test_corebtf.py compares the relocated programs):
- every type whose essential name (libbpf's: the name before its last
  "X___Y" flavour separator) is a root of a relocation of the shipped
  objects (build.py records them per object, core/btf.py), whatever its kind;
- in full, what they are made of: embedded structs, unions, arrays, enums,
  typedefs and modifiers, since an access path walks into them and libbpf
  reads their sizes, bit offsets and signedness;
- a pointer member becomes `void *`: libbpf only checks that a pointer
  field is a pointer.  A pointer that a root itself is (through typedefs)
  keeps its target, which a type relocation compares.

An object does not use it (load_path() gives None) when it has a
TYPE_ID_TARGET relocation (the kernel's own type ids are wanted), when a
loaded module has a type for one of its roots (libbpf searches modules only
without an override; a root the kernel lacks everywhere, the usual case of
another kernel's flavour, relocates the same either way), or when a load
with it was refused once this boot (BpfObject.load retries without it).
The file is made again when the set of modules with BTF changes.
"""

from __future__ import annotations

import posix

from . import cachefile

BTF_DIR = "/sys/kernel/btf"
KERNEL_BTF = BTF_DIR + "/vmlinux"
_FORMAT = 1             # of the cached files' names: a change here makes new ones


def _boot_id() -> str:
    """This boot's id, short enough for a file name."""
    return cachefile.boot_id().replace("-", "")[:16]


def of_this_boot(path: str) -> bool:
    """Whether a file load_path() gave was made for the running kernel."""
    boot = _boot_id()
    return bool(boot) and f"-{boot}-" in path.rpartition("/")[2]


def _files(roots: frozenset) -> tuple[str, str] | None:
    """This boot's (BTF, info) file names in the cache for this set of roots."""
    boot = _boot_id()
    if not boot:
        return None
    import zlib
    digest = zlib.crc32(repr(sorted(roots)).encode())
    stem = f"corebtf-{_FORMAT}-{boot}-{digest:08x}"
    return f"{stem}.btf", f"{stem}.info"


def load_path(core: dict, all_roots: frozenset, obj_name: str) -> str | None:
    """The reduced BTF for an object whose CO-RE needs are `core` ({"roots":
    [[name, kind]...], "target_ids": bool}, from its layout cache), made
    now if this boot has none yet; None where the object must relocate
    against the kernel's own BTF.  all_roots: every shipped object's roots
    (one file serves them all)."""
    # without a cache to keep it in, making it at every load would cost more than it saves
    if not core.get("roots") or core.get("target_ids") or not cachefile.usable():
        return None
    mine = frozenset(map(tuple, core["roots"]))
    files = _files(all_roots) if mine <= all_roots else None
    if files is None:
        return None
    modules = _modules()
    info = cachefile.read_dict(files[1])
    if info.get("modules") != modules:
        info = _make(all_roots, modules, *files)
    if not info or obj_name in info.get("refused", ()):
        return None
    if {name for name, _kind in mine} & set(info.get("in_modules", ())):
        return None
    return cachefile.trusted_path(files[0])


def refused(all_roots: frozenset, obj_name: str) -> None:
    """A load of obj_name with the reduced BTF failed: this boot's later
    loads of it relocate against the kernel's own BTF (the failure costs once)."""
    files = _files(all_roots)
    info = cachefile.read_dict(files[1]) if files else None
    if info:
        info["refused"] = sorted({*info.get("refused", ()), obj_name})
        cachefile.write_dict(files[1], info)


def _modules() -> str:
    """Which modules show BTF now, as a short stamp (~50 us to list)."""
    import zlib
    try:
        names = sorted(posix.listdir(BTF_DIR))
    except OSError:
        return ""
    return f"{len(names)}:{zlib.crc32(' '.join(names).encode()):08x}"


def _make(roots: frozenset, modules: str, btf_name: str, info_name: str) -> dict | None:
    from . import btfreduce
    try:
        image, absent, in_modules = btfreduce.reduce_kernel(roots)
    except btfreduce.Unusable:
        return None
    cachefile.write(btf_name, image)
    info = {"absent": sorted(absent), "in_modules": sorted(in_modules), "modules": modules, "refused": []}
    cachefile.write_dict(info_name, info)
    return info
