"""The wheel on a bare host (issue 8): no clang, no kernel headers, no bpftool.

One platform wheel is built from this tree (or taken from $PYTRACE_WHEEL, as
scripts/release.sh does) and installed

  - into a minimal Debian 12 root made by debootstrap (python3 only, plus
    libbpf1 for the "system copy" case): with libbpf1 and libelf1 purged the
    bundled copies must be used, with libbpf1 present the system's;
  - into a fresh venv on this machine, with PATH stripped of the toolchain;

and in each `pytrace doctor` and `pytrace tcpstates --json` run while a
loopback connection is made, and the events are checked exactly.  Kernel BTF
from PYTRACE_BTF / --btf, the one-line errors for a missing BTF file or a
missing libbpf, and the checks of the packaged objects are covered too.

The debootstrap root is cached under /var/cache/pytrace-test/roots/, keyed by
suite, variant, mirror and package list; each test session uses a writable
overlay of it, so the cache is never modified.  Every mount (overlay, /proc,
/sys, ...) is made inside a private mount namespace held by one process for
the session: nothing is mounted in the host's namespace, so nothing can be
left mounted, even when a test fails or is killed.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from debroot import CACHE, debian_root
from debroot import cache_lock as _cache_lock
from helpers import has_bpf_link, wait_until

REPO = Path(__file__).resolve().parent.parent
PURGED_FOR_BARE = ("libbpf1", "libelf1")        # a host that never had libbpf
TOOLCHAIN = ("clang", "clang-14", "llc", "llvm-strip", "bpftool", "gcc", "cc")
VENV = "/opt/pytrace"                           # where the wheel goes inside the root
HOST_DIR = "/tmp/pytrace-test"                  # wheels, helpers.py, BTF copy inside the root
TIMEOUT = 60

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the wheel under test is built for x86_64")


# ---------------------------------------------------------------------------
# the wheel and what installs it
# ---------------------------------------------------------------------------

def _env(**extra: str) -> dict:
    """This environment without anything that could point pytrace at the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PYTRACE_")}
    env.update(extra)
    return env


def _source_tree(dest: Path) -> None:
    """This tree without what a build makes (git's view: tracked and new files, not ignored ones)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True)
        files = [f for f in out.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:  # not a git checkout: everything but what a build makes
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "*.bpf.o", "*.layout.json", "lib",
            ".pytest_cache", "manifest.json"))
        return
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("PYTRACE_WHEEL")
    if given:
        return Path(given).resolve()
    work = tmp_path_factory.mktemp("wheel")
    _source_tree(work / "src")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                           "-w", str(work / "dist"), str(work / "src")],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    built = list((work / "dist").glob("*.whl"))
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="module")
def support_wheels(wheel, tmp_path_factory) -> Path:
    """pip (run from its own wheel, so the root needs no python3-pip) and pyelftools, plus ours."""
    cached = CACHE / "wheels"
    with _cache_lock():
        if not (list(cached.glob("pip-*.whl")) and list(cached.glob("pyelftools-*.whl"))):
            tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="wheels."))
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                   "--disable-pip-version-check", "--only-binary=:all:", "-d", str(tmp),
                                   "pip", "pyelftools>=0.29"], capture_output=True, text=True, timeout=300,
                                  env=_env())
            assert proc.returncode == 0, f"pip download failed: {proc.stderr}"
            shutil.rmtree(cached, ignore_errors=True)
            tmp.rename(cached)
    out = tmp_path_factory.mktemp("wheels")
    for whl in [*cached.glob("*.whl"), wheel]:
        shutil.copy2(whl, out / whl.name)
    return out


def _pip_install(python: str, wheels: Path, where: str | None = None) -> list[str]:
    """pip run from its wheel (python3 pip.whl/pip ...), offline, from the wheels at `where`."""
    where = where or str(wheels)
    pip = sorted(wheels.glob("pip-*.whl"))[-1].name
    return [python, f"{where}/{pip}/pip", "install", "-q", "--no-index", "--disable-pip-version-check",
            "--root-user-action=ignore", "--find-links", where, "pytrace"]


# ---------------------------------------------------------------------------
# the cached Debian root and overlay sessions on it
# ---------------------------------------------------------------------------

# Runs as the holder of the session's mount namespace: mounts, says "ready", then
# waits for its stdin to close (the test ending, or dying) and the namespace goes.
_HOLDER = r"""
L=$1 W=$2 R=$2/root
mount -t overlay pytrace-test -o "lowerdir=$L,upperdir=$W/upper,workdir=$W/work" "$R"
mount --bind /proc "$R/proc"
mount --bind /sys "$R/sys"                         # with /sys/kernel/btf
for m in /sys/fs/bpf /sys/kernel/tracing; do      # as the host has them
    if mountpoint -q "$m"; then mount --bind "$m" "$R$m"; fi
