"""Cgroups, network namespaces and containers: what the kernel half's filters
(src/bpf/filter.h) are set to, and the labels of the events they let through.

    scope = Scope("tcpconnect", allowed, container=["web"], labels=True)
    scope.rodata()            # pt_by_cgroup, pt_netns, ... for the object
    scope.before_load(obj)    # BCC's pinned maps put in place of the object's
    scope.start(obj)          # fills pt_cgroups; follows containers from now on
    ...
    scope.stop()

Tracer (core/tracer.py) does this for every tool; a tool only says which
filters its object has (Tracer.SCOPE).

Cgroups are those of the unified (v2) hierarchy, the one the kernel's
cgroup ids and BPF helpers speak of, wherever it is mounted (/sys/fs/cgroup,
or /sys/fs/cgroup/unified on a hybrid host).  A cgroup's id is its
directory's inode number, its level the depth of its path (the root is 0).

Containers are found by the cgroups their runtimes make, and named by the
runtime's own state files where they are readable (no daemon is asked):

    podman      libpod-<id>[.scope]        /var/lib/containers/storage (names)
    docker      docker-<id>.scope, docker/<id>   /var/lib/docker/containers/<id>/config.v2.json
    containerd  cri-containerd-<id>.scope, nerdctl-<id>.scope, kubepods/.../<id>
                                           /run/containerd/io.containerd.runtime.v2.task/*/<id>/config.json
    cri-o       crio-<id>.scope            config.json annotations (storage userdata)
    nspawn      machine-<name>.scope       the name is in the path

A kubelet's cgroups (kubepods[-<qos>]-pod<uid>.slice, kubepods/<qos>/pod<uid>)
give the pod's UID; its name and namespace come from the runtime's
annotations (io.kubernetes.*), never from the Kubernetes API.

--container NAME|ID follows: a watcher thread (inotify on the cgroup tree,
and a rescan every RESCAN seconds in case inotify missed something) adds the
cgroup of each matching container that starts after the tool to the
kernel's set, and takes out those that are gone.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import pwd
import select
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass

from .errors import PytraceError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from .bpfobject import BpfObject

FILTERS = ("cgroup", "netns", "container", "cgroupmap", "mntnsmap")
MAX_LEVEL = 31                  # filter.h: PT_CGROUP_LEVELS - 1
MAX_CGROUPS = 1023              # filter.h: pt_cgroups holds them and the levels
RESCAN = 5.0                    # seconds between the watcher's full scans
WATCH_DEPTH = 6                 # cgroup directories watched below the root

STORAGE = ("/var/lib/containers/storage", "/run/containers/storage")
MAX_STATE_FILE = 64 << 20       # a runtime's JSON state file read whole: at most this
DOCKER = "/var/lib/docker/containers"
CONTAINERD = "/run/containerd/io.containerd.runtime.v2.task"


# -- cgroups ------------------------------------------------------------------------------

_mount: str | None = None


def cgroup2_mount() -> str:
    """Where the unified hierarchy is mounted (its root, not a namespace's view of part of it)."""
    global _mount
    if _mount is not None:
        return _mount
    found = None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2" and fields[3] == "/":
                    found = fields[4].replace("\\040", " ")
                    break
    except (OSError, ValueError):
        pass
    if found is None:
        raise PytraceError("no cgroup v2 hierarchy is mounted (cgroup filters and labels need it: "
                           "mount -t cgroup2 none /sys/fs/cgroup/unified)")
    _mount = found
    return found


@dataclass(frozen=True, slots=True)
class Cgroup:
    id: int
    path: str                   # from the hierarchy's root: "/", "/system.slice/x.service"

    @property
    def level(self) -> int:
        return 0 if self.path == "/" else self.path.count("/")

    @property
    def dir(self) -> str:
        return cgroup2_mount() + ("" if self.path == "/" else self.path)


def cgroup_at(path: str) -> Cgroup:
    """The cgroup of a directory of the hierarchy (absolute, or from its root)."""
    root = cgroup2_mount()
    full = os.path.normpath(path if path.startswith(root + "/") or path == root else root + "/" + path.lstrip("/"))
    if full != root and not full.startswith(root + "/"):
        raise UsageError(f"cgroup {path}: outside the cgroup v2 hierarchy ({root})")
    rel = full[len(root):] or "/"
    try:
        st = os.stat(full)
    except OSError as exc:
        raise UsageError(f"cgroup {path}: {exc.strerror} (cgroup v2 paths are under {root}, "
                         "or given from its root as in /proc/PID/cgroup)") from None
    if not os.path.isfile(os.path.join(full, "cgroup.procs")):
        raise UsageError(f"cgroup {path}: {full} is not a cgroup v2 directory")
    return Cgroup(st.st_ino, rel)


def cgroup_by_id(cgid: int) -> Cgroup | None:
    for found in walk_cgroups():
        if found.id == cgid:
            return found
    return None


def resolve_cgroup(ref: str | int) -> Cgroup:
    """--cgroup PATH|ID."""
    text = str(ref)
    if text.isdigit():
        found = cgroup_by_id(int(text))
        if found is None:
            raise UsageError(f"cgroup {text}: no cgroup v2 has that id")
        return found
    return cgroup_at(text)


def cgroup_of_pid(pid: int) -> Cgroup:
    """The unified-hierarchy cgroup of a process ("0::/path" in /proc/PID/cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return cgroup_at(line[3:].strip())
    except OSError as exc:
        raise PytraceError(f"process {pid}: {exc.strerror}") from None
    raise PytraceError(f"process {pid} has no cgroup v2")


def walk_cgroups(top: str = "/", depth: int = 64) -> Iterator[Cgroup]:
    """Every cgroup from top down (top first), to `depth` levels below it."""
    root = cgroup2_mount()
    stack = [(root + ("" if top == "/" else top), 0)]
    while stack:
        path, d = stack.pop()
        try:
            st = os.stat(path)
        except OSError:
            continue                # gone meanwhile
        yield Cgroup(st.st_ino, path[len(root):] or "/")
        if d >= depth:
            continue
        try:
            with os.scandir(path) as it:
                subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        stack.extend((p, d + 1) for p in sorted(subs, reverse=True))


# -- containers ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Container:
    runtime: str                # podman, docker, containerd, cri-o, nspawn
    id: str                     # the runtime's id (nspawn: the machine name)
    name: str | None
    cgroup: Cgroup
    pod_uid: str | None = None
    pod: str | None = None
    namespace: str | None = None

    @property
    def short(self) -> str:
        """What a CONTAINER column shows: the name, or 12 characters of the id."""
        return self.name or self.id[:12]


_HEX64 = "([0-9a-f]{64})"
_SCOPES = (                     # a container's own cgroup, by the last component of its path
    ("podman", re.compile(rf"libpod-(?!conmon-){_HEX64}(?:\.scope)?")),
    ("docker", re.compile(rf"docker-{_HEX64}\.scope")),
    ("containerd", re.compile(rf"(?:cri-containerd|nerdctl)-{_HEX64}\.scope")),
    ("cri-o", re.compile(rf"crio-(?!conmon-){_HEX64}(?:\.scope)?")),
    ("nspawn", re.compile(r"machine-(?!libpod)(.+)\.scope")),
)
_BARE = re.compile(_HEX64)      # cgroupfs drivers: docker/<id>, kubepods/<qos>/pod<uid>/<id>
_POD = re.compile(r"kubepods(?:-besteffort|-burstable)?-pod([0-9a-f_]{36})\.slice|pod([0-9a-f-]{36})")


def _unescape(unit: str) -> str:
    """systemd's unit name escaping undone (\\x2d is '-')."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), unit)


def classify(path: str) -> tuple[str, str, str | None] | None:
    """(runtime, id, pod uid) if path is a container's own cgroup, else None."""
    parts = path.strip("/").split("/")
    last = parts[-1]
    pod_uid = None
    for part in parts[:-1]:
        m = _POD.fullmatch(part)
        if m:
            pod_uid = (m.group(1) or m.group(2)).replace("_", "-")
    for runtime, pattern in _SCOPES:
        m = pattern.fullmatch(last)
        if m:
            if runtime == "nspawn" and (len(parts) < 2 or parts[-2] != "machine.slice"):
                continue
            ident = _unescape(m.group(1)) if runtime == "nspawn" else m.group(1)
            return runtime, ident, pod_uid
    if _BARE.fullmatch(last) and len(parts) >= 2:
        if parts[-2] == "docker":
            return "docker", last, None
        if pod_uid is not None:
            return _k8s_runtime(last), last, pod_uid
    return None


def _k8s_runtime(cid: str) -> str:
    if any(os.path.isdir(f"{d}/overlay-containers/{cid}") for d in STORAGE):
        return "cri-o"
    return "containerd"


def container_of(cg: Cgroup) -> Container | None:
    """The container whose cgroup cg is, or is below; None for others."""
    parts = cg.path.strip("/").split("/")
    for n in range(len(parts), 0, -1):
        path = "/" + "/".join(parts[:n])
        found = classify(path)
        if found is not None:
            runtime, ident, pod_uid = found
            own = cg if n == len(parts) else _stat_cgroup(path)
            if own is None:
                return None
            return _describe(runtime, ident, own, pod_uid)
    return None


def _stat_cgroup(path: str) -> Cgroup | None:
    try:
        return Cgroup(os.stat(cgroup2_mount() + path).st_ino, path)
    except OSError:
        return None


class _JsonCache:
    """JSON files read again only when they change (mtime and size)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[tuple[int, int], Any]] = {}

    def get(self, path: str) -> Any:
        try:
            st = os.stat(path)
        except OSError:
            self._files.pop(path, None)
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._files.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        data = None
        try:
            # a user's own file (rootless podman's state): not through a link,
            # not a FIFO that would hang the reader, not without end
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as fh:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_STATE_FILE:
                    data = json.loads(fh.read(MAX_STATE_FILE + 1))
        except (OSError, ValueError):
            data = None
        self._files[path] = (stamp, data)
        return data


_json = _JsonCache()
_json_lock = threading.Lock()


def _annotations(path: str) -> dict[str, str]:
    data = _json.get(path)
    ann = data.get("annotations") if isinstance(data, dict) else None
    return ann if isinstance(ann, dict) else {}


_USER_MANAGER = re.compile(r"user@(\d+)\.service")


def podman_storage(path: str) -> tuple[str, ...]:
    """Where the podman that made the container of this cgroup path keeps
    its state: root's, or a rootless podman's (its containers live under
    the user's systemd, user@UID.service), that user's, where podman puts it
    by default (~/.local/share/containers/storage)."""
    for part in path.strip("/").split("/"):
        m = _USER_MANAGER.fullmatch(part)
        if m:
            try:
                home = pwd.getpwuid(int(m.group(1))).pw_dir
            except (KeyError, OverflowError):
                return ()
            return (f"{home}/.local/share/containers/storage",)
    return STORAGE


def _storage_name(cid: str, storage: tuple[str, ...] = STORAGE) -> str | None:
    for base in storage:
        data = _json.get(f"{base}/overlay-containers/containers.json")
        if isinstance(data, list):
            for entry in data:
                if isinstance(entry, dict) and entry.get("id") == cid and entry.get("names"):
                    return str(entry["names"][0])
    return None


def _storage_annotations(cid: str) -> dict[str, str]:
    for base in STORAGE:
        ann = _annotations(f"{base}/overlay-containers/{cid}/userdata/config.json")
        if ann:
            return ann
    return {}


def _containerd_annotations(cid: str) -> dict[str, str]:
    try:
        namespaces = os.listdir(CONTAINERD)
    except OSError:
        return {}
    for ns in namespaces:
        ann = _annotations(f"{CONTAINERD}/{ns}/{cid}/config.json")
        if ann:
            return ann
    return {}


def _describe(runtime: str, ident: str, cg: Cgroup, pod_uid: str | None) -> Container:
    """A container with what its runtime's state files say of it."""
    name = pod = namespace = None
    with _json_lock:            # the watcher thread and the labeller share the cache
        if runtime == "nspawn":
            name = ident
        elif runtime == "podman":
            name = _storage_name(ident, podman_storage(cg.path or ""))
        elif runtime == "cri-o":
            ann = _storage_annotations(ident)
            name = ann.get("io.kubernetes.container.name") or _storage_name(ident)
            pod, namespace = ann.get("io.kubernetes.pod.name"), ann.get("io.kubernetes.pod.namespace")
        elif runtime == "docker":
            data = _json.get(f"{DOCKER}/{ident}/config.v2.json")
            if isinstance(data, dict):
                name = str(data.get("Name") or "").lstrip("/") or None
                labels = (data.get("Config") or {}).get("Labels") or {}
                pod, namespace = labels.get("io.kubernetes.pod.name"), labels.get("io.kubernetes.pod.namespace")
                name = labels.get("io.kubernetes.container.name") or name
        elif runtime == "containerd":
            ann = _containerd_annotations(ident)
            name = ann.get("io.kubernetes.cri.container-name") or ann.get("nerdctl/name")
            pod = ann.get("io.kubernetes.cri.sandbox-name")
            namespace = ann.get("io.kubernetes.cri.sandbox-namespace")
    return Container(runtime, ident, name, cg, pod_uid, pod, namespace)


def containers(depth: int = 12) -> list[Container]:
    """The containers running now (their own cgroups, not those below)."""
    found = []
    for cg in walk_cgroups(depth=depth):
        hit = classify(cg.path)
        if hit is not None:
            found.append(_describe(hit[0], hit[1], cg, hit[2]))
    return found


def matches(selector: str, c: Container) -> bool:
    """--container: the name, the whole id, or a prefix of the id (4+ hex digits)."""
    if selector == c.name or selector == c.id:
        return True
    return len(selector) >= 4 and c.runtime != "nspawn" and c.id.startswith(selector.lower())


# -- labels ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Labels:
    """Whose an event was, as far as it can be told: its cgroup (id, path),
    network namespace, and the container and pod that cgroup belongs to."""
    cgroup_id: int
    cgroup: str | None          # path from the hierarchy's root; None: gone before it was seen
    netns: int
    runtime: str | None = None
    container_id: str | None = None
    container: str | None = None
    pod: str | None = None
    namespace: str | None = None
    pod_uid: str | None = None

    @property
    def short(self) -> str:
        """The CONTAINER column: the container's name (or short id), else "-"."""
        if self.container:
            return self.container
        return self.container_id[:12] if self.container_id else "-"

    # what a sink that tells tags from fields (InfluxDB) takes as tags: the names, not the ids
    TAGS = ("cgroup", "runtime", "container_id", "container", "pod", "namespace", "pod_uid")

    @classmethod
    def from_text(cls, d: dict[str, str]) -> Labels:
        """The labels again from to_dict()'s values as text (a snapshot's labels)."""
        return cls(int(d.get("cgroup_id") or 0), d.get("cgroup"), int(d.get("netns") or 0),
                   *(d.get(n) for n in ("runtime", "container_id", "container", "pod", "namespace", "pod_uid")))

    def to_dict(self) -> dict[str, Any]:
        return {"cgroup_id": self.cgroup_id, "cgroup": self.cgroup, "netns": self.netns,
                "runtime": self.runtime, "container_id": self.container_id, "container": self.container,
                "pod": self.pod, "namespace": self.namespace, "pod_uid": self.pod_uid}


class Labeler:
    """cgroup id -> Labels, cached.  An id not seen yet costs one walk of the
    hierarchy, at most every MISS_INTERVAL seconds (a cgroup that came and
    went between two walks keeps its id and no path)."""

    MISS_INTERVAL = 0.5

    def __init__(self) -> None:
        self._paths: dict[int, str] = {}
        self._labels: dict[tuple[int, int], Labels] = {}
        self._walked = 0.0
        self._lock = threading.Lock()

    def learn(self, cg: Cgroup) -> None:
        with self._lock:
            self._paths[cg.id] = cg.path

    def path(self, cgid: int) -> str | None:
        path = self._paths.get(cgid)
        if path is None and cgid and time.monotonic() - self._walked >= self.MISS_INTERVAL:
            with self._lock:
                try:
                    self._paths.update((cg.id, cg.path) for cg in walk_cgroups())
                except PytraceError:        # no cgroup2 mounted: ids without paths
                    pass
                self._walked = time.monotonic()
                path = self._paths.get(cgid)
        return path

    def labels(self, cgid: int, netns: int = 0) -> Labels:
        hit = self._labels.get((cgid, netns))
        if hit is not None:
            return hit
        path = self.path(cgid)
        c = container_of(Cgroup(cgid, path)) if path else None
        if c is None:
            labels = Labels(cgid, path, netns)
        else:
            labels = Labels(cgid, path, netns, c.runtime, None if c.runtime == "nspawn" else c.id, c.name,
                            c.pod, c.namespace, c.pod_uid)
        if path is not None:    # an unknown id may be known at the next walk
            if len(self._labels) > 65536:
                self._labels.clear()
            self._labels[cgid, netns] = labels
        return labels


# -- inotify -------------------------------------------------------------------------------------

IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_ISDIR, IN_Q_OVERFLOW, IN_IGNORED = \
    0x100, 0x200, 0x400, 0x40000000, 0x4000, 0x8000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_EVENT = struct.Struct("iIII")


class _Inotify:
    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.paths: dict[int, str] = {}

    def add(self, path: str) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_CREATE | IN_DELETE | IN_DELETE_SELF)
        if wd >= 0:
            self.paths[wd] = path

    def read(self) -> list[tuple[int, str | None]]:
        """(mask, path) of what happened; path None on a queue overflow."""
        out = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            off = 0
            while off + _EVENT.size <= len(buf):
                wd, mask, _cookie, size = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size:off + _EVENT.size + size].rstrip(b"\0").decode(errors="replace")
                off += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    out.append((mask, None))
                elif mask & IN_IGNORED:
                    self.paths.pop(wd, None)
                elif wd in self.paths:
                    base = self.paths[wd]
                    out.append((mask, f"{base}/{name}" if name else base))

    def close(self) -> None:
        os.close(self.fd)


