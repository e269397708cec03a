#!/usr/bin/env python3
"""Compile the kernel half of every tool: src/bpf/*.bpf.c -> src/pytrace/bpf/*.bpf.o
(and the tests' own programs: tests/bpf/*.bpf.c -> tests/bpf/*.bpf.o)

    python3 build.py            # build what changed
    python3 build.py -j 4       # at most 4 compilers at a time (default: one per CPU)
    python3 build.py --force    # rebuild everything
    python3 build.py --clean    # remove the built objects
    python3 build.py --bundle   # also copy libbpf into the package (setup.py does)

Each object is built with clang as a CO-RE object (-target bpf -g -O2,
against vmlinux/<arch>/vmlinux.h), stripped of DWARF but not of BTF.  The C
sources and local headers are copied next to the objects so that `--ebpf`
can print what an object was built from, and the BTF-derived record layouts
are cached beside each object (core/btf.py), so a tool's start needs neither
clang nor an ELF parse.  Only this script needs clang; nothing at run time
does.

The tests' own BPF programs (tests/bpf/: scaffolding such as a tc program
that drops chosen segments, not tools) are built with the same flags and
headers into tests/bpf/, beside their sources: outside the package, so no
wheel carries them or their sources, and not in the manifest.  A tree
without tests/bpf (an sdist) builds only the tools.

src/pytrace/bpf/manifest.json records the package version and architecture
the objects were built for; core/objects.py refuses objects that do not match
(one clear line instead of a libbpf or verifier error).  For a wheel,
bundle_libs() copies this machine's libbpf.so.1 (and libelf.so.1, which a
minimal host may lack) into src/pytrace/lib/: hosts without a usable libbpf
load that copy (core/libbpf.py).

An object is rebuilt when it is older than its source, than a header the
source includes (its quoted #includes, followed transitively: the project's
headers and vmlinux.h), or than this script; the stale ones compile in
parallel.  On a compile error clang's own message is printed (each failed
source's, in source order, whichever finished first) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import lzma
import os
import re
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src" / "bpf"
OUT = ROOT / "src" / "pytrace" / "bpf"
LIB = ROOT / "src" / "pytrace" / "lib"
NATIVE_SRC = ROOT / "src" / "native"                  # user-space C (core/rowfmt.py's formatter)
NATIVE_OUT = ROOT / "src" / "pytrace" / "native"
MANIFEST = OUT / "manifest.json"
TESTS = ROOT / "tests" / "bpf"   # the tests' programs: built beside their sources, never packaged
MANIFEST_FORMAT = 1
ARCHES = {"x86_64": ("x86", "__TARGET_ARCH_x86")}


class BuildError(Exception):
    pass


def _arch() -> tuple[str, str]:
    machine = platform.machine()
    if machine not in ARCHES:
        raise BuildError(f"build.py: unsupported architecture {machine} (have: {', '.join(ARCHES)})")
    return ARCHES[machine]


def _tool(names: list[str], env: str) -> str:
    override = os.environ.get(env)
    if override:
        return override
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BuildError(f"build.py: {names[0]} not found; install it (apt-get install clang llvm) or set {env}")


def _headers() -> list[Path]:
    return sorted(SRC.glob("*.h"))


def _stale(obj: Path, deps: list[Path]) -> bool:
    """obj is missing, or older than one of deps; a dep that is missing counts
    as newer (a header deleted but still included: clang must say so)."""
    try:
        built = obj.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    for dep in deps:
        try:
            if dep.stat().st_mtime_ns > built:
                return True
        except FileNotFoundError:
            return True
    return False


# a quoted #include: one of the project's headers (system ones use <...>)
_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.M)


def include_closures(sources: list[Path], dirs: list[Path]) -> dict[Path, set[Path]]:
    """Each source's local headers: every quoted #include, followed
    transitively, resolved as clang does (the including file's directory,
    then the -I dirs).  A name found nowhere stays in as a path that does not
    exist, so _stale() rebuilds and clang reports it.  Each file is read once
    however many sources share it (vmlinux.h is megabytes)."""
    direct: dict[Path, list[Path]] = {}

    def includes(path: Path) -> list[Path]:
        if path not in direct:
            try:
                names = [n.decode() for n in _INCLUDE.findall(path.read_bytes())]
            except OSError:
                names = []
            direct[path] = [next((d / n for d in (path.parent, *dirs) if (d / n).is_file()), path.parent / n)
                            for n in names]
        return direct[path]

    closures = {}
    for src in sources:
        seen: set[Path] = set()
        todo = [src]
        while todo:
            for header in includes(todo.pop()):
                if header not in seen:
                    seen.add(header)
                    todo.append(header)
        closures[src] = seen
    return closures


def stale_sources(sources: list[Path], out: Path, dirs: list[Path], always: list[Path]) -> list[Path]:
    """The sources whose object in out is missing or older than the source,
    a header it includes, or one of always (this script: the compile flags)."""
    closures = include_closures(sources, dirs)
    return [s for s in sources if _stale(out / object_name(s), [s, *sorted(closures[s]), *always])]


def object_name(src: Path) -> str:
    return src.name[: -len(".c")] + ".o"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


class CompileError(BuildError):
    def __init__(self, src: Path, stderr: str):
        super().__init__(f"build.py: clang failed on {_shown(src)}")
        self.src, self.stderr = src, stderr


def compile_one(src: Path, obj: Path, clang: str, strip: str | None, arch: tuple[str, str]) -> str:
    """Compile src into obj; returns clang's warnings, raises CompileError with its errors."""
    tmp = obj.with_name(f"{obj.name}.{os.getpid()}.tmp")  # unique: parallel builds
    vmlinux_dir = ROOT / "vmlinux" / arch[0]
    cmd = [
        clang, "-target", "bpf", "-g", "-O2", "-Wall", "-Wno-unused-function",
        f"-D{arch[1]}", "-I", str(SRC), "-I", str(vmlinux_dir),
        "-c", str(src), "-o", str(tmp),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CompileError(src, proc.stderr)
    if strip:
        # -g keeps .BTF/.BTF.ext (needed for CO-RE) and drops only DWARF.
        stripped = subprocess.run([strip, "-g", str(tmp)], capture_output=True, text=True)
        if stripped.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise CompileError(src, stripped.stderr)
    os.replace(tmp, obj)
    return proc.stderr


def compile_all(jobs: list[tuple[Path, Path]], compile_: Callable[[Path, Path], str], workers: int,
                quiet: bool = False, done: Callable[[Path], None] | None = None) -> list[Path]:
    """Compile each (source, object) of jobs, up to workers at a time.

    What is printed does not depend on which compiler finishes first: each
    source's line, its warnings, then done(object), in the order of jobs.
    After a failure the other jobs still finish (their objects are good);
    then clang's messages have been printed and BuildError names every
    source that failed.
    """
    if not jobs:
        return []
    built: list[Path] = []
    failed: list[Path] = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))))  # threads: each waits for its clang
    futures = [pool.submit(compile_, src, obj) for src, obj in jobs]
    try:
        for (src, obj), future in zip(jobs, futures):
            if not quiet:
                print(f"  BPF  {_shown(src)}", flush=True)
            try:
                warnings = future.result()
            except CompileError as exc:
                sys.stderr.write(exc.stderr)
                sys.stderr.flush()
                failed.append(src)
                continue
            if warnings:
                sys.stderr.write(warnings)
                sys.stderr.flush()
            built.append(obj)
            if done is not None:
                done(obj)
    finally:
        pool.shutdown(cancel_futures=True)  # after Ctrl-C or a failed done(): start no other clang
    if failed:
        raise BuildError(f"build.py: clang failed on {', '.join(_shown(s) for s in failed)}")
    return built


