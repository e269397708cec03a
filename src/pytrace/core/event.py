"""Base of the event and row classes that spec/gentypes.py generates from BTF.

A generated class (in pytrace/gen/<object>.py, written by build.py) is a
frozen slotted class: one slot per field, no __dict__, equal and hashable by
value, picklable, and cheap to import (no dataclasses: that import costs a
tool ~7 ms of start-up).  It provides what this base cannot know:

    FIELDS       the field names, in declaration order (then any C field the
                 declaration does not name, in C order)
    RAW_FIELDS   the raw record's names (core/btf.Layout.names: the C struct,
                 or a map's key then value) that from_raw() unpacks
    RAW_DEFAULTS a zero value per raw field (for records that lack one)
    KINDS        field -> the conversion it went through (core/convert.py)
    from_raw(raw)    a raw tuple in RAW_FIELDS order -> an instance
    to_dict()        field -> JSON value, in FIELDS order
    from_dict(d)     the inverse of to_dict() (values may be text: snapshot labels)

and this base adds the rest: repr, equality, pickling, immutability, and
decoder(fields) for raw tuples in another order (a recording made by an
older build, a projected ring: core/stream.EventTracer.decoder).
"""

from __future__ import annotations

from _operator import itemgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


class Event:
    # whose the event was (core/containers.Labels), set by the tracer that
    # decoded it when labels were asked for (Tracer(labels=True)); not a
    # field: equality, to_dict() and pickling leave it out
    __slots__ = ("_labels",)
    FIELDS: tuple[str, ...] = ()
    RAW_FIELDS: tuple[str, ...] = ()
    RAW_DEFAULTS: tuple = ()
    KINDS: dict[str, str] = {}

    @classmethod
    def from_raw(cls, raw: tuple) -> Event:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        raise NotImplementedError

    @classmethod
    def decoder(cls, fields: Sequence[str]) -> Callable[[tuple], Event]:
        """from_raw for raw tuples whose names are `fields`: RAW_FIELDS itself, or
        another order, subset or superset of them.  A raw field the tuples lack
        takes its zero value; one the class does not know is ignored."""
        fields = tuple(fields)
        if fields == cls.RAW_FIELDS:
            return cls.from_raw
        at = {name: i for i, name in enumerate(fields)}
        idx, missing = [], []
        for name, zero in zip(cls.RAW_FIELDS, cls.RAW_DEFAULTS):
            if name in at:
                idx.append(at[name])
            else:
                idx.append(len(fields) + len(missing))
                missing.append(zero)
        pick = itemgetter(*idx) if len(idx) > 1 else (lambda raw, i=idx[0]: (raw[i],))
        make, tail = cls.from_raw, tuple(missing)
        if tail:
            return lambda raw: make(pick(raw + tail))
        return lambda raw: make(pick(raw))

    @property
    def labels(self) -> Any:
        """core/containers.Labels of the event's cgroup and netns, or None."""
        try:
            return self._labels
        except AttributeError:
            return None

    def labelled(self, labels: Any) -> Event:
        """This event, with its labels (it is not a field: the event stays immutable)."""
        object.__setattr__(self, "_labels", labels)
        return self

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name}")

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.values() == other.values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple:
        # the default for slotted objects restores with setattr, which is refused
        return type(self), self.values()
