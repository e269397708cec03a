"""Start-up overlap: load a tool's BPF object while the CLI is still importing.

libbpf's load of a tool's object (the kernel's BTF, the maps, the verifier)
takes ~15 ms, all in C with the GIL released, and the CLI spends about as
long importing and parsing its options in Python before it knows what to
load.  So when `pytrace <tool> ARGS` starts, cli.py calls start(), which
looks up what the last run of the same tool with the same ARGS loaded (the
load specification this module remembered in core/cachefile) and has a thread load exactly that while the main thread
imports.  Tracer.open() then calls take() with its own specification: the
same one gets the loaded object, attached there and then; any other gets
None (and loads as usual; the speculative object, never attached, is
closed).  The first run of a command, and commands whose specification
changes from run to run, simply load as before.

The remembered run also keeps what argparse made of the same arguments
(note_args), so the next one skips building a parser (parsed_args): with
argparse go re, enum and gettext, ~7 ms of start-up.  The parse is kept
with the size and time of every pytrace module the parsing run had
imported (whatever shaped the parser: the tool, the spec, cliutil, the
modules their argument types live in...), and used only while all are
unchanged.  Nothing on that path
imports them (see cli/argparser.py, core/jsonfile.py, net.TcpState).

Only plain loads are speculated: the default attach (no tc, XDP or uprobe
set-up, nothing that changes the system beyond the BPF links), no classic
tracepoint (which may mount tracefs), no object sharing maps with another.
The CLI calls start() before it imports anything else, so this module and
what it imports up to the thread's start are built in or nearly so (posix,
not os; core/barelibbpf, not ctypes): each millisecond before the load
starts is one more before the first event.
"""

from __future__ import annotations

import _ctypes
import _thread
import marshal
import posix    # not os, nor ctypes: see barelibbpf

from ..core import barelibbpf, cachefile, corebtf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.bpfobject import BpfObject

MAX_COMMANDS = 16          # remembered argument lists per tool
UNSTABLE = "unstable"      # remembered instead of a specification that changed between runs

_tool: str | None = None
_argv: tuple[str, ...] = ()
_done = None               # released by the thread when it is finished
# until taken: [specification, variant, libbpf object, load result,
#              the barelibbpf binding that opened it, its libbpf file]
_pending: list | None = None
_claimed: tuple | None = None  # the specification of the process's first load
_args: tuple | None = None     # (files, their stamps, parsed arguments) remembered with the load
_noted: tuple | None = None    # this run's, to remember with its load


# this installation's objects (core/objects.BPF_DIR, without importing os):
# a cache directory is shared by every pytrace a user runs, and an object
# remembered by another one may have other record layouts than ours
_BPF_DIR = __file__.rpartition("/cli/")[0] + "/bpf"


def start(tool: str, argv: list[str]) -> None:
    """Speculate for `pytrace tool argv` (cli.py, before it imports anything else).

    The object is opened here, in the main thread, through barelibbpf (the
    load starts ~2 ms after this call), and only libbpf's load, one C call
    with the GIL released, runs in the thread: Python work in a second
    thread would just take turns with the main thread's imports.  Attaching
    waits for take(), the moment a plain load would attach."""
    global _tool, _argv, _done, _pending, _args
    # once per process; and a tool's name names a file in the cache directory
    if _tool is not None or not tool.isidentifier():
        return
    _tool, _argv = tool, tuple(argv)
    entry = _remembered(tool).get(_argv)
    try:
        spec, variant, path, stamp, image, args, relocation_btf, libs = entry
        if path.rpartition("/")[0] != _BPF_DIR:   # another installation's object (the cache is shared)
            return
        st = posix.stat(path)
        if (st.st_size, st.st_mtime_ns) != stamp:  # another build of the object
            return
        if not all(map(_safe_file, (path, *libs))):   # what is loaded and dlopen'ed here
            return
        _args = args
        if spec[6]:             # another kernel BTF (--btf, never speculated)
            return
        if relocation_btf is not None and not (corebtf.of_this_boot(relocation_btf)
                                                and _safe_file(relocation_btf)):
            relocation_btf = None       # the kernel's own BTF: slower, as right
        lb = barelibbpf.Library(libs[-1], libs[:-1])
        ptr = _open(lb, path, spec, variant[1], image, relocation_btf)
    except Exception:       # nothing (usable) remembered; speculation never fails a command
        return
    if not ptr:
        return
    _pending = [spec, variant, ptr, -1, lb, libs[-1], relocation_btf]
    _done = _thread.allocate_lock()
    _done.acquire()
    import atexit
    atexit.register(_discard)
    # Wait until the thread is in libbpf: a new thread gets the GIL only when
    # this one blocks or its switch interval (5 ms) runs out.
    started = _thread.allocate_lock()
    started.acquire()
    try:
        _thread.start_new_thread(_load, (_pending, lb.bpf_object__load, started))
    except RuntimeError:        # no thread to be had: load as usual
        _done.release()
        return
    started.acquire(timeout=1)


