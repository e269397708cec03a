#!/usr/bin/env python3
"""The kernel lab: Debian's stock kernels booted under qemu, running pytrace.

    python3 scripts/kernel_lab.py fetch  [KERNEL...]       # download and unpack (cached)
    python3 scripts/kernel_lab.py run    KERNEL -- CMD...  # boot, run CMD as root, exit with its status
    python3 scripts/kernel_lab.py matrix [KERNEL...] [-- PYTEST-ARGS]
    python3 scripts/kernel_lab.py btf    [KERNEL...]       # refresh vmlinux/x86/btf/ from the guests
    python3 scripts/kernel_lab.py list                     # what is cached
    python3 scripts/kernel_lab.py report                   # the table of the last runs' results

KERNEL is 5.10, 6.1 or 6.12 (Debian bullseye, bookworm, trixie); the default
is all three.  Each is Debian's own `linux-image-amd64` of that release,
downloaded with apt through a private source list and state (the host's apt
configuration is neither read nor changed), unpacked with dpkg -x under
$PYTRACE_LAB (default /var/lib/pytrace-lab), and booted with virtme-ng
(`vng`, pinned, in its own venv) under qemu's TCG: KVM does not work on these
machines (../shared/KERNELS.md).  The guest shares this machine's root read
only, so it runs the host's installed pytrace and its test suite; only the
run's own output directory is writable from the guest.

`matrix` runs the kernel-matrix suite (pytest -m matrix: every tool with every
hook variant the guest allows, exact events, nothing left in the kernel) in
each guest, then checks the union over the kernels: every variant a tool
ships must have been attached and checked on at least one kernel that allows
it (the host's own run counts too: scripts/test.sh writes results/host.json).
The results land in $PYTRACE_LAB/results/<kernel>.json; `matrix` prints the
README's table from them, and each guest's log (runs/<kernel>/stdout) ends
with its 30 slowest cases.  A guest runs its whole matrix in 7-13 minutes,
boot included, on this kind of machine (2 cores, TCG; 5.10 is the slowest),
so CI (.ci/run -> scripts/test.sh -> `matrix 5.10 6.1 6.12`) runs all of it on
every kernel: there is no CI subset, and the full matrix is this command.
The guest collects only the test files that hold matrix cases (the host's
pytest lists them).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# not under /var/cache, /tmp or /run: the guest mounts its own tmpfs there
LAB = Path(os.environ.get("PYTRACE_LAB", "/var/lib/pytrace-lab"))
VENV = Path(os.environ.get("PYTRACE_VENV", "/opt/pytrace"))
LAB_VENV = LAB / "venv"
VIRTME_NG = "virtme-ng==1.42"       # pinned: its boot and 9p behaviour is what was checked here
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = os.environ.get("PYTRACE_LAB_MIRROR", "http://deb.debian.org")

# kernel name -> Debian suite whose linux-image-amd64 it is
SUITES = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie"}
BOOT_TIMEOUT = 60 * 60      # a guest that has not finished in an hour is killed
CASE_TIMEOUT = 300          # pytest-timeout fails a matrix case stuck this long (the slowest takes ~100 s)
# A guest whose output has not grown for this long is stuck below pytest (its
# kernel livelocked: once, 5.10 under TCG while attaching softirqs' tracepoints,
# with pytest-timeout's signal never delivered): it is killed and booted again, once.
STALL_TIMEOUT = CASE_TIMEOUT + 90


class LabError(Exception):
    pass


class GuestStalled(LabError):
    """The guest's output stopped growing for STALL_TIMEOUT: killed."""