def write_layouts(obj: Path) -> None:
    """Cache the object's BTF-derived layouts next to it (see core/btf.py)."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from pytrace.core import btf  # noqa: E402  (needs pyelftools, a build dependency)

    btf.write_cache(obj)


def copy_sources() -> None:
    dest = OUT / "src"
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in SRC.glob("*.bpf.c")} | {p.name for p in _headers()}
    for name in wanted:
        shutil.copy2(SRC / name, dest / name)
    for stale in dest.iterdir():
        if stale.name not in wanted:
            stale.unlink()


def package_version() -> str:
    text = (ROOT / "src" / "pytrace" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not found:
        raise BuildError("build.py: no __version__ in src/pytrace/__init__.py")
    return found.group(1)


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic, and only on change: parallel builds share the output directory."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(core_roots: bool = False) -> None:
    """What the objects in OUT were built for; checked at load by core/objects.py.
    With core_roots (once every object is built): the root types of all their
    CO-RE relocations, from which core/corebtf cuts the kernel's BTF down."""
    info = {
        "format": MANIFEST_FORMAT,
        "package": "pytrace",
        "version": package_version(),
        "arch": platform.machine(),
        "objects": sorted(p.name for p in OUT.glob("*.bpf.o")),
    }
    if core_roots:
        from pytrace.core import btf  # noqa: E402  (write_layouts put src/ on the path)
        roots = {tuple(r) for p in OUT.glob("*.bpf.o") for r in btf.ObjectTypes(p).core["roots"]}
        info["core_roots"] = [list(r) for r in sorted(roots)]
    _write_if_changed(MANIFEST, json.dumps(info, indent=1, sort_keys=True) + "\n")


