"""Real containers for test_containers.py: podman and systemd-nspawn from
Debian, on the cached Debian root of debroot.py (no image registry), each
running ctrload.py's traffic on a port of its own, beside the same traffic
on the host.

    with Lab() as lab:
        a = lab.podman("pytrace-a", 41101)      # podman run --rootfs ROOT:O
        n = lab.nspawn("pytrace-n", 41105)      # systemd-nspawn --volatile=overlay
        h = lab.host(41103)
        a.pids(), a.cgroup, a.netns, ...
        lab.stop(a)

podman runs its containers with runc: crun refuses a hybrid cgroup host (a
cgroup2 hierarchy with a controller beside v1 ones), and runc joins the
unified hierarchy there too, which is where the kernel's cgroup ids are.
Where systemd is not PID 1 (no machined), a systemd-nspawn container is put
where systemd would put it, machine.slice/machine-NAME.scope, and nspawn
itself makes its payload/ and supervisor/ below (--keep-unit).

Everything made is removed on close(), even after a failure: the
containers, the cgroups this lab or the runtimes made for it (libpod_parent
in every hierarchy where it was not there before, the machine scopes), and
nspawn's per-machine state under /run/systemd/nspawn.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pytrace.core import containers
from pytrace.core.containers import Cgroup

from debroot import debian_root

TESTS = Path(__file__).resolve().parent
PREFIX = "pytrace-"              # every container this lab makes is named so
START_TIMEOUT = 60
V1_ROOT = "/sys/fs/cgroup"


class Box:
    """One running participant: a container, or the host's own traffic."""

    def __init__(self, name: str, runtime: str | None, port: int, ident: str | None, pid: int,
                 proc: subprocess.Popen | None = None):
        self.name, self.runtime, self.port, self.id, self.pid, self.proc = name, runtime, port, ident, pid, proc
        self.netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        self.mntns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
        self.leaf = containers.cgroup_of_pid(pid)           # where its traffic runs
        self.cgroup = self._own_cgroup()                     # the container's own cgroup

    def _own_cgroup(self) -> Cgroup:
        if self.runtime == "nspawn":                         # .../machine-NAME.scope/payload
            return containers.cgroup_at(self.leaf.path.rsplit("/", 1)[0])
        return self.leaf

    def pids(self) -> set[int]:
        """Every process in the container's cgroups now (the host's: its one process)."""
        if self.runtime is None:
            return {self.pid}
        out: set[int] = set()
        for cg in containers.walk_cgroups(self.cgroup.path):
            try:
                with open(os.path.join(cg.dir, "cgroup.procs")) as fh:
                    out.update(int(x) for x in fh.read().split())
            except OSError:
                continue
        return out

    def __repr__(self) -> str:
        return f"Box({self.name}, {self.runtime}, port {self.port}, pid {self.pid})"


