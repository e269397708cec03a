"""core/rows: the compiled per-record comprehension and its code cache."""

from __future__ import annotations

import builtins
import os
import sys

import pytest

from pytrace.core import cachefile, rows

FIELDS = ("pid", "comm", "lambda")        # "lambda" is a keyword: the comprehension names it lambda_
EXPR = "fmt % (pid, comm, lambda_)"
BATCH = [(1, "a", 7), (22, "bb", 8)]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cachefile, "DIR", str(tmp_path))
    return tmp_path


def compiles(monkeypatch) -> list[str]:
    """Sources that compile() is asked for from now on."""
    seen: list[str] = []
    real = builtins.compile

    def counting(src, *a, **kw):
        seen.append(src)
        return real(src, *a, **kw)
    monkeypatch.setattr(builtins, "compile", counting)
    return seen


def test_rows_format_every_record_and_the_code_is_compiled_once(cache_dir, monkeypatch):
    seen = compiles(monkeypatch)
    first = rows.compile_rows(FIELDS, EXPR, {"fmt": "%d %s %d"})
    assert first(BATCH) == ["1 a 7", "22 bb 8"]
    assert len(seen) == 1
    cache = cache_dir / f"rows-{sys.implementation.cache_tag}.marshal"
    assert oct(os.stat(cache).st_mode & 0o777) == oct(0o600)

    again = rows.compile_rows(FIELDS, EXPR, {"fmt": "%d|%s|%d"})   # as the next run would
    assert again(BATCH) == ["1|a|7", "22|bb|8"]
    assert len(seen) == 1                                             # from the cache


def test_a_cache_others_can_write_is_not_trusted(cache_dir, monkeypatch):
    rows.compile_rows(FIELDS, EXPR, {"fmt": "%d %s %d"})
    cache = cache_dir / f"rows-{sys.implementation.cache_tag}.marshal"
    os.chmod(cache, 0o666)
    seen = compiles(monkeypatch)
    assert rows.compile_rows(FIELDS, EXPR, {"fmt": "%d %s %d"})(BATCH) == ["1 a 7", "22 bb 8"]
    assert len(seen) == 1