def _debian_package(real: Path) -> tuple[str, str] | None:
    """(package, version) owning a file, if this is a dpkg system."""
    try:
        owner = subprocess.run(["dpkg-query", "-S", str(real)], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg-query", "-S", str(Path("/lib") / real.relative_to("/usr/lib"))],
                                   capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0].strip()
        ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    except (OSError, ValueError):
        return None
    return (pkg, ver.stdout.strip()) if pkg and ver.returncode == 0 else None


def bundle_libs() -> list[Path]:
    """Copy this machine's libbpf.so.1 and BUNDLED_DEPS into src/pytrace/lib/ for the wheel.

    The real files (not the symlinks) are copied under their sonames, with
    their Debian copyright files (they are LGPL/BSD-licensed and we redistribute
    them); lib/bundled.json says where each came from, for `pytrace doctor`.
    """
    sys.path.insert(0, str(ROOT / "src"))
    from pytrace.core import libbpf  # noqa: E402  (loaded_file, MIN_VERSION, BUNDLED_DEPS)

    LIB.mkdir(parents=True, exist_ok=True)
    info = {}
    for soname in ("libbpf.so.1", *libbpf.BUNDLED_DEPS):
        try:
            handle = ctypes.CDLL(soname)
        except OSError as exc:
            raise BuildError(f"build.py: cannot bundle {soname} ({exc}): install it on the build machine "
                             "(apt-get install libbpf1)") from None
        if soname == "libbpf.so.1":
            have = (handle.libbpf_major_version(), handle.libbpf_minor_version())
            if have < libbpf.MIN_VERSION:
                raise BuildError(f"build.py: the build machine's libbpf is {have[0]}.{have[1]}; "
                                 f"the wheel needs {libbpf.MIN_VERSION[0]}.{libbpf.MIN_VERSION[1]} or newer")
        real = Path(libbpf.loaded_file(handle))
        dest = LIB / soname
        if not dest.exists() or dest.read_bytes() != real.read_bytes():
            tmp = dest.with_name(f"{soname}.{os.getpid()}.tmp")
            shutil.copyfile(real, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        entry = {"from": str(real)}
        deb = _debian_package(real)
        if deb:
            entry["package"] = f"{deb[0]} {deb[1]}"
            copyright_ = Path("/usr/share/doc") / deb[0] / "copyright"
            if copyright_.exists():
                shutil.copyfile(copyright_, LIB / f"{soname}.copyright")
        info[soname] = entry
    for stale in LIB.iterdir():
        if stale.name.split(".copyright")[0] not in info and stale.name != "bundled.json":
            stale.unlink()
    _write_if_changed(LIB / "bundled.json", json.dumps(info, indent=1, sort_keys=True) + "\n")
    return [LIB / name for name in info]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def build(force: bool = False, quiet: bool = False, workers: int | None = None) -> list[Path]:
    arch = _arch()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "__init__.py").touch()
    sources = sorted(SRC.glob("*.bpf.c"))
    if not sources:
        raise BuildError(f"build.py: no *.bpf.c under {SRC}")
    tests = sorted(TESTS.glob("*.bpf.c"))
    dirs = [SRC, ROOT / "vmlinux" / arch[0]]    # compile_one's -I
    todo: list[tuple[Path, Path]] = []
    for out, srcs in ((OUT, sources), (TESTS, tests)):
        stale = srcs if force else stale_sources(srcs, out, dirs, [Path(__file__).resolve()])
        todo += [(s, out / object_name(s)) for s in stale]
    built: list[Path] = []
    if todo:
        clang = _tool(["clang", "clang-14"], "CLANG")
        try:
            strip: str | None = _tool(["llvm-strip", "llvm-strip-14"], "LLVM_STRIP")
        except BuildError:
            strip = None

        def done(obj: Path) -> None:
            write_layouts(obj)
            if obj.parent == OUT:
                write_manifest()  # at once: a parallel user of this checkout may load the new object

        built = compile_all(todo, lambda src, obj: compile_one(src, obj, clang, strip, arch),
                            workers or _cpus(), quiet, done)
    for out, srcs in ((OUT, sources), (TESTS, tests)):
        known = {object_name(s) for s in srcs}
        for obj in out.glob("*.bpf.o"):
            if obj.name not in known:
                obj.unlink()
                Path(str(obj) + ".layout.json").unlink(missing_ok=True)
    copy_sources()
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    write_manifest(core_roots=True)
    # the tools' event classes, from the objects' BTF (src/pytrace/gen/, spec/gentypes.py)
    sys.path.insert(0, str(ROOT / "src"))
    from pytrace.spec import gentypes  # noqa: E402  (imports the tools for their declarations)
    try:
        gentypes.write_package(OUT)
    except gentypes.GenError as exc:
        raise BuildError(f"build.py: {exc}") from None
    ship_btfs(sorted(OUT.glob("*.bpf.o")), arch[0])   # the package's objects: the tests' are elsewhere
    built += build_native(force, quiet)
    return built