# -- what a tracer is restricted to ------------------------------------------------------------

class Scope:
    """The filters of one tracer (filter.h), resolved, and its labeller.

    cgroup     path or id (or a list): those cgroups and their descendants
    netns      `ip netns` name, path or inode (int)
    container  a name or id (or a list), followed as containers come and go
    cgroupmap  path of a pinned BPF hash map of cgroup ids (BCC's --cgroupmap)
    mntnsmap   path of a pinned BPF hash map of mount namespace inodes (--mntnsmap)
    labels     events carry their cgroup id, netns and container (Labels)
    """

    def __init__(self, tool: str, allowed: Iterable[str], *, cgroup: Any = None, netns: Any = None,
                 container: Any = None, cgroupmap: str | None = None, mntnsmap: str | None = None,
                 labels: bool = False):
        allowed = set(allowed)
        given = {"cgroup": cgroup, "netns": netns, "container": container, "cgroupmap": cgroupmap,
                 "mntnsmap": mntnsmap}
        for key, value in given.items():
            if value not in (None, "", [], ()) and key not in allowed:
                raise UsageError(f"{tool}: no {key} filter (its events belong to no "
                                 f"{'task' if key == 'mntnsmap' else 'task or socket'} it could be told by)")
        if labels and "labels" not in allowed:
            raise UsageError(f"{tool}: its output has no per-event lines to label")
        self.tool = tool
        self.cgroups = [resolve_cgroup(c) for c in _listed(cgroup)]
        self.selectors = [str(s) for s in _listed(container)]
        for s in self.selectors:
            if not s or len(s) > 255 or "/" in s:
                raise UsageError(f"--container {s!r}: a container name or id")
        for cg in self.cgroups:
            if cg.level > MAX_LEVEL:
                raise UsageError(f"cgroup {cg.path}: deeper than {MAX_LEVEL} levels")
        self.netns = _netns_inode(netns) if netns not in (None, "", 0) else 0
        self.cgroupmap, self.mntnsmap = cgroupmap or None, mntnsmap or None
        self.labels = labels
        self.labeler = Labeler() if labels else None
        self.followed: dict[int, Container] = {}    # cgroup id -> the container (--container)
        self.on_follow: Callable[[Container, bool], None] | None = None
        self._map = None
        self._members: dict[int, int] = {}          # cgroup id -> level, in pt_cgroups
        self._thread: threading.Thread | None = None
        self._stop_r = self._stop_w = -1
        self._lock = threading.Lock()

    @property
    def pinned(self) -> bool:
        return bool(self.cgroupmap or self.mntnsmap)

    def rodata(self) -> dict[str, Any]:
        """filter.h's switches that are not at their defaults."""
        ro: dict[str, Any] = {}
        if self.cgroups or self.selectors:
            ro["pt_by_cgroup"] = True
        if self.netns:
            ro["pt_netns"] = self.netns
        if self.cgroupmap:
            ro["pt_by_cgroupmap"] = True
        if self.mntnsmap:
            ro["pt_by_mntnsmap"] = True
        if ro:
            ro["pt_on"] = True
        if self.labels:
            ro["pt_labels"] = True
        return ro

    def before_load(self, obj: BpfObject) -> None:
        """The user's pinned maps in place of the object's own (bpf_map__reuse_fd)."""
        for path, name in ((self.cgroupmap, "pt_cgroupmap"), (self.mntnsmap, "pt_mntnsmap")):
            if path:
                _reuse_pinned(obj, name, path)

    def start(self, obj: BpfObject) -> None:
        if not (self.cgroups or self.selectors):
            return
        self.stop()                 # one object at a time: a second open() replaces the first
        self._map = obj.map("pt_cgroups")
        for cg in self.cgroups:
            self._add(cg)
        if self.selectors:
            self._follow(containers())
            for sel in self.selectors:
                if not any(matches(sel, c) for c in self.followed.values()):
                    import logging      # no handler: Python's last resort prints it on stderr
                    logging.getLogger("pytrace.containers").warning(
                        "%s: no container '%s' yet; it is traced once it starts", self.tool, sel)
                    sys.stderr.flush()
            self._start_watch()
        self._write_levels()

    def stop(self) -> None:
        """The watcher stopped; the set forgotten (a tracer opened again starts afresh)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            os.write(self._stop_w, b"x")
            thread.join(5)
            os.close(self._stop_r)
            os.close(self._stop_w)
        with self._lock:
            self._map = None
            self._members.clear()
            self.followed.clear()

    # -- the kernel's set ------------------------------------------------------------------------
    def _add(self, cg: Cgroup) -> None:
        if cg.id in self._members:
            return
        if len(self._members) >= MAX_CGROUPS:
            raise PytraceError(f"{self.tool}: more than {MAX_CGROUPS} cgroups to follow")
        self._map.update(struct.pack("<Q", cg.id), struct.pack("<I", 1))
        self._members[cg.id] = cg.level
        if self.labeler is not None:
            self.labeler.learn(cg)

    def _remove(self, cgid: int) -> None:
        if self._members.pop(cgid, None) is not None:
            self._map.delete(struct.pack("<Q", cgid))

    def _write_levels(self) -> None:
        mask = 0
        for level in self._members.values():
            mask |= 1 << level
        self._map.update(struct.pack("<Q", 0), struct.pack("<I", mask))

    # -- following containers ------------------------------------------------------------------
    def _wanted(self, c: Container) -> bool:
        return any(matches(s, c) for s in self.selectors)

    def _follow(self, now: list[Container]) -> bool:
        """Make the set the matching containers of `now` (plus the fixed cgroups); True if it changed."""
        with self._lock:
            if self._map is None:
                return False
            want = {c.cgroup.id: c for c in now if self._wanted(c) and c.cgroup.level <= MAX_LEVEL}
            fixed = {cg.id for cg in self.cgroups}
            changed = False
            for cgid in [i for i in self.followed if i not in want]:
                gone = self.followed.pop(cgid)
                if cgid not in fixed:
                    self._remove(cgid)
                changed = True
                if self.on_follow is not None:
                    self.on_follow(gone, False)
            for cgid, c in want.items():
                if cgid not in self.followed:
                    self._add(c.cgroup)
                    self.followed[cgid] = c
                    changed = True
                    if self.on_follow is not None:
                        self.on_follow(c, True)
            if changed:
                self._write_levels()
            return changed

    def _start_watch(self) -> None:
        self._stop_r, self._stop_w = os.pipe()
        try:
            ino = _Inotify()
        except OSError:
            ino = None              # no inotify: the rescans alone follow
        self._thread = threading.Thread(target=self._watch, args=(ino,), name=f"{self.tool}-containers",
                                        daemon=True)
        self._thread.start()

    def _watch(self, ino: _Inotify | None) -> None:
        root = cgroup2_mount()
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        if ino is not None:
            poller.register(ino.fd, select.POLLIN)
            self._watch_tree(ino, root, 0)
        last = time.monotonic()
        try:
            while True:
                timeout = max(0.0, RESCAN - (time.monotonic() - last))
                ready = {fd for fd, _ in poller.poll(timeout * 1000)}
                if self._stop_r in ready:
                    return
                rescan = time.monotonic() - last >= RESCAN
                if ino is not None and ino.fd in ready:
                    for mask, path in ino.read():
                        if path is None:
                            rescan = True
                        elif mask & IN_CREATE and mask & IN_ISDIR:
                            self._created(ino, path)
                        elif mask & IN_DELETE and mask & IN_ISDIR:
                            self._deleted(path[len(root):])
                if rescan:
                    self._follow(containers())
                    last = time.monotonic()
        except Exception:           # the tracer goes on with what it has; the rescans stop
            return
        finally:
            if ino is not None:
                ino.close()

    def _watch_tree(self, ino: _Inotify, path: str, depth: int) -> None:
        root = cgroup2_mount()
        ino.add(path)
        if depth >= WATCH_DEPTH or classify(path[len(root):] or "/") is not None:
            return                  # inside a container: its descendants are its own
        try:
            with os.scandir(path) as it:
                subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for sub in subs:
            self._watch_tree(ino, sub, depth + 1)

    def _created(self, ino: _Inotify, path: str) -> None:
        root = cgroup2_mount()
        rel = path[len(root):]
        hit = classify(rel)
        if hit is None:
            if rel.count("/") <= WATCH_DEPTH:
                self._watch_tree(ino, path, rel.count("/"))
            return
        cg = _stat_cgroup(rel)
        if cg is None:
            return
        c = _describe(hit[0], hit[1], cg, hit[2])
        if self._wanted(c):
            self._follow([*self.followed.values(), c])

    def _deleted(self, rel: str) -> None:
        for cgid, c in list(self.followed.items()):
            if c.cgroup.path == rel:
                self._follow([k for i, k in self.followed.items() if i != cgid])


def _listed(value: Any) -> list:
    if value in (None, "", 0):
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _netns_inode(ref: Any) -> int:
    if isinstance(ref, int) or str(ref).isdigit():
        inode = int(ref)
        if not 1 <= inode <= 0xFFFFFFFF:
            raise UsageError(f"netns {ref}: not a namespace inode")
        return inode
    from .netattach import netns_inode
    return netns_inode(str(ref))


BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH = 1, 9


def _reuse_pinned(obj: BpfObject, name: str, path: str) -> None:
    """Put the user's pinned map at `path` in place of the object's map `name`."""
    from . import libbpf
    lb = libbpf.lib()
    try:
        fd = _obj_get(path)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror} (a BPF map pinned in bpffs, as BCC's "
                         f"--{name[3:]} takes)") from None
    try:
        info = _map_info(fd)
        if info is None:
            raise UsageError(f"{path}: not a BPF map")
        mtype, key_size = info
        if mtype not in (BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH) or key_size != 8:
            raise UsageError(f"{path}: a hash map with 8-byte keys is wanted (this one has type {mtype}, "
                             f"{key_size}-byte keys)")
        libbpf.check(lb.bpf_map__reuse_fd(obj.map(name).ptr, fd), f"reuse {path}")
    finally:
        os.close(fd)        # libbpf keeps its own duplicate


_NR_BPF = 321               # x86_64
_BPF_OBJ_GET = 7


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(_NR_BPF, cmd, attr, len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _obj_get(path: str) -> int:
    raw = os.fsencode(path) + b"\0"
    buf = ctypes.create_string_buffer(raw)
    attr = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(buf), 0, 0), 16)
    return _bpf(_BPF_OBJ_GET, attr)


def _map_info(fd: int) -> tuple[int, int] | None:
    """(type, key_size) of a map fd (from its fdinfo), None if fd is not a map."""
    fields = {}
    try:
        with open(f"/proc/self/fdinfo/{fd}") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return None
    if "map_type" not in fields:
        return None
    return int(fields["map_type"]), int(fields.get("key_size", 0))
