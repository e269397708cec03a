"""Base of every tool's library object: choose and load a hook variant,
configure it, release it.  EventTracer (stream.py) adds the ring buffer;
aggregating tools read their maps directly."""

from __future__ import annotations


from . import loader, objects
from .bpfobject import BpfObject
from .errors import PytraceError
from .loader import Variant
from .stops import releasing

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from collections.abc import Sequence     # collections.abc imports collections: ~1 ms
    from typing import Any, ClassVar


class Tracer:
    """A tool's BPF object, loaded and attached by open() (or `with`),
    released by close() (or the end of the `with` block).

    The release runs on every way out of the block that Python sees: normal
    end, exception, Ctrl-C.  SIGTERM and SIGHUP end a Python program without
    running it unless the program turns them into an exception; a library
    does not install signal handlers on its own, so a program that can be
    stopped that way calls, from its main thread, before opening a tracer:

        pytrace.stop_on_signals()    # SIGTERM/SIGHUP raise pytrace.Terminate

    (or `with pytrace.stop_on_signals(): ...` to end the block quietly on a
    stop).  A stop that lands during close() waits until it is complete
    (core/stops.releasing).

    Whose events: a tool whose object has the filters of src/bpf/filter.h
    names them in SCOPE, and every such tracer takes them as keywords:

        cgroup=PATH|ID (or a list)   those cgroups (v2) and their descendants
        netns=NS                     an `ip netns` name, a path or an inode
        container=NAME|ID (or list)  containers, followed as they come and go
        cgroupmap=PATH, mntnsmap=PATH   BCC's pinned sets
        labels=True                  events carry cgroup_id, netns and labels
                                     (core/containers.Labels)

    (core/containers.Scope resolves them and keeps the kernel's set current.)
    """

    OBJECT: ClassVar[str]
    VARIANTS: ClassVar[Sequence[Variant]]
    TOOL: ClassVar[str] = ""            # name in messages, when not OBJECT
    NEED_NET_ADMIN: ClassVar[bool] = False
    # filter.h's filters the object has: cgroup, netns, container, cgroupmap,
    # mntnsmap, and "labels" where its events carry cgroup_id (and netns)
    SCOPE: ClassVar[frozenset[str]] = frozenset()
    # the CLI's start-up speculation (cli/prefetch: specification, take, remember),
    # set by the CLI only: a library user's load neither reads nor writes its cache
    preloads: ClassVar[Any] = None

    def __init__(self, *, hook: str | None = None, **scope: Any):
        self.hook = hook
        self.obj: BpfObject | None = None
        self.scope: Any = None      # core/containers.Scope, when a filter or labels are asked for
        unknown = sorted(set(scope) - SCOPE_KEYWORDS)
        if unknown:     # as Python says it
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument '{unknown[0]}'")
        if any(v not in (None, False, "", 0, [], ()) for v in scope.values()):
            from .containers import Scope
            self.scope = Scope(self.TOOL or self.OBJECT, self.SCOPE, **scope)

    # -- what a tool provides -------------------------------------------------
    def rodata(self) -> dict[str, Any]:
        return {}

    def map_sizes(self) -> dict[str, int] | None:
        return None

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        """Attach the chosen variant (override for uprobes, tc, cgroups...)."""
        for name in variant.programs:
            obj.attach(name)

    def setup(self) -> None:
        """After load and attach: map readers, etc."""

    # -- life cycle -----------------------------------------------------------
    def open(self):
        tool, rodata, map_sizes = self.TOOL or self.OBJECT, self.rodata(), self.map_sizes()
        scope = self.scope
        if scope is not None:
            rodata = {**rodata, **scope.rodata()}
        spec = None
        preloads = Tracer.preloads
        # a plain load: the CLI may have started it (cli/prefetch.py); not with pinned maps to reuse
        if preloads is not None and type(self).attach is Tracer.attach and not (scope is not None and scope.pinned):
            try:
                btf = objects.custom_btf()
            except PytraceError:
                pass                # no speculation; loader.load reports it, in its order of checks
            else:
                spec = preloads.specification(tool, self.OBJECT, self.VARIANTS, rodata, self.hook,
                                              map_sizes, btf)
                self.obj = preloads.take(spec, self.OBJECT, rodata, map_sizes)
        if self.obj is None:
            self.obj = loader.load(tool, self.OBJECT, self.VARIANTS, rodata=rodata, hook=self.hook,
                                   map_sizes=map_sizes, attach=self.attach, need_net_admin=self.NEED_NET_ADMIN,
                                   before_load=scope.before_load if scope is not None and scope.pinned else None)
            if spec is not None:
                preloads.remember(spec, self.obj)
        try:
            if scope is not None:
                scope.start(self.obj)
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.scope is not None:
            self.scope.stop()
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        # A stop that lands while a subclass releases (tc hooks, a namespace,
        # a tracefs mount) waits until all of it is released (core/stops).
        with releasing():
            self.close()

    @property
    def variant(self) -> Variant | None:
        return getattr(self.obj, "variant", None)

    @property
    def labeler(self) -> Any:
        """cgroup id -> core/containers.Labels, when labels were asked for; else None."""
        return self.scope.labeler if self.scope is not None else None

    def labelled_rows(self, rows: list) -> list:
        """Rows of a table whose key holds cgroup_id and netns (filter.h fills
        them with labels), each with its Labels when labels were asked for."""
        labeler = self.labeler
        if labeler is None:
            return rows
        return [r.labelled(labeler.labels(r.cgroup_id, r.netns)) for r in rows]


SCOPE_KEYWORDS = frozenset({"cgroup", "netns", "container", "cgroupmap", "mntnsmap", "labels"})
# A tool's SCOPE, by whose its events are (src/bpf/filter.h), plus LABELS where it streams events:
TASK_SCOPE = frozenset({"cgroup", "netns", "container", "cgroupmap", "mntnsmap"})    # a task's
SOCKET_SCOPE = frozenset({"cgroup", "netns", "container", "cgroupmap"})  # a socket's, in softirq too: no mount ns
LABELS = frozenset({"labels"})
