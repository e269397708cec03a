"""Named tuples for the start-up path, without collections.namedtuple.

The loader's and the BTF layouts' records are named tuples: immutable, cheap,
comparable.  collections.namedtuple would import collections (with operator,
keyword, reprlib) and compile each class's __new__ with exec: ~1.5 ms of a
tool's start-up, in the main thread while the speculative load runs beside it
(cli/prefetch), on a machine where the two take turns more than they share.
record() builds the same kind of class from a tuple subclass and properties.
"""

from __future__ import annotations

from _operator import itemgetter     # the C module itself: operator.py is the cost above

_MISSING = object()


def record(name: str, fields: str, defaults: tuple = (), doc: str | None = None) -> type:
    """A tuple subclass with a property per name in `fields` (space-separated),
    the last len(defaults) of them optional; made from positions or names."""
    names = tuple(fields.split())
    first_optional = len(names) - len(defaults)

    def __new__(cls, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{name}() takes {len(names)} arguments, {len(args)} given")
        values = list(args) + [_MISSING] * (len(names) - len(args))
        for key, value in kwargs.items():
            if key not in names or values[names.index(key)] is not _MISSING:
                raise TypeError(f"{name}() got an unexpected or repeated argument {key!r}")
            values[names.index(key)] = value
        for i, value in enumerate(values):
            if value is _MISSING:
                if i < first_optional:
                    raise TypeError(f"{name}() missing argument {names[i]!r}")
                values[i] = defaults[i - first_optional]
        return tuple.__new__(cls, values)

    def __repr__(self):
        return f"{name}({', '.join(f'{n}={v!r}' for n, v in zip(names, self))})"

    namespace = {"__slots__": (), "__new__": __new__, "__repr__": __repr__, "_fields": names,
                 "__getnewargs__": lambda self: tuple(self), "__doc__": doc}
    for i, field in enumerate(names):
        namespace[field] = property(itemgetter(i), doc=f"field {i}: {field}")
    return type(name, (tuple,), namespace)
