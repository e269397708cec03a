#!/usr/bin/env python3
"""Compile the kernel half of every tool: src/bpf/*.bpf.c -> src/pytrace/bpf/*.bpf.o

    python3 build.py            # build what changed
    python3 build.py --force    # rebuild everything
    python3 build.py --clean    # remove the built objects

Each object is built with clang as a CO-RE object (-target bpf -g -O2,
against vmlinux/<arch>/vmlinux.h), stripped of DWARF but not of BTF.  The C
sources and local headers are copied next to the objects so that `--ebpf`
can print what an object was built from, and the BTF-derived record layouts
are cached beside each object (core/btf.py), so a tool's start needs neither
clang nor an ELF parse.  Only this script needs clang; nothing at run time
does.

On a compile error clang's own message is printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src" / "bpf"
OUT = ROOT / "src" / "pytrace" / "bpf"
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
    if not obj.exists():
        return True
    built = obj.stat().st_mtime
    return any(d.stat().st_mtime > built for d in deps)


def compile_one(src: Path, clang: str, strip: str | None, arch: tuple[str, str]) -> Path:
    obj = OUT / (src.name[: -len(".c")] + ".o")
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
        sys.stderr.write(proc.stderr)
        raise BuildError(f"build.py: clang failed on {src.relative_to(ROOT)}")
    if proc.stderr:
        sys.stderr.write(proc.stderr)
    if strip:
        # -g keeps .BTF/.BTF.ext (needed for CO-RE) and drops only DWARF.
        subprocess.run([strip, "-g", str(tmp)], check=True)
    os.replace(tmp, obj)
    return obj


def write_layouts(obj: Path) -> None:
    """Cache the object's BTF-derived layouts next to it (see core/btf.py)."""
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


def build(force: bool = False, quiet: bool = False) -> list[Path]:
    arch = _arch()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "__init__.py").touch()
    sources = sorted(SRC.glob("*.bpf.c"))
    if not sources:
        raise BuildError(f"build.py: no *.bpf.c under {SRC}")
    common = _headers() + [ROOT / "vmlinux" / arch[0] / "vmlinux.h", Path(__file__).resolve()]
    todo = [s for s in sources if force or _stale(OUT / (s.name[:-2] + ".o"), [s, *common])]
    built: list[Path] = []
    if todo:
        clang = _tool(["clang", "clang-14"], "CLANG")
        try:
            strip: str | None = _tool(["llvm-strip", "llvm-strip-14"], "LLVM_STRIP")
        except BuildError:
            strip = None
        for src in todo:
            if not quiet:
                print(f"  BPF  {src.relative_to(ROOT)}", flush=True)
            obj = compile_one(src, clang, strip, arch)
            write_layouts(obj)
            built.append(obj)
    known = {s.name[:-2] + ".o" for s in sources}
    for obj in OUT.glob("*.bpf.o"):
        if obj.name not in known:
            obj.unlink()
            Path(str(obj) + ".layout.json").unlink(missing_ok=True)
    copy_sources()
    return built


def clean() -> None:
    for p in OUT.glob("*.bpf.o*"):
        p.unlink()
    shutil.rmtree(OUT / "src", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compile src/bpf/*.bpf.c into src/pytrace/bpf/*.bpf.o")
    ap.add_argument("--force", action="store_true", help="rebuild every object")
    ap.add_argument("--clean", action="store_true", help="remove built objects")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.clean:
            clean()
        else:
            build(force=args.force, quiet=args.quiet)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