def say(msg: str) -> None:
    print(f"kernel_lab: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# -- fetching -------------------------------------------------------------------

def _apt_options(suite: str) -> list[str]:
    """apt options that keep every bit of state under the lab (nothing of the host's apt)."""
    state = LAB / "apt" / suite
    for sub in ("lists/partial", "cache/archives/partial", "etc"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    sources = state / "etc" / "sources.list"
    sources.write_text(
        f"deb [signed-by={KEYRING}] {MIRROR}/debian {suite} main\n"
        f"deb [signed-by={KEYRING}] {MIRROR}/debian-security {suite}-security main\n")
    return ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Dir::State::status=/dev/null", "-o", "APT::Architecture=amd64",
            "-o", "Debug::NoLocking=1", "-qq"]


def _image_package(suite: str, opts: list[str]) -> tuple[str, str]:
    """The versioned linux-image package that suite's linux-image-amd64 depends on, and its version."""
    out = subprocess.run(["apt-cache", *opts, "show", "--no-all-versions", "linux-image-amd64"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line.split(":", 1)[1].split(","):
                name = dep.strip().split()[0]
                if name.startswith("linux-image-") and name[-6:] == "-amd64":
                    version = dep.split("(=", 1)[1].rstrip(") ").strip() if "(=" in dep else ""
                    return name, version
    raise LabError(f"{suite}: linux-image-amd64 names no versioned image (apt-cache show said:\n{out})")


def kernel_dir(name: str) -> Path:
    return LAB / "kernels" / name


def kernel_info(name: str) -> dict | None:
    try:
        return json.loads((kernel_dir(name) / "kernel.json").read_text())
    except (OSError, ValueError):
        return None


def fetch(name: str) -> dict:
    """Download and unpack one Debian kernel; reuse the cached one if it is current (or offline)."""
    suite = SUITES[name]
    cached = kernel_info(name)
    opts = _apt_options(suite)
    try:
        subprocess.run(["apt-get", *opts, "update"], check=True, capture_output=True, text=True, timeout=300)
        package, version = _image_package(suite, opts)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        if cached:
            say(f"{name}: the archive is unreachable ({exc}); using the cached {cached['release']}")
            return cached
        raise LabError(f"{name}: apt could not reach {MIRROR} for {suite}: {getattr(exc, 'stderr', exc)}")
    release = package[len("linux-image-"):]
    if cached and cached["release"] == release and cached["version"] == version:
        return cached
    say(f"{name}: downloading {package} {version} ({suite})")
    with tempfile.TemporaryDirectory(dir=LAB) as tmp:
        # exactly the versioned package: a glob once fetched every old build (1.8 GB)
        run(["apt-get", *opts, "download", f"{package}={version}"], cwd=tmp, capture_output=True)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise LabError(f"{name}: expected one .deb, got {debs}")
        dest = kernel_dir(name)
        if dest.exists():
            shutil.rmtree(dest)
        unpacked = Path(tmp) / "root"
        run(["dpkg", "-x", str(debs[0]), str(unpacked)])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked), dest)
    modules = next((d for d in (dest / "lib" / "modules" / release, dest / "usr" / "lib" / "modules" / release)
                    if d.is_dir()), None)
    info = {"name": name, "suite": suite, "package": package, "version": version, "release": release,
            "vmlinuz": str(dest / "boot" / f"vmlinuz-{release}"), "modules": str(modules or "")}
    if not Path(info["vmlinuz"]).exists() or modules is None:
        raise LabError(f"{name}: {package} has no boot/vmlinuz-{release} or no modules")
    # the package leaves modules.dep to its postinst: make it, so that the
    # guest's modprobe finds veth, vxlan, sch_* and the rest
    run(["depmod", "-b", str(modules.parent.parent.parent), release])
    (dest / "kernel.json").write_text(json.dumps(info, indent=1))
    return info


# -- booting --------------------------------------------------------------------

def ensure_tools() -> Path:
    """qemu from Debian and virtme-ng (pinned) in the lab's own venv; returns vng's path."""
    if shutil.which("qemu-system-x86_64") is None:
        say("installing qemu-system-x86")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"], env=env,
            stdout=subprocess.DEVNULL)
    vng = LAB_VENV / "bin" / "vng"
    if not vng.exists():
        say(f"installing {VIRTME_NG} into {LAB_VENV}")
        run(["/usr/bin/python3", "-m", "venv", str(LAB_VENV)])
        run([str(LAB_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", VIRTME_NG],
            stdout=subprocess.DEVNULL)
    return vng


def boot(info: dict, command: str, out: Path, *, timeout: float = BOOT_TIMEOUT,
         memory: str = "4G", cpus: int = 2, stall: float | None = None) -> int:
    """Boot a kernel, run a shell command as root in it, and return its exit status.

    The command's stdout and stderr go to out/stdout and out/stderr; out is
    the only directory the guest can write, at the same path as on the host.
    stall: kill the guest (GuestStalled) once its stdout has not grown for that long.
    """
    vng = ensure_tools()
    out.mkdir(parents=True, exist_ok=True)
    for f in ("rc", "stdout", "stderr"):
        (out / f).unlink(missing_ok=True)
    guest = out / "guest.sh"
    guest.write_text(
        "#!/bin/sh\n"
        "# run in the guest by scripts/kernel_lab.py\n"
        "ulimit -l unlimited       # 5.10 charges BPF memory to RLIMIT_MEMLOCK (memcg only from 5.11)\n"
        "export PYTRACE_LAB_GUEST=1\n"
        f"cd {shlex.quote(str(ROOT))}\n"
        f"( {command} ) > {shlex.quote(str(out / 'stdout'))} 2> {shlex.quote(str(out / 'stderr'))}\n"
        f"echo $? > {shlex.quote(str(out / 'rc'))}\n")
    guest.chmod(0o755)
    cmd = [str(vng), "--run", info["vmlinuz"], "--disable-kvm", "--user", "root", "--cpus", str(cpus),
           "--memory", memory, "--rwdir", str(out), "--cwd", str(ROOT), "--exec", str(guest)]
    started = time.monotonic()
    with open(out / "console", "wb") as console:
        env = dict(os.environ, PATH=f"{vng.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")  # vng runs virtme-run
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        try:
            _wait_for_guest(proc, out / "stdout", started + timeout, stall)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise LabError(f"{info['name']}: the guest did not finish in {timeout:.0f} s (console: {out}/console)")
        except GuestStalled as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise GuestStalled(f"{info['name']}: {exc}") from None
    try:
        rc = int((out / "rc").read_text())
    except (OSError, ValueError):
        raise LabError(f"{info['name']}: the guest ended without running the command "
                       f"(vng exit {proc.returncode}; console: {out}/console)") from None
    say(f"{info['name']} ({info['release']}): exit {rc} after {time.monotonic() - started:.0f} s")
    return rc


def _wait_for_guest(proc: subprocess.Popen, stdout: Path, deadline: float, stall: float | None) -> None:
    """Until the guest ends; TimeoutExpired past deadline, GuestStalled when
    stdout has not grown for stall seconds."""
    size, grew = -1, time.monotonic()
    while True:
        now = time.monotonic()
        try:
            proc.wait(timeout=max(0.0, min(10.0, deadline - now)))
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
        try:
            now_size = stdout.stat().st_size
        except OSError:
            now_size = -1
        if now_size != size:
            size, grew = now_size, time.monotonic()
        elif stall is not None and time.monotonic() - grew > stall:
            last = stdout.read_text(errors="replace").rstrip().rsplit("\n", 1)[-1] if size > 0 else "(nothing yet)"
            raise GuestStalled(f"no output for {stall:.0f} s, stuck after: {last[:200]}")


# -- the matrix -----------------------------------------------------------------

def matrix_files() -> list[str]:
    """The test files that hold matrix cases, as this machine's pytest collects
    them (`-m matrix` picks the same cases on every kernel: the marks come
    from the tools' variants, not from the kernel).  The guest then imports
    these ~45 modules, not all ~80: collecting is Python work, which TCG
    makes ~20 times slower.  ["tests"] if the host cannot say."""
    r = subprocess.run([str(VENV / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "--collect-only",
                        "-q", "-m", "matrix", "tests"], cwd=ROOT, capture_output=True, text=True)
    files = sorted({line.split("::", 1)[0] for line in r.stdout.splitlines() if "::" in line})
    if r.returncode != 0 or not files:
        say(f"the host could not list the matrix's test files (pytest exit {r.returncode}); the guest collects tests/")
        return ["tests"]
    return files


def matrix(names: list[str], pytest_args: list[str]) -> int:
    infos = [fetch(n) for n in names]
    files = matrix_files()
    results_dir = LAB / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    for info in infos:
        out = LAB / "runs" / info["name"]
        if out.exists():
            shutil.rmtree(out)
        result = results_dir / f"{info['name']}.json"
        result.unlink(missing_ok=True)
        # -v: each case's name as it ends (the log says where a guest stood);
        # a case that hangs is failed after CASE_TIMEOUT, not the whole run, and a
        # guest that stops making output altogether is booted again once;
        # --durations: where a guest's time went (TCG makes every load count)
        args = ["-p", "no:cacheprovider", "-m", "matrix", "-v", "-rfs", f"--timeout={CASE_TIMEOUT}", "--durations=30",
                *files,
                f"--matrix-results={out / 'matrix.json'}", *pytest_args]
        command = (f"PYTHONDONTWRITEBYTECODE=1 {shlex.quote(str(VENV / 'bin' / 'python'))} -m pytest "
                   + " ".join(shlex.quote(a) for a in args))
        try:
            try:
                rc = boot(info, command, out, stall=STALL_TIMEOUT)
            except GuestStalled as exc:
                say(f"{exc}; booting it again, once (its log: {out}/stdout.stalled)")
                (out / "stdout").replace(out / "stdout.stalled")
                rc = boot(info, command, out, stall=STALL_TIMEOUT)
        except LabError as exc:
            say(str(exc))
            status = 1
            continue
        summary = (out / "stdout").read_text()
        start = next((summary.find(h) for h in ("slowest ", "short test summary") if h in summary), -1)
        sys.stdout.write(summary[start:][-20000:] if start >= 0 else summary[-6000:])
        if (out / "matrix.json").exists():
            data = json.loads((out / "matrix.json").read_text())
            data["kernel"] = info
            result.write_text(json.dumps(data, indent=1))
        if rc != 0:
            say(f"{info['name']}: the matrix failed (exit {rc}); output in {out}")
            status = 1
    status |= check_union(names)
    return status


def check_union(names: list[str]) -> int:
    """Every shipped variant attached and checked on at least one kernel of the lab, or the host."""
    sys.path.insert(0, str(ROOT / "tests"))
    from matrix_report import coverage_gaps, render_table  # noqa: E402  (tests/, beside the suite)
    runs = {}
    for name in names:
        path = LAB / "results" / f"{name}.json"
        if path.exists():
            runs[name] = json.loads(path.read_text())
    host = LAB / "results" / "host.json"
    if host.exists():
        runs["host"] = json.loads(host.read_text())
    print(render_table(runs))
    gaps = coverage_gaps(runs)
    for gap in gaps:
        say(f"never attached and checked on any kernel: {gap}")
    return 1 if gaps else 0


# -- BTF for kernels without /sys/kernel/btf/vmlinux ------------------------------

def refresh_btf(names: list[str]) -> int:
    """Copy each guest's /sys/kernel/btf/vmlinux into vmlinux/x86/btf/<release>.btf.xz (committed)."""
    dest = ROOT / "vmlinux" / "x86" / "btf"
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        info = fetch(name)
        out = LAB / "runs" / f"btf-{name}"
        target = out / "vmlinux.btf"
        rc = boot(info, f"cat /sys/kernel/btf/vmlinux > {shlex.quote(str(target))}", out)
        if rc != 0 or not target.exists():
            raise LabError(f"{name}: could not read the guest's BTF")
        packed = dest / f"{info['release']}.btf.xz"
        with open(packed, "wb") as fh:
            run(["xz", "-9", "-c", str(target)], stdout=fh)
        say(f"{name}: {packed.relative_to(ROOT)} ({packed.stat().st_size} bytes)")
    return 0


def main(argv: list[str]) -> int:
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="kernel_lab.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("fetch", "matrix", "btf"):
        sp = sub.add_parser(cmd)
        sp.add_argument("kernels", nargs="*", metavar="KERNEL", help=f"{', '.join(SUITES)} (default: all)")
    sp = sub.add_parser("run")
    sp.add_argument("kernel", choices=list(SUITES))
    sub.add_parser("list")
    sub.add_parser("report")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        say("run as root (apt, qemu, and the guest loads BPF programs)")
        return 2
    kernels = getattr(args, "kernels", None) or list(SUITES)
    unknown = [k for k in kernels if k not in SUITES]
    if unknown:
        p.error(f"unknown kernel {unknown[0]} (have: {', '.join(SUITES)})")
    LAB.mkdir(parents=True, exist_ok=True)
    try:
        if args.cmd == "fetch":
            for name in kernels:
                info = fetch(name)
                say(f"{name}: {info['package']} {info['version']} in {kernel_dir(name)}")
            return 0
        if args.cmd == "list":
            for name in SUITES:
                info = kernel_info(name)
                print(f"{name:5} {info['release'] + ' (' + info['version'] + ')' if info else 'not fetched'}")
            return 0
        if args.cmd == "run":
            if not rest:
                p.error("run: give the command after --")
            info = fetch(args.kernel)
            out = LAB / "runs" / f"run-{args.kernel}"
            rc = boot(info, " ".join(shlex.quote(a) for a in rest), out)
            sys.stdout.write((out / "stdout").read_text())
            sys.stderr.write((out / "stderr").read_text())
            return rc
        if args.cmd == "report":
            return check_union([n for n in SUITES if (LAB / "results" / f"{n}.json").exists()])
        if args.cmd == "btf":
            return refresh_btf(kernels)
        return matrix(kernels, rest)
    except (LabError, subprocess.CalledProcessError) as exc:
        say(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
