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
argparse go re, enum and gettext, ~7 ms of start-up.  Nothing on that path
imports them (see core/argparser.py, core/jsonfile.py, net.TcpState).

Only plain loads are speculated: the default attach (no tc, XDP or uprobe
set-up, nothing that changes the system beyond the BPF links), no classic
tracepoint (which may mount tracefs), no object sharing maps with another.
Importing this module costs nothing: _thread and marshal are built in.
"""

from __future__ import annotations

import _thread
import marshal
import os

from . import cachefile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .bpfobject import BpfObject

MAX_COMMANDS = 16          # remembered argument lists per tool
UNSTABLE = "unstable"      # remembered instead of a specification that changed between runs

_tool: str | None = None
_argv: tuple[str, ...] = ()
_done = None               # released by the thread when it is finished
_pending: list | None = None   # [specification, variant, libbpf object, load result] until taken
_claimed: tuple | None = None  # the specification of the process's first load
_args: tuple | None = None     # (source stamps, parsed arguments) remembered with the load
_noted: tuple | None = None    # this run's, to remember with its load


def start(tool: str, argv: list[str]) -> None:
    """Speculate for `pytrace tool argv` (cli.py, before it imports the tool).

    The object is opened here, in the main thread, through libbpf and ctypes
    alone (json, re, enum and the rest are not needed yet: the load starts
    ~3 ms after this call), and only libbpf's load, one C call with the GIL
    released, runs in the thread: Python work in a second thread would just
    take turns with the main thread's imports.  Attaching waits for take(),
    the moment a plain load would attach."""
    global _tool, _argv, _done, _pending, _args
    _tool, _argv = tool, tuple(argv)
    entry = _remembered(tool).get(_argv)
    try:
        spec, variant, path, stamp, image, args = entry
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) != stamp:  # another build of the object
            return
        _args = args
        ptr = _open(path, spec, variant[1], image)
    except Exception:       # nothing (usable) remembered; speculation never fails a command
        return
    if not ptr:
        return
    _pending = [spec, variant, ptr, -1]
    _done = _thread.allocate_lock()
    _done.acquire()
    import atexit
    atexit.register(_discard)
    # Wait until the thread is in libbpf: a new thread gets the GIL only when
    # this one blocks or its switch interval (5 ms) runs out.
    started = _thread.allocate_lock()
    started.acquire()
    from . import libbpf
    try:
        _thread.start_new_thread(_load, (_pending, libbpf.lib().bpf_object__load, started))
    except RuntimeError:        # no thread to be had: load as usual
        _done.release()
        return
    started.acquire(timeout=1)


def _open(path: str, spec: tuple, programs: tuple[str, ...], image: bytes | None) -> int:
    """The object opened as BpfObject.open() would (libbpf.open_object), with
    the remembered .rodata image in place of its settings; 0 if it does not fit."""
    import ctypes as C
    from . import libbpf
    ptr, _ = libbpf.open_object(path, programs, spec[5], spec[6])
    if image is not None:
        data, size = libbpf.section(ptr, ".rodata")
        if not data or size != len(image):
            libbpf.lib().bpf_object__close(ptr)
            return 0
        C.memmove(data, image, len(image))
    return ptr


def parsed_args(sources: tuple[str, ...]) -> dict | None:
    """What the remembered run's argparse made of this same argv, if the
    files that define the arguments (sources) are unchanged; else None.
    The CLI then skips building a parser: argparse, with re, enum and
    gettext, is ~7 ms of start-up."""
    try:
        if _args is None or _args[0] != _stamps(sources):
            return None
    except OSError:
        return None
    return _args[1]


def note_args(sources: tuple[str, ...], values: dict) -> None:
    """The CLI's parsed arguments, remembered with this run's load if marshal
    can store them (a compiled pattern or an address object cannot)."""
    global _noted
    try:
        marshal.dumps(values)
        _noted = (_stamps(sources), values)
    except (ValueError, OSError):
        _noted = None


def _stamps(files: tuple[str, ...]) -> tuple:
    stamps = []
    for name in files:
        st = os.stat(name)
        stamps.append((st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def _name(tool: str) -> str:
    return f"spec-{tool}.marshal"


def _remembered(tool: str) -> dict:
    data = cachefile.read(_name(tool))
    try:
        known = marshal.loads(data) if data is not None else {}
    except (ValueError, EOFError, TypeError):
        return {}
    return known if isinstance(known, dict) else {}


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
    from .bpfobject import BpfObject
    from .loader import Variant
    loaded, variant, ptr = _pending[:3]
    # made (the object's checks, its BTF layouts read) while the load runs
    obj = BpfObject(name, programs=variant[1], rodata=rodata, map_sizes=map_sizes)
    with _done:
        rc = _pending[3]
        _pending = None
    obj.ptr = ptr               # closing obj now closes the speculative object
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
    from .errors import PytraceError
    try:
        st = os.stat(obj.path)
        entry = (spec, variant, str(obj.path), (st.st_size, st.st_mtime_ns), obj.section_image(".rodata"),
                 _noted)
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
    try:
        cachefile.write(_name(_tool), marshal.dumps(known))
    except ValueError:
        pass    # a setting marshal cannot store: no speculation


def _discard() -> None:
    """At exit: a speculative object nobody took is closed (after its load ends)."""
    global _pending
    if _pending is not None and _done.acquire(timeout=5):
        _done.release()
        from . import libbpf
        libbpf.lib().bpf_object__close(_pending[2])
        _pending = None
