"""build.py's own logic, on temporary trees: which objects are stale (each
source's local #include closure against the object's mtime), and the
parallel compile's order of output and its errors.  Needs neither root, nor
a kernel, nor clang (a stand-in compiler is a shell script)."""

from __future__ import annotations

import importlib.util
import os
import random
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("pytrace_build_script", REPO / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

T0 = 1_700_000_000 * 10**9     # a fixed past, in ns: mtimes are set, never slept for


def write(path: Path, text: str, age: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    set_time(path, age)
    return path


def set_time(path: Path, t: int) -> None:
    os.utime(path, ns=(T0 + t * 10**9, T0 + t * 10**9))


@pytest.fixture
def tree(tmp_path):
    """src/{a,b,c}.bpf.c; a and b share common.h, which includes vmlinux.h
    from a second -I directory; b.h includes deep.h; c includes nothing.
    Every object is built (t=10) after every input (t=0)."""
    src, inc, out = tmp_path / "src", tmp_path / "inc", tmp_path / "out"
    write(inc / "vmlinux.h", "/* types */\n")
    write(src / "common.h", '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n')
    write(src / "deep.h", "#define DEEP 1\n")
    write(src / "b.h", '  #  include "deep.h"   /* indented, spaced: still an include */\n')
    write(src / "a.bpf.c", '#include "common.h"\n')
    write(src / "b.bpf.c", '#include "common.h"\n#include "b.h"\n')
    write(src / "c.bpf.c", "int x;\n// #include \"deep.h\" is a comment\n")
    sources = sorted(src.glob("*.bpf.c"))
    for s in sources:
        write(out / build.object_name(s), "obj", age=10)
    script = write(tmp_path / "build.py", "", age=0)
    return sources, out, [src, inc], script


def stale_names(tree) -> list[str]:
    sources, out, dirs, script = tree
    return [s.name for s in build.stale_sources(sources, out, dirs, [script])]


def test_nothing_is_stale_when_every_object_is_newer(tree):
    assert stale_names(tree) == []


def test_a_header_rebuilds_only_the_objects_that_include_it(tree):
    src = tree[2][0]
    set_time(src / "deep.h", 20)                      # through b.h: only b
    assert stale_names(tree) == ["b.bpf.c"]
    set_time(src / "deep.h", 0)
    set_time(src / "common.h", 20)                    # a and b, not c
    assert stale_names(tree) == ["a.bpf.c", "b.bpf.c"]


def test_a_header_from_another_include_directory_counts(tree):
    set_time(tree[2][1] / "vmlinux.h", 20)
    assert stale_names(tree) == ["a.bpf.c", "b.bpf.c"]


def test_the_source_the_script_and_a_missing_object(tree):
    sources, out, dirs, script = tree
    set_time(sources[2], 20)
    assert stale_names(tree) == ["c.bpf.c"]
    set_time(sources[2], 0)
    (out / "a.bpf.o").unlink()
    assert stale_names(tree) == ["a.bpf.c"]
    set_time(script, 20)                              # the compile flags may have changed
    assert stale_names(tree) == ["a.bpf.c", "b.bpf.c", "c.bpf.c"]


def test_a_missing_header_rebuilds_so_clang_reports_it(tree):
    (tree[2][0] / "deep.h").unlink()
    assert stale_names(tree) == ["b.bpf.c"]


def test_closures_follow_cycles_and_clangs_lookup_order(tmp_path):
    src, inc = tmp_path / "src", tmp_path / "inc"
    write(src / "x.h", '#include "y.h"\n')
    write(src / "y.h", '#include "x.h"\n#include "z.h"\n')
    write(src / "z.h", "/* ours */\n")
    write(inc / "z.h", "/* found second: the including file's directory comes first */\n")
    write(inc / "w.h", "")
    main = write(src / "m.bpf.c", '#include "x.h"\n#include "w.h"\n')
    assert build.include_closures([main], [src, inc]) == {main: {src / "x.h", src / "y.h", src / "z.h", inc / "w.h"}}


def test_the_projects_own_sources_resolve_every_include():
    """On the real tree: every header each source includes is found (no
    stand-in path), every object depends on vmlinux.h through pytrace.h."""
    arch = build._arch()[0]
    dirs = [build.SRC, REPO / "vmlinux" / arch]
    sources = sorted(build.SRC.glob("*.bpf.c"))
    closures = build.include_closures(sources, dirs)
    for src, headers in closures.items():
        assert all(h.is_file() for h in headers), (src.name, [h for h in headers if not h.is_file()])
        assert REPO / "vmlinux" / arch / "vmlinux.h" in headers, src.name
    assert build.SRC / "sockstate.h" in closures[build.SRC / "tcpstates.bpf.c"]
    assert build.SRC / "sockstate.h" not in closures[build.SRC / "tcprtt.bpf.c"]


# -- the parallel compile ---------------------------------------------------------

def test_output_follows_the_job_order_whatever_finishes_first(tmp_path, capsys):
    jobs = [(tmp_path / f"s{i}.bpf.c", tmp_path / f"s{i}.bpf.o") for i in range(8)]
    finished, done = [], []

    def compile_(src: Path, obj: Path) -> str:
        time.sleep(random.uniform(0, 0.05))
        obj.write_text("obj")
        finished.append(src.name)
        return f"{src.name}: warning: w\n" if src.name in ("s1.bpf.c", "s6.bpf.c") else ""

    random.seed(1)
    built = build.compile_all(jobs, compile_, workers=4, done=done.append)
    out, err = capsys.readouterr()
    assert built == done == [obj for _, obj in jobs]
    assert out.splitlines() == [f"  BPF  {src}" for src, _ in jobs]
    assert err == "s1.bpf.c: warning: w\ns6.bpf.c: warning: w\n"
    assert sorted(finished) == sorted(s.name for s, _ in jobs)


def test_every_failure_is_reported_with_clangs_message(tmp_path, capsys):
    jobs = [(tmp_path / f"s{i}.bpf.c", tmp_path / f"s{i}.bpf.o") for i in range(5)]
    done = []

    def compile_(src: Path, obj: Path) -> str:
        if src.name in ("s1.bpf.c", "s3.bpf.c"):
            raise build.CompileError(src, f"{src.name}:1:1: error: no\n")
        obj.write_text("obj")
        return ""

    with pytest.raises(build.BuildError) as info:
        build.compile_all(jobs, compile_, workers=2, quiet=True, done=done.append)
    assert str(info.value) == f"build.py: clang failed on {tmp_path}/s1.bpf.c, {tmp_path}/s3.bpf.c"
    out, err = capsys.readouterr()
    assert out == "" and err == "s1.bpf.c:1:1: error: no\ns3.bpf.c:1:1: error: no\n"
    assert done == [tmp_path / f"s{i}.bpf.o" for i in (0, 2, 4)]     # the others were still built


def fake_clang(tmp_path: Path, body: str) -> str:
    path = tmp_path / "clang"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_compile_one_keeps_clangs_message_and_leaves_no_file(tmp_path):
    src = write(tmp_path / "bad.bpf.c", "")
    obj = tmp_path / "bad.bpf.o"
    clang = fake_clang(tmp_path, 'for a; do case $prev in -o) touch "$a";; esac; prev=$a; done\n'
                                 'echo "bad.bpf.c:3:7: error: use of undeclared identifier" >&2\nexit 1\n')
    with pytest.raises(build.CompileError) as info:
        build.compile_one(src, obj, clang, None, ("x86", "__TARGET_ARCH_x86"))
    assert info.value.stderr == "bad.bpf.c:3:7: error: use of undeclared identifier\n"
    assert str(info.value) == f"build.py: clang failed on {src}"
    assert list(tmp_path.glob("bad.bpf.o*")) == []


def test_compile_one_returns_warnings_and_writes_the_object(tmp_path):
    src = write(tmp_path / "ok.bpf.c", "")
    obj = tmp_path / "ok.bpf.o"
    clang = fake_clang(tmp_path, 'for a; do case $prev in -o) echo built > "$a";; esac; prev=$a; done\n'
                                 'echo "ok.bpf.c:1:1: warning: w" >&2\n')
    assert build.compile_one(src, obj, clang, None, ("x86", "__TARGET_ARCH_x86")) == "ok.bpf.c:1:1: warning: w\n"
    assert obj.read_text() == "built\n" and list(tmp_path.glob("ok.bpf.o.*")) == []