def build_native(force: bool = False, quiet: bool = False) -> list[Path]:
    """src/native/<name>.c -> src/pytrace/native/lib<name>.so: user-space C that
    the package loads with ctypes (the text formatter, core/rowfmt.py), built
    for this machine like the bundled libbpf.  Its only dependency is libc."""
    NATIVE_OUT.mkdir(parents=True, exist_ok=True)
    built = []
    sources = sorted(NATIVE_SRC.glob("*.c"))
    for src in sources:
        lib = NATIVE_OUT / f"lib{src.stem}.so"
        if not force and not _stale(lib, [src, Path(__file__).resolve()]):
            continue
        clang = _tool(["clang", "clang-14"], "CLANG")
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        cmd = [clang, "-O2", "-g0", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-fPIC", "-shared",
               "-fvisibility=hidden", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong",
               "-Wl,-z,relro,-z,now,-z,noexecstack", "-o", str(tmp), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise BuildError(f"build.py: {src.relative_to(ROOT)}:\n{proc.stderr.rstrip()}")
        os.replace(tmp, lib)
        if not quiet:
            print(f"  CC   {src.relative_to(ROOT)}", flush=True)
        built.append(lib)
    known = {f"lib{s.stem}.so" for s in sources}
    for stale in NATIVE_OUT.glob("*.so"):
        if stale.name not in known:
            stale.unlink()
    return built


def ship_btfs(objects: list[Path], arch: str) -> None:
    """src/pytrace/btf/<release>.btf for each kernel of vmlinux/<arch>/btf/ (the
    lab's Debian kernels, scripts/kernel_lab.py btf): only the types the
    objects' CO-RE relocations need (bpftool gen min_core_btf), a few KiB
    each, for hosts of those kernels that lack /sys/kernel/btf/vmlinux."""
    dest = ROOT / "src" / "pytrace" / "btf"
    dest.mkdir(parents=True, exist_ok=True)
    wanted = set()
    packed = sorted((ROOT / "vmlinux" / arch / "btf").glob("*.btf.xz"))
    for xz in packed:
        release = xz.name[: -len(".btf.xz")]
        out = dest / f"{release}.btf"
        wanted.add(out.name)
        if not _stale(out, [xz, *objects]):
            continue
        bpftool = _tool(["bpftool"], "BPFTOOL")
        with tempfile.TemporaryDirectory() as tmp:
            full = Path(tmp) / "vmlinux.btf"
            with open(full, "wb") as fh:
                fh.write(lzma.decompress(xz.read_bytes()))
            tmp_out = Path(tmp) / out.name
            proc = subprocess.run([bpftool, "gen", "min_core_btf", str(full), str(tmp_out), *map(str, objects)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BuildError(f"build.py: bpftool gen min_core_btf for {release} failed: {proc.stderr.strip()}")
            shutil.copyfile(tmp_out, out)
    for stale in dest.glob("*.btf"):
        if stale.name not in wanted:
            stale.unlink()


def clean() -> None:
    for p in [*OUT.glob("*.bpf.o*"), *TESTS.glob("*.bpf.o*")]:
        p.unlink()
    MANIFEST.unlink(missing_ok=True)
    shutil.rmtree(OUT / "src", ignore_errors=True)
    shutil.rmtree(LIB, ignore_errors=True)
    shutil.rmtree(NATIVE_OUT, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compile src/bpf/*.bpf.c into src/pytrace/bpf/*.bpf.o "
                                             "(and tests/bpf/*.bpf.c beside their sources)")
    ap.add_argument("--force", action="store_true", help="rebuild every object")
    ap.add_argument("--clean", action="store_true", help="remove built objects")
    ap.add_argument("--bundle", action="store_true",
                    help="also copy this machine's libbpf.so.1 (+ libelf) into the package, as for a wheel")
    ap.add_argument("-j", "--jobs", type=int, metavar="N", help="compile N objects at a time (default: one per CPU)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.clean:
            clean()
        else:
            build(force=args.force, quiet=args.quiet, workers=args.jobs)
            if args.bundle:
                bundle_libs()
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