def _safe_file(path: str) -> bool:
    """Whether only root or we could have written path (a library to
    dlopen, an object to load): the file and its directory belong to one of
    us and are writable by no group or other user.  The cache only remembers
    what this user loaded before; this makes sure it is still what was there."""
    me = posix.geteuid()
    for name in (path, path.rpartition("/")[0] or "/"):
        st = posix.stat(name)
        if st.st_uid not in (0, me) or st.st_mode & 0o022:
            return False
    return True


def _open(lb, path: str, spec: tuple, programs: tuple[str, ...], image: bytes | None,
          relocation_btf: str | None) -> int:
    """The object opened as BpfObject.open() would (libbpf.open_object), with
    the remembered .rodata image in place of its settings and the reduced
    kernel BTF it relocated against (core/corebtf); 0 if it does not fit."""
    opts = barelibbpf.open_opts(relocation_btf) if relocation_btf else None
    ptr = lb.bpf_object__open_file(path.encode(), _ctypes.addressof(opts) if opts is not None else None)
    if not ptr:
        return 0

    def check(ret, what):
        if ret < 0:
            raise OSError(-ret, what)
    try:
        barelibbpf.prepare(lb, ptr, programs, spec[5], check)
        if image is not None:
            rodata = lb.bpf_object__find_map_by_name(ptr, b".rodata")
            check(lb.bpf_map__set_initial_value(rodata, image, len(image)) if rodata else -22, ".rodata")
    except OSError:
        lb.bpf_object__close(ptr)
        return 0
    return ptr


def parsed_args() -> dict | None:
    """What the remembered run's argparse made of this same argv, if every
    module that run had imported is unchanged; else None.  The CLI then
    skips building a parser: argparse, with re, enum and gettext, is ~7 ms
    of start-up."""
    try:
        files, stamps, values = _args
        if _stamps(files) != stamps:
            return None
    except (TypeError, ValueError, OSError):    # nothing remembered, an older cache's entry, a file gone
        return None
    return values


def note_args(values: dict, files: tuple[str, ...] | None = None) -> None:
    """The CLI's parsed arguments, remembered with this run's load if marshal
    can store them (a compiled pattern or an address object cannot), keyed by
    files (default: every pytrace module imported so far, i.e. all that the
    parser was built from)."""
    global _noted
    if files is None:
        files = _imported_files()
    try:
        marshal.dumps(values)
        _noted = (files, _stamps(files), values)
    except (ValueError, OSError):
        _noted = None


def _imported_files() -> tuple[str, ...]:
    import sys
    return tuple(sorted({m.__file__ for name, m in list(sys.modules.items())
                         if (name == "pytrace" or name.startswith("pytrace.")) and getattr(m, "__file__", None)}))


