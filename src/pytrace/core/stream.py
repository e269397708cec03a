"""Base of every event-streaming tool's library object.

A subclass names its object and hook variants, turns its options into
rodata, and declares its record type (spec/eventtype.EventType: renames and
conversions; build.py generates the class from the object's BTF):

    class TcpStates(EventTracer):
        OBJECT = "tcpstates"
        EVENT_TYPE = TCPSTATES_EVENT          # its struct is the ring's record
        VARIANTS = (Variant("tp_btf", ("tcpstates_tp_btf",)), ...)
        def rodata(self): ...

    with TcpStates(lports=[80]) as t:
        for ev in t.events(duration=5):
            print(ev.newstate)

Two ways out: events() yields the generated, frozen event objects; batches()
yields lists of raw tuples (field order: `raw_fields`, index by name: `idx`)
for callers that format in bulk, like the CLI, which turn them into events
with decoder() when they need to.  `lost` counts records the kernel could
not queue because the ring (and its spare, see core/ringbuf.py) was full.

(A tool not yet converted names its struct in EVENT and writes make_event(raw)
itself; decoder() is then its make_event.)
"""

from __future__ import annotations

import time

from .ringbuf import DEFAULT_INTERVAL_MS, MAX_BATCH_BYTES, RawBatch, RingBuffer
from .tracer import Tracer

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    from collections.abc import Callable, Iterator     # collections.abc imports collections: ~1 ms
    from typing import Any, ClassVar