class Lab:
    def __init__(self):
        self.root = debian_root()
        self.boxes: list[Box] = []
        self.made_dirs: list[str] = []          # cgroups to remove, deepest first at close
        self.ever_made: set[str] = set()
        self._runc = ["--runtime", "runc"] if shutil.which("runc") else []
        self._v1_before = {h: os.path.isdir(f"{V1_ROOT}/{h}/libpod_parent") for h in _hierarchies()}
        self._unified_before = os.path.isdir(f"{containers.cgroup2_mount()}/libpod_parent")
        self._machine_slice_before = os.path.isdir(f"{containers.cgroup2_mount()}/machine.slice")

    def __enter__(self) -> Lab:
        self._remove_stale()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- participants ------------------------------------------------------------------------
    def podman(self, name: str, port: int) -> Box:
        if not shutil.which("podman"):
            pytest.fail("podman is not installed (scripts/setup.sh installs it)")
        # ulimits within this host's hard limits (podman's defaults may exceed them)
        cmd = ["podman", *self._runc, "run", "-d", "--name", name, "--network", "none",
               "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
               "-v", f"{TESTS}:/ptc:ro", "--rootfs", f"{self.root}:O",
               "python3", "/ptc/ctrload.py", str(port)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT)
        if proc.returncode != 0:
            self._podman_rm(name)
            pytest.fail(f"podman run {name} failed: {proc.stderr.strip()[-1500:]}")
        info = json.loads(subprocess.run(["podman", "inspect", name], capture_output=True, text=True,
                                         timeout=START_TIMEOUT, check=True).stdout)[0]
        box = Box(name, "podman", port, info["Id"], info["State"]["Pid"])
        self.boxes.append(box)
        self._wait_listening(box)
        return box

    def nspawn(self, name: str, port: int) -> Box:
        if not shutil.which("systemd-nspawn"):
            pytest.fail("systemd-nspawn is not installed (package systemd-container; scripts/setup.sh)")
        scope = self._mkdir_cgroup("machine.slice", f"machine-{name}.scope")
        for sub in ("payload", "supervisor"):           # made by nspawn: removed by us
            self.made_dirs.append(f"{scope}/{sub}")
            self.ever_made.add(f"{scope}/{sub}")
        script = ('echo $$ > "$1/cgroup.procs" && shift && exec "$@"')
        cmd = ["sh", "-c", script, "sh", f"{containers.cgroup2_mount()}{scope}",
               "systemd-nspawn", "--register=no", "--keep-unit", "-q", "--private-network",
               "-M", name, "-D", str(self.root), "--volatile=overlay", f"--bind-ro={TESTS}:/ptc",
               "python3", "/ptc/ctrload.py", str(port)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        pid = self._wait_pid_in(f"{scope}/payload", proc, name)
        box = Box(name, "nspawn", port, None, pid, proc)
        self.boxes.append(box)
        self._wait_listening(box)
        return box

    def host(self, port: int) -> Box:
        proc = subprocess.Popen(["python3", str(TESTS / "ctrload.py"), str(port)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        box = Box("host", None, port, None, proc.pid, proc)
        self.boxes.append(box)
        self._wait_listening(box)
        return box

    def in_cgroup(self, parts: tuple[str, ...], port: int) -> Box:
        """The host's traffic in a cgroup of our own making, at the path parts
        (e.g. laid out as a kubelet and containerd lay a pod's container)."""
        path = self._mkdir_cgroup(*parts)
        proc = subprocess.Popen(["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh",
                                 f"{containers.cgroup2_mount()}{path}", "python3", str(TESTS / "ctrload.py"),
                                 str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        inside = lambda: containers.cgroup_of_pid(proc.pid).path == path     # noqa: E731
        deadline = time.monotonic() + START_TIMEOUT
        while not inside() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        box = Box(parts[-1], None, port, None, proc.pid, proc)
        self.boxes.append(box)
        self._wait_listening(box)
        return box

    def idle_cgroup(self, name: str) -> Cgroup:
        """An empty cgroup of our own (a filter on it must pass nothing)."""
        return containers.cgroup_at(self._mkdir_cgroup(name))

    def stop(self, box: Box) -> None:
        if box in self.boxes:
            self.boxes.remove(box)
        if box.runtime == "podman":
            self._podman_rm(box.name)
        elif box.proc is not None:
            _terminate(box.proc)

    def close(self) -> None:
        while self.boxes:
            self.stop(self.boxes[-1])
        for path in sorted(set(self.made_dirs), key=lambda p: -p.count("/")):
            _rmdir_wait(f"{containers.cgroup2_mount()}{path}")
        self.made_dirs.clear()
        self._remove_runtime_leftovers()

    # -- helpers -----------------------------------------------------------------------------------
    def _mkdir_cgroup(self, *parts: str) -> str:
        path = ""
        for part in parts:
            path += "/" + part
            full = containers.cgroup2_mount() + path
            if not os.path.isdir(full):
                os.mkdir(full)
                self.made_dirs.append(path)
                self.ever_made.add(path)
        return path

    def _wait_pid_in(self, cgroup: str, proc: subprocess.Popen, name: str) -> int:
        """The container's python3, once it runs in cgroup (nspawn's payload)."""
        procs = f"{containers.cgroup2_mount()}{cgroup}/cgroup.procs"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"systemd-nspawn {name} ended ({proc.returncode}): {err[-1500:]}")
            try:
                with open(procs) as fh:
                    for pid in map(int, fh.read().split()):
                        if _comm(pid) == "python3":
                            return pid
            except OSError:
                pass
            time.sleep(0.05)
        _terminate(proc)
        pytest.fail(f"systemd-nspawn {name}: no python3 in {cgroup} after {START_TIMEOUT}s")

    def _wait_listening(self, box: Box) -> None:
        want = f":{box.port:04X} "
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{box.pid}/net/tcp") as fh:
                    if any(want in line and line.split()[3] == "0A" for line in fh):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"{box.name}: nothing listens on port {box.port} after {START_TIMEOUT}s")

    def _podman_rm(self, name: str) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=START_TIMEOUT)

    def _remove_stale(self) -> None:
        """What a killed earlier run left: containers named PREFIX*, empty machine scopes."""
        if shutil.which("podman"):
            names = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                                   text=True, timeout=START_TIMEOUT).stdout.split()
            for name in names:
                if name.startswith(PREFIX):
                    self._podman_rm(name)
        machines = f"{containers.cgroup2_mount()}/machine.slice"
        if os.path.isdir(machines):
            for entry in os.listdir(machines):
                if entry.startswith(f"machine-{PREFIX}") and entry.endswith(".scope"):
                    for sub in ("payload", "supervisor", ""):
                        _rmdir_wait(os.path.join(machines, entry, sub).rstrip("/"), timeout=1)

    def _remove_runtime_leftovers(self) -> None:
        """The runtimes' cgroups and state that exist only because of this lab."""
        for h, existed in self._v1_before.items():
            if not existed:
                for path in (f"{V1_ROOT}/{h}/libpod_parent/conmon", f"{V1_ROOT}/{h}/libpod_parent"):
                    _rmdir_wait(path, timeout=2)
        if not self._unified_before:
            _rmdir_wait(f"{containers.cgroup2_mount()}/libpod_parent/conmon", timeout=2)
            _rmdir_wait(f"{containers.cgroup2_mount()}/libpod_parent", timeout=2)
        if not self._machine_slice_before:
            _rmdir_wait(f"{containers.cgroup2_mount()}/machine.slice", timeout=2)
        for sub in ("propagate", "locks"):      # nspawn's own per-machine state, if it left any
            base = f"/run/systemd/nspawn/{sub}"
            if os.path.isdir(base):
                for entry in os.listdir(base):
                    if PREFIX in entry:
                        shutil.rmtree(os.path.join(base, entry), ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What close() should have removed and is still there (empty list: all gone)."""
        left = []
        if shutil.which("podman"):
            names = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                                   text=True, timeout=START_TIMEOUT).stdout.split()
            left += [f"container {n}" for n in names if n.startswith(PREFIX)]
        for cg in containers.walk_cgroups(depth=3):
            if PREFIX in cg.path:
                left.append(f"cgroup {cg.path}")
        left += [f"cgroup {p}" for p in sorted(self.ever_made)
                 if os.path.isdir(f"{containers.cgroup2_mount()}{p}") and f"cgroup {p}" not in left]
        if not self._unified_before and os.path.isdir(f"{containers.cgroup2_mount()}/libpod_parent"):
            left.append("cgroup /libpod_parent")
        for h, existed in self._v1_before.items():
            if not existed and os.path.isdir(f"{V1_ROOT}/{h}/libpod_parent"):
                left.append(f"cgroup {h}:/libpod_parent")
        return left


def _hierarchies() -> list[str]:
    """The cgroup v1 hierarchies mounted under /sys/fs/cgroup (none on a pure v2 host)."""
    out = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup" and fields[4].startswith(V1_ROOT + "/"):
                    out.append(fields[4][len(V1_ROOT) + 1:])
    except (OSError, ValueError):
        pass
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (nspawn stops its container on it), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _rmdir_wait(path: str, timeout: float = 10.0) -> None:
    """rmdir a cgroup once its last task is gone (an exiting task lingers briefly)."""
    deadline = time.monotonic() + timeout
    while os.path.isdir(path):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)