def _stamps(files: tuple[str, ...]) -> tuple:
    stamps = []
    for name in files:
        st = posix.stat(name)
        stamps.append((st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def _name(tool: str) -> str:
    return f"spec-{tool}.marshal"


def _remembered(tool: str) -> dict:
    return cachefile.read_dict(_name(tool))


def _load(pending: list, load, started) -> None:
    try:
        started.release()
        pending[3] = load(pending[2])
    finally:
        _done.release()


def specification(tool: str, obj_name: str, variants, rodata: dict, hook: str | None,
                  map_sizes: dict | None, custom_btf: str | None) -> tuple:
    """A load's inputs as plain, comparable, marshal-able values."""
    return (tool, obj_name, tuple(tuple(v) for v in variants), tuple(sorted(_plain(rodata).items())),
            hook, tuple(sorted((map_sizes or {}).items())), custom_btf)


def _plain(rodata: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in rodata.items()}


def take(spec: tuple, name: str, rodata: dict, map_sizes: dict | None) -> "BpfObject | None":
    """The speculatively loaded object, attached, if it was loaded for
    exactly spec (the first call of the process only: later tracers load
    themselves); otherwise None, and the speculative object is closed.
    name, rodata and map_sizes are BpfObject's arguments for it."""
    global _claimed, _pending
    if _tool is None or _claimed is not None:     # not the CLI, or not its first load
        return None
    _claimed = spec
    if _done is None:                             # nothing remembered for this command
        return None
    from ..core import libbpf
    from ..core.bpfobject import BpfObject
    from ..core.loader import Variant
    loaded, variant, ptr, _, bare, lib_path, relocation_btf = _pending
    # made (the object's checks, its BTF layouts read) while the load runs
    obj = BpfObject(name, programs=variant[1], rodata=rodata, map_sizes=map_sizes)
    libbpf.lib()
    with _done:
        rc = _pending[3]
        _pending = None
    if libbpf.lib_path != lib_path:     # this process's binding is another libbpf (PYTRACE_LIBBPF)
        bare.bpf_object__close(ptr)
        return None
    obj.ptr = ptr               # closing obj now closes the speculative object
    obj.relocation_btf = relocation_btf
    if rc != 0 or loaded != spec:
        obj.close()
        return None
    obj.variant = Variant(*variant)
    try:
        for prog in obj.variant.programs:
            obj.attach(prog)
    except BaseException:
        obj.close()
        raise
    return obj


def remember(spec: tuple, obj: "BpfObject") -> None:
    """After the main thread's own load of spec into obj: what the next
    identical command should speculate (the process's first load only)."""
    variant = tuple(obj.variant)
    if spec is not _claimed or variant[0] == "tracepoint":
        return
    known = _remembered(_tool)
    previous = known.get(_argv)
    if previous == UNSTABLE:
        return
    from ..core import libbpf
    from ..core.errors import PytraceError
    # the files barelibbpf opens, in order: what this process's binding loaded
    libs = tuple(f"{libbpf.LIB_DIR}/{dep}" for dep in libbpf.deps_bundled) + (libbpf.lib_path,)
    try:
        st = posix.stat(obj.path)
        entry = (spec, variant, str(obj.path), (st.st_size, st.st_mtime_ns), obj.section_image(".rodata"),
                 _noted, obj.relocation_btf, libs)
    except (OSError, PytraceError):
        return
    # a specification that differs from the last run's (a PID, a time...)
    # would only be loaded in vain every time: stop speculating for it
    if isinstance(previous, tuple) and previous[0] != spec:
        entry = UNSTABLE
    if previous == entry:
        return
    known.pop(_argv, None)
    while len(known) >= MAX_COMMANDS:
        known.pop(next(iter(known)))
    known[_argv] = entry
    cachefile.write_dict(_name(_tool), known)    # a setting marshal cannot store: no speculation


def _discard() -> None:
    """At exit: a speculative object nobody took is closed (after its load ends)."""
    global _pending
    if _pending is not None and _done.acquire(timeout=5):
        _done.release()
        _pending[4].bpf_object__close(_pending[2])
        _pending = None