done
echo ready
exec cat >/dev/null
"""

# A child namespace of the session's in which /sys/kernel/btf is empty: a kernel without BTF.
_NO_BTF = r'mount -t tmpfs -o size=64k,mode=0755 pytrace-nobtf "$1/sys/kernel/btf"; shift; exec "$@"'


class Root:
    """A writable overlay of the cached root, with the wheel installed in a venv."""

    def __init__(self, lower: Path, work: Path):
        self.lower, self.work = lower, work
        for d in ("upper", "work", "root"):
            (work / d).mkdir(parents=True)
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-euc", _HOLDER,
                                        "sh", str(lower), str(work)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise AssertionError(f"could not set up the root: {self.holder.stderr.read()}")
        self.path = work / "root"

    def host_path(self, inside: str) -> Path:
        """A path inside the root as seen from the host: through the holder's /proc root link."""
        return Path(f"/proc/{self.holder.pid}/root{self.path}{inside}")

    def argv(self, *cmd: str, env: dict | None = None, no_btf: bool = False) -> list[str]:
        envv = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        inner = ["chroot", str(self.path), "env", "-i", *[f"{k}={v}" for k, v in envv.items()], *cmd]
        enter = ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--"]
        if no_btf:
            return [*enter, "unshare", "--mount", "--propagation", "private", "sh", "-euc", _NO_BTF, "sh",
                    str(self.path), *inner]
        return [*enter, *inner]

    def run(self, *cmd: str, env: dict | None = None, no_btf: bool = False,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*cmd, env=env, no_btf=no_btf), capture_output=True, text=True,
                              timeout=timeout)

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.stdin.close()
            try:
                self.holder.wait(10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def _install(root: Root, wheels: Path) -> None:
    inside = root.host_path(HOST_DIR)
    inside.mkdir(parents=True)
    for f in wheels.iterdir():
        shutil.copy2(f, inside / f.name)
    shutil.copy2(Path(__file__).with_name("helpers.py"), inside / "helpers.py")  # for the traffic
    # a venv of the root's own python3 (no python3-venv/pip packages needed), then pip from its wheel
    for cmd in (["python3", "-m", "venv", "--without-pip", VENV],
                _pip_install(f"{VENV}/bin/python", wheels, HOST_DIR)):
        proc = root.run(*cmd, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}"


def _session(request, tmp_path_factory, wheels: Path, purge: tuple[str, ...]) -> Root:
    root = Root(debian_root(), tmp_path_factory.mktemp("root"))
    request.addfinalizer(root.close)
    if purge:
        proc = root.run("dpkg", "--purge", *purge)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    _install(root, wheels)
    return root


@pytest.fixture(scope="module")
def bare_root(request, tmp_path_factory, support_wheels) -> Root:
    return _session(request, tmp_path_factory, support_wheels, PURGED_FOR_BARE)


@pytest.fixture(scope="module")
def system_root(request, tmp_path_factory, support_wheels) -> Root:
    return _session(request, tmp_path_factory, support_wheels, ())


@pytest.fixture(scope="module")
def host_venv(tmp_path_factory, support_wheels) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT, env=_env())
    proc = subprocess.run(_pip_install(str(venv / "bin" / "python"), support_wheels), capture_output=True,
                          text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def _site_package(venv: Path) -> Path:
    found = list(venv.glob("lib/python3*/site-packages/pytrace"))
    assert len(found) == 1, found
    return found[0]


UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def venv_argv(venv: Path, *args: str) -> list[str]:
    """The venv's pytrace in a private mount namespace: a tracefs that a probe mounts and
    unmounts (doctor) stays out of the host's namespace, which other tests share."""
    return [UNSHARE, "--mount", "--propagation", "private", f"{venv}/bin/pytrace", *args]


def venv_env(venv: Path, **extra: str) -> dict:
    """With a feature cache of its own, so an override or a custom BTF never rewrites the host's."""
    return _env(PYTRACE_CACHE=str(venv.parent / "cache"), **extra)


def venv_run(venv: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(venv_argv(venv, *args), capture_output=True, text=True, timeout=TIMEOUT, cwd="/",
                          env=venv_env(venv, **extra))


def venv_roundtrip(venv: Path) -> list[str]:
    return [f"{venv}/bin/python", "-c", ROUNDTRIP.replace(HOST_DIR, str(Path(__file__).parent))]


# ---------------------------------------------------------------------------
# traffic and events
# ---------------------------------------------------------------------------

ROUNDTRIP = (f"import json, sys; sys.path.insert(0, {HOST_DIR!r}); import helpers; "
             "c = helpers.tcp_roundtrip('127.0.0.1'); "
             "print(json.dumps({'server': c.server_port, 'client': c.client_port, 'pid': c.client_pid, "
             "'comm': open('/proc/self/comm').read().strip()}))")


class Trace:
    """A `pytrace tcpstates --json` process; its stdout collected by a thread."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        attached = wait_until(lambda: has_bpf_link(self.proc.pid) or self.proc.poll() is not None, 20)
        if not attached or self.proc.poll() is not None:
            rc, err = self.stop()
            raise AssertionError(f"tracer did not attach (rc {rc}): {err}")

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def records_until(self, done, timeout: float = 10.0) -> list[dict]:
        """JSON records read until done(records) holds, or the timeout."""
        out: list[dict] = []
        end = time.monotonic() + timeout
        while not done(out) and time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc, self.proc.stderr.read()


def _expected(conn: dict) -> dict[str, list[tuple]]:
    """Each socket's transitions as (old, new, laddr, lport, raddr, rport)."""
    lo, any4, s, c = "127.0.0.1", "0.0.0.0", conn["server"], conn["client"]
    return {
        "listener": [("CLOSE", "LISTEN", lo, s, any4, 0), ("LISTEN", "CLOSE", lo, s, any4, 0)],
        "client": [("CLOSE", "SYN_SENT", lo, 0, lo, s), ("SYN_SENT", "ESTABLISHED", lo, c, lo, s),
                   ("ESTABLISHED", "FIN_WAIT1", lo, c, lo, s), ("FIN_WAIT1", "FIN_WAIT2", lo, c, lo, s),
                   ("FIN_WAIT2", "CLOSE", lo, c, lo, s)],
        "child": [("LISTEN", "SYN_RECV", lo, s, lo, c), ("SYN_RECV", "ESTABLISHED", lo, s, lo, c),
                  ("ESTABLISHED", "CLOSE_WAIT", lo, s, lo, c), ("CLOSE_WAIT", "LAST_ACK", lo, s, lo, c),
                  ("LAST_ACK", "CLOSE", lo, s, lo, c)],
    }


# transitions made by a system call of the connecting process: pid and comm are exact
SYSCALL_MADE = {("CLOSE", "LISTEN"), ("LISTEN", "CLOSE"), ("CLOSE", "SYN_SENT"), ("ESTABLISHED", "FIN_WAIT1"),
                ("CLOSE_WAIT", "LAST_ACK")}


def _ours(records: list[dict], conn: dict) -> list[dict]:
    ports = {conn["server"], conn["client"]}
    return [r for r in records if r["lport"] in ports or r["rport"] in ports]


def check_events(records: list[dict], conn: dict) -> None:
    mine = _ours(records, conn)
    by_sk: dict[str, list[dict]] = {}
    for r in mine:
        by_sk.setdefault(r["skaddr"], []).append(r)
    got = sorted(([(r["oldstate"], r["newstate"], r["laddr"], r["lport"], r["raddr"], r["rport"]) for r in evs]
                  for evs in by_sk.values()), key=repr)
    assert got == sorted(_expected(conn).values(), key=repr), mine
    for r in mine:
        assert r["family"] == "AF_INET" and r["ms"] >= 0
        if (r["oldstate"], r["newstate"]) in SYSCALL_MADE:
            assert (r["pid"], r["comm"]) == (conn["pid"], conn["comm"]), r
    for evs in by_sk.values():
        assert all(a["ts_ns"] <= b["ts_ns"] for a, b in zip(evs, evs[1:]))


def trace_connection(tracer_argv: list[str], roundtrip_argv: list[str], env: dict | None = None) -> None:
    """Start the tracer, make one loopback connection, check its exact events, stop cleanly."""
    trace = Trace(tracer_argv, env)
    try:
        done = subprocess.run(roundtrip_argv, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        conn = json.loads(done.stdout)
        want = sum(len(v) for v in _expected(conn).values())
        records = trace.records_until(lambda recs: len(_ours(recs, conn)) >= want)
    finally:
        rc, err = trace.stop()
    assert rc == 0 and err == "", err
    check_events(records, conn)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one-line, exit-status-1 error of a pytrace command."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr
    return proc.stderr


def doctor_libbpf_line(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("libbpf ")]
    assert len(lines) == 1, stdout
    return lines[0].split(None, 1)[1]


# ---------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------

def test_one_platform_wheel_with_everything_needed_at_run_time(wheel):
    import pytrace

    assert wheel.name == f"pytrace-{pytrace.__version__}-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("pytrace/bpf/manifest.json"))
        bundled = json.loads(zf.read("pytrace/lib/bundled.json"))
        libbpf_head = zf.read("pytrace/lib/libbpf.so.1")[:20]
        rowfmt_head = zf.read("pytrace/native/librowfmt.so")[:20]     # the native text formatter
        wheel_meta = zf.read(f"pytrace-{pytrace.__version__}.dist-info/WHEEL").decode()
    assert "Tag: py3-none-linux_x86_64" in wheel_meta and "Root-Is-Purelib: false" in wheel_meta
    assert (manifest["package"], manifest["version"], manifest["arch"]) == ("pytrace", pytrace.__version__,
                                                                            "x86_64")
    objs = {n.rsplit("/", 1)[1] for n in names if n.startswith("pytrace/bpf/") and n.endswith(".bpf.o")}
    sources = {n.rsplit("/", 1)[1] for n in names if n.startswith("pytrace/bpf/src/") and n.endswith(".bpf.c")}
    assert objs == set(manifest["objects"]) and {"probe.bpf.o", "tcpstates.bpf.o", "tcprtt.bpf.o"} <= objs
    assert sources == {o[:-2] + ".c" for o in objs}                         # what --ebpf prints
    assert all(f"pytrace/bpf/{o}.layout.json" in names for o in objs)        # no ELF parse at start
    assert {"pytrace/bpf/src/pytrace.h", "pytrace/bpf/src/events.h"} <= names
    # the event classes build.py generates from the objects' BTF (spec/gentypes.py)
    assert {"pytrace/gen/__init__.py", "pytrace/gen/tcpstates.py", "pytrace/gen/tcptop.py"} <= names
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "src/pytrace"], capture_output=True, text=True)
    py = {f[len("src/"):] for f in tracked.stdout.split() if f.endswith(".py") and (REPO / f).exists()}
    assert py and py <= names, py - names
    assert set(bundled) == {"libbpf.so.1", "libelf.so.1"}
    assert {"pytrace/lib/libbpf.so.1", "pytrace/lib/libelf.so.1"} <= names
    for head in (libbpf_head, rowfmt_head):
        assert head[:4] == b"\x7fELF" and head[18:20] == (62).to_bytes(2, "little")  # EM_X86_64
    assert not any(n.endswith((".tmp", ".pyc")) for n in names)
    # the tests' own programs (tests/bpf/) are built outside the package: no object, layout or source of theirs
    scaffolding = {p.name[: -len(".bpf.c")] for p in (REPO / "tests" / "bpf").glob("*.bpf.c")}
    assert scaffolding and not [n for n in names if n.rsplit("/", 1)[-1].split(".")[0] in scaffolding]


def _check_root_is_bare(root: Root, libbpf_present: bool) -> None:
    for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        present = set(os.listdir(root.host_path(d)))
        assert not present & set(TOOLCHAIN), present & set(TOOLCHAIN)
    assert not root.host_path("/usr/include/bpf").exists()             # no libbpf-dev
    assert not list(root.host_path("/usr/src").glob("linux-headers*"))
    libdir = root.host_path("/usr/lib/x86_64-linux-gnu")
    assert bool(list(libdir.glob("libbpf.so*"))) == libbpf_present
    assert bool(list(libdir.glob("libelf*.so*"))) == libbpf_present   # libelf1 comes only with libbpf1


def test_bare_root_uses_bundled_libbpf(bare_root):
    _check_root_is_bare(bare_root, libbpf_present=False)
    doctor = bare_root.run(f"{VENV}/bin/pytrace", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    line = doctor_libbpf_line(doctor.stdout)
    assert line.startswith("1.1 (bundled, from the build host's libbpf1 ") and ", bundled libelf.so.1)" in line
    assert line.endswith("/site-packages/pytrace/lib/libbpf.so.1") and line.split()[-1].startswith(VENV)
    assert "tp_btf       yes" in doctor.stdout
    trace_connection(bare_root.argv(f"{VENV}/bin/pytrace", "tcpstates", "--json"),
                     bare_root.argv(f"{VENV}/bin/python", "-c", ROUNDTRIP))


def test_root_with_libbpf1_uses_the_system_copy(system_root):
    _check_root_is_bare(system_root, libbpf_present=True)
    doctor = system_root.run(f"{VENV}/bin/pytrace", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    real = os.readlink(system_root.host_path("/usr/lib/x86_64-linux-gnu/libbpf.so.1"))   # libbpf.so.1.1.2
    assert doctor_libbpf_line(doctor.stdout) == f"1.1 (system) /usr/lib/x86_64-linux-gnu/{real}"
    trace_connection(system_root.argv(f"{VENV}/bin/pytrace", "tcpstates", "--json"),
                     system_root.argv(f"{VENV}/bin/python", "-c", ROUNDTRIP))


def test_no_libbpf_at_all_says_what_to_install(bare_root):
    found = list(bare_root.host_path(VENV).glob("lib/python3*/site-packages/pytrace/lib/libbpf.so.1"))
    assert len(found) == 1
    bundled = found[0]
    aside = bundled.with_name("libbpf.so.1.aside")
    bundled.rename(aside)
    try:
        proc = bare_root.run(f"{VENV}/bin/pytrace", "tcpstates", "--json")
        one_line_error(proc, "apt-get install libbpf1", "PYTRACE_LIBBPF")
        doctor = bare_root.run(f"{VENV}/bin/pytrace", "doctor")
        assert doctor.returncode == 1 and doctor_libbpf_line(doctor.stdout).startswith("MISSING: ")
    finally:
        aside.rename(bundled)


def test_kernel_without_btf_file_needs_and_uses_pytrace_btf(system_root):
    shutil.copyfile("/sys/kernel/btf/vmlinux", system_root.host_path(f"{HOST_DIR}/vmlinux.btf"))
    cache = {"PYTRACE_CACHE": "/tmp/pytrace-nobtf"}  # what is learnt without BTF stays out of the root's cache
    proc = system_root.run(f"{VENV}/bin/pytrace", "tcpstates", "--json", env=cache, no_btf=True)
    one_line_error(proc, "has no BTF in /sys/kernel/btf/vmlinux", "carries none for it", "--btf FILE or PYTRACE_BTF")
    env = {**cache, "PYTRACE_BTF": f"{HOST_DIR}/vmlinux.btf"}
    doctor = system_root.run(f"{VENV}/bin/pytrace", "doctor", env=env, no_btf=True)
    assert f"kernel BTF     MISSING (PYTRACE_BTF={HOST_DIR}/vmlinux.btf: used for CO-RE)" in doctor.stdout
    # tp_btf needs the kernel's own BTF file to find its attach point: the loader falls back to raw_tp
    listing = system_root.run(f"{VENV}/bin/pytrace", "list", env=env, no_btf=True)
    assert [ln.split()[1] for ln in listing.stdout.splitlines() if ln.startswith("tcpstates ")] == ["raw_tp"], \
        listing.stdout + listing.stderr
    trace_connection(system_root.argv(f"{VENV}/bin/pytrace", "tcpstates", "--json", env=env, no_btf=True),
                     system_root.argv(f"{VENV}/bin/python", "-c", ROUNDTRIP))


def test_fresh_venv_without_toolchain_gives_the_same_events(host_venv):
    path = f"{host_venv}/bin"
    for tool in TOOLCHAIN:
        assert shutil.which(tool, path=path) is None
    doctor = venv_run(host_venv, "doctor", PATH=path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor_libbpf_line(doctor.stdout).startswith("1.1 (system) /")
    assert f"objects        {_site_package(host_venv)}/bpf " in doctor.stdout
    trace_connection(venv_argv(host_venv, "tcpstates", "--json"), venv_roundtrip(host_venv),
                     venv_env(host_venv, PATH=path))


def test_pytrace_btf_copy_works_and_missing_file_is_one_line(host_venv, tmp_path):
    copy = tmp_path / "vmlinux.btf"
    shutil.copyfile("/sys/kernel/btf/vmlinux", copy)
    trace_connection(venv_argv(host_venv, "tcpstates", "--json"), venv_roundtrip(host_venv),
                     venv_env(host_venv, PYTRACE_BTF=str(copy)))
    missing = tmp_path / "no-such-btf"
    proc = venv_run(host_venv, "tcpstates", "--json", PYTRACE_BTF=str(missing))
    assert one_line_error(proc) == f"pytrace tcpstates: BTF file {missing} (from PYTRACE_BTF) does not exist\n"
    proc = venv_run(host_venv, "tcpstates", "--btf", str(missing))          # a bad argument: usage, status 2
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"argument --btf: '{missing}': No such file or directory" in proc.stderr, proc.stderr


def test_pytrace_libbpf_overrides(host_venv):
    bundled = _site_package(host_venv) / "lib" / "libbpf.so.1"
    doctor = venv_run(host_venv, "doctor", PYTRACE_LIBBPF=str(bundled))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor_libbpf_line(doctor.stdout) == f"1.1 (override: PYTRACE_LIBBPF) {bundled}"
    proc = venv_run(host_venv, "tcpstates", PYTRACE_LIBBPF="/nonexistent/libbpf.so.1")
    one_line_error(proc, "PYTRACE_LIBBPF: cannot use override /nonexistent/libbpf.so.1")


def test_packaged_objects_are_checked_at_load(host_venv):
    """A damaged or mixed install: one line naming the problem, exit 1, nothing loaded."""
    bpf = _site_package(host_venv) / "bpf"
    manifest = bpf / "manifest.json"
    good = manifest.read_text()
    info = json.loads(good)
    obj = bpf / "tcpstates.bpf.o"
    obj_bytes = obj.read_bytes()

    def fails(*needles: str) -> None:
        one_line_error(venv_run(host_venv, "tcpstates"), *needles)

    try:
        manifest.write_text(json.dumps({**info, "version": "0.0.1"}))
        fails(f"were built for pytrace 0.0.1, this is pytrace {info['version']}")
        manifest.write_text(json.dumps({**info, "arch": "aarch64"}))
        fails("were built for aarch64, this machine is x86_64: install the pytrace wheel for x86_64")
        manifest.write_text(json.dumps({**info, "objects": [o for o in info["objects"] if o != obj.name]}))
        fails(f"{obj} is not from this build")
        manifest.unlink()
        fails(f"{manifest} is missing")
        manifest.write_text(good)
        obj.unlink()
        fails(f"{obj} is missing")
        shutil.copyfile(_site_package(host_venv) / "lib" / "libelf.so.1", obj)  # an ELF, but x86-64
        fails(f"{obj} is not a 64-bit little-endian BPF object")
        obj.write_bytes(b"not an ELF at all")
        fails(f"{obj} is not an ELF file")
    finally:
        manifest.write_text(good)
        obj.write_bytes(obj_bytes)
