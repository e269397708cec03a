#!/usr/bin/env python3
"""Bundle the web views' front-end libraries into the package.

    python3 build_web.py            # install and copy what changed
    python3 build_web.py --force    # do it again
    python3 build_web.py --clean    # remove the bundle

The libraries come from the npm registry, as web/package.json and its lock
(web/package-lock.json) pin them: `npm ci` installs them into build/web-npm/
(outside the source tree's web/, so no node_modules is ever next to the
committed files), and the files the pages load are copied into
src/pytrace/web/static/vendor/, which is package data and not committed.
Pages load only those copies: the web views work offline.

setup.py's build_py runs build(); npm is needed at build time only.  npm
keeps its own download cache, so a rebuild works without the network once
the pinned versions have been fetched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from build import BuildError   # the project's build.py: setup.py reports it the same way

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"
WORK = ROOT / "build" / "web-npm"
VENDOR = ROOT / "src" / "pytrace" / "web" / "static" / "vendor"
MANIFEST = ("package.json", "package-lock.json")

# vendor file -> where npm puts it (under node_modules/)
BUNDLE = {
    "d3.min.js": "d3/dist/d3.min.js",
    "d3.LICENSE": "d3/LICENSE",
}


def _stale(force: bool) -> bool:
    if force:
        return True
    built = [VENDOR / name for name in BUNDLE]
    if not all(p.exists() for p in built):
        return True
    oldest = min(p.stat().st_mtime for p in built)
    return any((WEB / m).stat().st_mtime > oldest for m in MANIFEST)


def build(force: bool = False, quiet: bool = False) -> list[Path]:
    """Install the pinned packages and copy the bundle; returns the files written."""
    for m in MANIFEST:
        if not (WEB / m).exists():
            raise BuildError(f"build_web.py: {(WEB / m).relative_to(ROOT)} is missing")
    if not _stale(force):
        return []
    npm = os.environ.get("NPM") or shutil.which("npm")
    if not npm:
        raise BuildError("build_web.py: npm not found; install it (apt-get install nodejs npm) or set NPM")
    WORK.mkdir(parents=True, exist_ok=True)
    for m in MANIFEST:
        shutil.copy2(WEB / m, WORK / m)
    if not quiet:
        print("  NPM  web/package-lock.json", flush=True)
    cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev",
           "--loglevel=error"]
    proc = subprocess.run(cmd, cwd=WORK, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise BuildError("build_web.py: npm ci failed (is the npm registry or npm's cache reachable?)")
    VENDOR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, src in BUNDLE.items():
        origin = WORK / "node_modules" / src
        if not origin.exists():
            raise BuildError(f"build_web.py: npm installed no {src} (check web/package.json)")
        tmp = VENDOR / f".{name}.{os.getpid()}.tmp"   # unique: parallel builds
        shutil.copyfile(origin, tmp)
        os.replace(tmp, VENDOR / name)
        written.append(VENDOR / name)
    return written


def clean() -> None:
    shutil.rmtree(VENDOR, ignore_errors=True)
    shutil.rmtree(WORK, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Bundle the web views' npm libraries into the package")
    ap.add_argument("--force", action="store_true", help="reinstall and copy even if up to date")
    ap.add_argument("--clean", action="store_true", help="remove the bundle and npm's work tree")
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
