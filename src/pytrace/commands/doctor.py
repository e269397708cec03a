"""`pytrace doctor`: what this kernel and host allow, and which tool runs how."""

from __future__ import annotations

import json
import os
import platform
import sys

from .. import __version__
from ..core import features, libbpf, objects, privileges, tracefs
from ..core.errors import PytraceError, UsageError


def _libbpf_origin() -> str:
    """system / override / bundled, with what was bundled and where it came from."""
    if libbpf.origin != "bundled":
        return "override: PYTRACE_LIBBPF" if libbpf.origin == "override" else libbpf.origin
    try:
        with open(os.path.join(libbpf.LIB_DIR, "bundled.json")) as fh:
            info = json.loads(fh.read())
        source = info["libbpf.so.1"].get("package") or info["libbpf.so.1"]["from"]
    except (OSError, ValueError, KeyError):
        source = "unknown source"
    extra = "".join(f", bundled {dep}" for dep in libbpf.deps_bundled)
    return f"bundled, from the build host's {source}{extra}"


def cleanup() -> int:
    """`pytrace doctor --cleanup`: remove what killed pytrace processes left
    in the kernel (core/leftovers.py), one line for each."""
    if os.geteuid() != 0:
        raise PytraceError("--cleanup enters network namespaces and removes tc filters and namespaces: "
                           "run it as root")
    from ..core import leftovers
    said = leftovers.sweep(processes=True)
    for line in said:
        print(line)
    if not said:
        print("nothing left by pytrace processes that are gone")
    return 0


def run(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: pytrace doctor [--cleanup]\n\nReport BTF, privileges, libbpf, tracefs and which hook "
              "kinds work here.\n\n  --cleanup  remove the tc filters, clsact qdiscs and network namespaces "
              "that\n             killed pytrace processes left, one line for each")
        return 0
    if argv and argv[0] == "--cleanup":
        return cleanup()
    if argv:
        raise UsageError(f"unrecognized arguments: {' '.join(argv)} (see pytrace doctor -h)")
    w = sys.stdout.write
    w(f"pytrace        {__version__}\n")
    w(f"kernel         {platform.release()} ({platform.machine()})\n")
    custom = os.environ.get("PYTRACE_BTF")
    if objects.kernel_has_btf():
        btf = objects.KERNEL_BTF
    elif custom:
        btf = "MISSING"
    elif objects.shipped_btf():
        btf = f"MISSING; the one pytrace carries for this release is used: {objects.shipped_btf()}"
    else:
        btf = "MISSING, and pytrace carries none for this release: give --btf FILE or PYTRACE_BTF"
    if custom:
        btf += f" (PYTRACE_BTF={custom}: {'used for CO-RE' if os.path.isfile(custom) else 'MISSING'})"
    w(f"kernel BTF     {btf}\n")
    lacking = privileges.missing()
    w(f"privileges     {'ok' if not lacking else 'missing ' + ', '.join(lacking)}"
      f" (uid {os.getuid()})\n")
    try:
        version = libbpf.version()
    except PytraceError as exc:
        w(f"libbpf         MISSING: {exc}\n")
        return 1
    w(f"libbpf         {version.lstrip('v')} ({_libbpf_origin()}) {libbpf.lib_path}\n")
    where = tracefs.mounted()
    why = tracefs.closed(where) if where else None
    w(f"tracefs        {where if where else 'not mounted (mounted on demand for classic tracepoints)'}"
      f"{f' ({why})' if why else ''}\n")
    try:
        objects.path("probe")
    except PytraceError as exc:
        w(f"objects        {exc}\n")
        return 1
    built = objects.manifest()
    w(f"objects        {objects.BPF_DIR} ({len(built.get('objects', ()))} built for pytrace "
      f"{built['version']} {built['arch']})\n")
    from ..core import rowfmt
    w(f"text lines     {rowfmt.status()}\n")
    if lacking:
        w("hook kinds     not probed: needs root (or CAP_BPF + CAP_PERFMON)\n")
        return 1
    w("hook kinds:\n")
    results = features.probe_all()
    for kind, (ok, why) in results.items():
        w(f"  {kind:<12} {'yes' if ok else 'no ':<4} {'' if ok else why}\n")
    w("\ntools:\n")
    from . import listing
    listing.run([])
    return 0