class EventTracer(Tracer):
    EVENT: ClassVar[str]                # the C struct of a ring record
    EVENT_TYPE: ClassVar[Any] = None    # its spec.EventType, for a converted tool

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        declared = cls.__dict__.get("EVENT_TYPE")
        if declared is not None:
            declared.bind(cls.OBJECT)
            if "EVENT" not in cls.__dict__:
                cls.EVENT = declared.struct

    def __init__(self, *, hook: str | None = None, interval_ms: int = DEFAULT_INTERVAL_MS,
                 ring_bytes: int | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.interval_ms = interval_ms
        self.ring_bytes = ring_bytes
        self.ring: RingBuffer | None = None
        self.raw_fields: tuple[str, ...] = ()
        self.idx: dict[str, int] = {}
        self.keep_fields: frozenset[str] = frozenset()   # decoded whatever project() is told
        self._lost = None
        self._decoding: tuple | None = None

    def decoder(self) -> Callable[[tuple], Any]:
        """raw tuple -> event, for the records as they are now (raw_fields:
        projected, or a recording's, which replay sets).  Made once per
        field order: get it once per batch, not per record."""
        if self.EVENT_TYPE is None:
            return self.make_event
        fields = self.raw_fields
        known = getattr(self, "_decoding", None)      # replay may make us without __init__
        if known is None or known[0] is not fields:
            known = self._decoding = (fields, self._labelling(fields, self.EVENT_TYPE.cls.decoder(fields)))
        return known[1]

    def _labelling(self, fields: tuple[str, ...], decode: Callable[[tuple], Any]) -> Callable[[tuple], Any]:
        """decode, or, with labels asked for, decode and label each event from
        its raw cgroup_id and netns (filter.h fills them only then)."""
        labeler = self.labeler if getattr(self, "scope", None) is not None else None
        if labeler is None or "cgroup_id" not in fields:
            return decode
        i_cg = fields.index("cgroup_id")
        i_ns = fields.index("netns") if "netns" in fields else None

        def decode_labelled(raw: tuple) -> Any:
            return decode(raw).labelled(labeler.labels(raw[i_cg], raw[i_ns] if i_ns is not None else 0))
        return decode_labelled

    def make_event(self, raw: tuple) -> Any:
        """One raw tuple -> its event (the generated class of EVENT_TYPE)."""
        return self.decoder()(raw)

    def map_sizes(self) -> dict[str, int] | None:
        return {"events": self.ring_bytes} if self.ring_bytes else None

    def setup(self) -> None:
        self.layout = self.obj.types.struct(self.EVENT)
        events, spare = self.obj.map("events"), self.obj.map("events_spare")
        self.ring = RingBuffer(events.fd, events.max_entries, self.layout.format, self.interval_ms,
                               spare=(spare.fd, spare.max_entries))
        self._set_fields(self.layout.names)
        self._lost = self.obj.global_u64("lost_events")

    def _set_fields(self, names: tuple[str, ...]) -> None:
        self.raw_fields = names
        self.idx = {n: i for i, n in enumerate(names)}

    # Sinks (--record, --influx) and `pytrace replay` need whole records: they
    # turn projection off for the process, and project() then keeps every field.
    projection_allowed: ClassVar[bool] = True

    def project(self, fields: set[str]) -> None:
        """Decode only these fields from now on (a text renderer that needs few
        fields pays for no others).  make_event() needs every field: library
        users do not project."""
        if not EventTracer.projection_allowed:
            return
        fmt, names = self.layout.projection(set(fields) | (self.keep_fields & set(self.layout.names)))
        self.ring.set_format(fmt)
        self._set_fields(names)

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self._lost = None
        super().close()

    @property
    def lost(self) -> int:
        """Records the kernel dropped because the ring was full (since open)."""
        return self._lost.value if self._lost is not None else 0

    # -- reading ----------------------------------------------------------------
    def batches(self, duration: float | None = None) -> Iterator[list[tuple]]:
        """Raw record tuples, a batch per drain, until duration seconds pass (or forever).

        Empty batches are yielded on idle ticks so callers can do periodic work.
        """
        return ring_batches(self.ring, duration)

    def drain(self) -> list[tuple]:
        """Whatever is queued now, without waiting (e.g. after Ctrl-C)."""
        return ring_drain(self.ring)

    def owner(self, raw: tuple, netns: bool = True) -> tuple:
        """The end of an event made by make_event(): (cgroup_id, netns, labels),
        or (cgroup_id, labels) for an event that has its own netns.  The ids
        are the kernel's (0 unless labels, or a filter that reads them, are
        on; filter.h); labels is a core/containers.Labels, or None."""
        i = self.idx
        at, ns_at = i.get("cgroup_id"), i.get("netns")
        cgid = raw[at] if at is not None else 0
        ns = raw[ns_at] if ns_at is not None else 0
        labeler = self.labeler
        labels = labeler.labels(cgid, ns) if labeler is not None else None
        return (cgid, ns, labels) if netns else (cgid, labels)

    def events(self, duration: float | None = None) -> Iterator[Any]:
        for batch in self.batches(duration):
            make = self.decoder()
            for raw in batch:
                yield make(raw)


# The reading loop itself, for every owner of a RingBuffer: EventTracer, and
# vnet's tracer, whose one ring is shared by the objects of many points.

def ring_batches(ring: RingBuffer, duration: float | None = None) -> Iterator[list[tuple]]:
    """EventTracer.batches() of this ring."""
    deadline = None if duration is None else time.monotonic() + duration
    while True:
        batch = ring.drain()
        yield batch
        if deadline is not None and time.monotonic() >= deadline:
            final = ring_drain(ring)  # what arrived up to the deadline
            if final:
                yield final
            return
        if len(batch) * ring.stride <= MAX_BATCH_BYTES // 2:   # caught up: sleep
            timeout = None
            if deadline is not None:
                timeout = max(0.0, min(ring.interval, deadline - time.monotonic()))
            ring.wait(timeout)


def ring_drain(ring: RingBuffer) -> list[tuple] | RawBatch:
    """EventTracer.drain() of this ring: what is queued now, at most one
    ring's worth.  Bounded, because it is what a stop runs last: under a
    storm that never pauses, draining until the ring is empty could go on
    for ever, and a stopping CLI absorbs further stops (core/stops)."""
    batches = []
    budget = ring.size
    while budget > 0:
        batch = ring.drain()
        if not batch:
            break
        batches.append(batch)
        budget -= len(batch) * ring.stride
    if len(batches) == 1:
        return batches[0]               # as drained: a raw ring's batch stays raw (core/rowfmt)
    out: list[tuple] = []
    for batch in batches:
        out.extend(batch)
    return out


def event_class(namespace: dict, name: str, body: type, imports: tuple[str, ...] = ()) -> type:
    """The frozen slotted dataclass `name` with the fields and methods of the
    plain class `body`, made on first use and kept in namespace (the tool
    module's globals), so it is made once.

    For the tools whose command line is timed from start to first line
    (tcpstates, tcplife): dataclasses imports inspect, and with it ast, dis
    and tokenize, ~7 ms of start-up that the text output, which formats raw
    records, never needs.  Such a module writes its event as a plain class
    and a PEP 562 __getattr__ that calls this for the public name; its
    make_event() calls it too.  imports: modules ("ipaddress") and names
    ("pytrace.core.net:TcpState") that the field annotations use, bound in
    namespace now, so that typing.get_type_hints() resolves them there.
    """
    cls = namespace.get(name)
    if cls is not None:
        return cls
    import importlib
    from dataclasses import dataclass

    for module in imports:
        module, _, attr = module.partition(":")
        if attr:
            namespace[attr] = getattr(importlib.import_module(module), attr)
        else:
            namespace[module] = importlib.import_module(module)
    attrs = {k: v for k, v in vars(body).items() if k not in ("__dict__", "__weakref__")}
    attrs["__qualname__"] = name
    prefix = body.__qualname__ + "."
    for value in attrs.values():     # methods: TcpStateChange.to_dict, not _TcpStateChange.to_dict
        qualname = getattr(value, "__qualname__", None)
        if isinstance(qualname, str) and qualname.startswith(prefix):
            value.__qualname__ = name + "." + qualname[len(prefix):]
    cls = dataclass(frozen=True, slots=True)(type(name, body.__bases__, attrs))
    return namespace.setdefault(name, cls)     # two threads at once: both get the first one


def lazy_event(namespace: dict, name: str, body: type, imports: tuple[str, ...] = ()):
    """(make, module __getattr__) for a tool module whose event dataclass is
    made on first use by event_class(): make() returns the class, and the
    PEP 562 __getattr__ serves `from <tool> import <name>` (and pytrace.<name>)."""
    def make() -> type:
        return event_class(namespace, name, body, imports)

    def module_getattr(attr: str) -> type:
        if attr == name:
            return make()
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attr!r}")
    return make, module_getattr
