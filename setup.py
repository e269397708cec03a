"""setuptools glue: compile the BPF objects (build.py) before packaging them.

Everything else about the package is in pyproject.toml.  The wheel is tagged
for this platform (it carries BPF objects built for this architecture and a
bundled libbpf.so.1 for hosts without one), not `any`.
"""

import shutil
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build as bpf_build  # noqa: E402  (the project's build.py)

try:
    from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
except ImportError:
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:  # pragma: no cover
        bdist_wheel = None


class BuildPy(build_py):
    def run(self):
        # build/lib outlives a build and build_py only adds to it: drop the
        # package copied there before, so that what the tree no longer has (a
        # removed object, a module moved to another package: core/cliutil.py
        # once shipped beside cli/cliutil.py) leaves the wheel too
        shutil.rmtree(Path(self.build_lib) / "pytrace", ignore_errors=True)
        try:
            bpf_build.build()
            __import__("build_web").build()  # the web views' npm bundle (build_web.py)
            # the package carries libbpf (+ libelf) for hosts that lack it: see core/libbpf.py
            bpf_build.bundle_libs()
        except bpf_build.BuildError as exc:
            raise SystemExit(str(exc))
        super().run()


class PlatformDistribution(Distribution):
    """Platform-specific content: install into platlib, so the wheel's files sit at its root
    (a pure root would move them under pytrace-<v>.data/purelib/)."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": BuildPy}

if bdist_wheel is not None:
    class PlatformWheel(bdist_wheel):
        """Pure Python, but the objects are per architecture: py3-none-<platform>."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass, distclass=PlatformDistribution)
