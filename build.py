#!/usr/bin/env python3
"""Compile the kernel half of every tool: src/bpf/*.bpf.c -> src/pytrace/bpf/*.bpf.o

    python3 build.py            # build what changed
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

src/pytrace/bpf/manifest.json records the package version and architecture
the objects were built for; core/objects.py refuses objects that do not match
(one clear line instead of a libbpf or verifier error).  For a wheel,
bundle_libs() copies this machine's libbpf.so.1 (and libelf.so.1, which a
minimal host may lack) into src/pytrace/lib/: hosts without a usable libbpf
load that copy (core/libbpf.py).

On a compile error clang's own message is printed and the exit status is 1.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src" / "bpf"
OUT = ROOT / "src" / "pytrace" / "bpf"
LIB = ROOT / "src" / "pytrace" / "lib"
MANIFEST = OUT / "manifest.json"
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


def write_manifest() -> None:
    """What the objects in OUT were built for; checked at load by core/objects.py."""
    info = {
        "format": MANIFEST_FORMAT,
        "package": "pytrace",
        "version": package_version(),
        "arch": platform.machine(),
        "objects": sorted(p.name for p in OUT.glob("*.bpf.o")),
    }
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
            write_manifest()  # at once: a parallel user of this checkout may load the new object
    known = {s.name[:-2] + ".o" for s in sources}
    for obj in OUT.glob("*.bpf.o"):
        if obj.name not in known:
            obj.unlink()
            Path(str(obj) + ".layout.json").unlink(missing_ok=True)
    copy_sources()
    write_manifest()
    # the tools' event classes, from the objects' BTF (src/pytrace/gen/, core/gentypes.py)
    sys.path.insert(0, str(ROOT / "src"))
    from pytrace.core import gentypes  # noqa: E402  (imports the tools for their declarations)
    try:
        gentypes.write_package(OUT)
    except gentypes.GenError as exc:
        raise BuildError(f"build.py: {exc}") from None
    # every object but the tests' own scaffolding
    ship_btfs(sorted(p for p in OUT.glob("*.bpf.o") if p.name != "testdrop.bpf.o"), arch[0])
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
    for p in OUT.glob("*.bpf.o*"):
        p.unlink()
    MANIFEST.unlink(missing_ok=True)
    shutil.rmtree(OUT / "src", ignore_errors=True)
    shutil.rmtree(LIB, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compile src/bpf/*.bpf.c into src/pytrace/bpf/*.bpf.o")
    ap.add_argument("--force", action="store_true", help="rebuild every object")
    ap.add_argument("--clean", action="store_true", help="remove built objects")
    ap.add_argument("--bundle", action="store_true",
                    help="also copy this machine's libbpf.so.1 (+ libelf) into the package, as for a wheel")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.clean:
            clean()
        else:
            build(force=args.force, quiet=args.quiet)
            if args.bundle:
                bundle_libs()
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
