"""json.loads for pytrace's own small JSON files (the build manifest, the
layout caches, the feature cache), without importing the json package.

Every tool reads two of them at start-up, and json's decoder module imports
re (with enum, functools and collections: ~4 ms).  The parsing itself is
CPython's C scanner, _json, which json.loads drives too; a Python without it
gets json.loads.  Only reading: writers import json when they write.
"""

from __future__ import annotations


class _Options:
    # What the C scanner reads from json.decoder.JSONDecoder: its defaults.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float      # NaN, Infinity, -Infinity


try:
    from _json import make_scanner
    _scan = make_scanner(_Options())
except ImportError:
    _scan = None


def loads(text: str):
    """The value of a JSON document; ValueError if text is not one (the
    scanner's own errors are json.JSONDecodeError, also a ValueError)."""
    if _scan is None:
        import json
        return json.loads(text)
    body = text.strip()
    try:
        value, end = _scan(body, 0)
    except StopIteration:
        end = -1
    if end != len(body):
        raise ValueError("not a JSON document")
    return value
