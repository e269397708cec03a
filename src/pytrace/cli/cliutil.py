"""What every tool's command line shares: parser, argument types, output loop.

Kept apart from cli.py so a tool module can import it without pulling in the
whole dispatcher, and so the per-event path stays in one place.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from ..core.errors import PytraceError, UsageError
from ..core.net import AF_INET, AF_INET6, parse_addr, parse_ports
# The stop machinery lives in core/stops; its names stay importable from here
from ..core.stops import Terminate, hold_stops, install_signal_handlers, release_stops  # noqa: F401

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~3 ms of start-up: its names are for type checkers only
    import argparse
    from collections.abc import Callable, Iterable
    from typing import Any, TextIO


def bad_value(message: str) -> Exception:
    """What an argparse type converter raises.  argparse is imported here, not
    at the top: it is loaded whenever a converter runs, and a tool whose
    arguments were parsed before (cli/prefetch) never loads it at all."""
    import argparse
    return argparse.ArgumentTypeError(message)


def ports(flag: str) -> Callable[[str], list[int]]:
    def conv(text: str) -> list[int]:
        try:
            return parse_ports(text, flag)
        except UsageError as exc:
            raise bad_value(str(exc)) from None
    conv.__name__ = "port list"
    return conv


def port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise bad_value(f"'{text}' is not a port number (1-65535)")
    return int(text)


def address(flag: str) -> Callable[[str], tuple[int, bytes]]:
    def conv(text: str) -> tuple[int, bytes]:
        try:
            return parse_addr(text, flag)
        except UsageError as exc:
            raise bad_value(str(exc)) from None
    conv.__name__ = "address"
    return conv


# Every number a command line takes has an upper bound, shown in -h (the
# parser's HelpFormatter appends a type's range_text): a value that the kernel
# would take modulo 2**32, a map size that would make it allocate gigabytes,
# or a time that overflows a C timeout is refused as a usage error before
# anything is loaded.
INT_MAX = 2**31 - 1         # what fits a C int, a u32 and every kernel size field
MAX_SECONDS = 366 * 86400   # -i/-d: a year (time.sleep and poll timeouts stay far from overflowing)
MAX_COUNT = 1_000_000_000   # -c/-n: how many intervals or outputs
PID_MAX_LIMIT = 4194304     # include/linux/threads.h: no kernel has larger PIDs
NETNS_INODE_MAX = 0xffffffff    # a namespace's inode number is an unsigned int in the kernel


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:      # also the 4300-digit limit of int()
        raise bad_value(f"'{text[:40]}' is not a whole number") from None


def int_range(low: int, high: int, what: str = "number") -> Callable[[str], int]:
    """An argparse type for a whole number in [low, high] (documented in -h)."""
    def conv(text: str) -> int:
        value = _whole(text)
        if value < low:
            raise bad_value(f"'{text}' must be greater than 0" if low == 1 else
                            f"'{text}' must not be negative" if low == 0 else f"'{text}' is less than {low}")
        if value > high:
            raise bad_value(f"'{text}' is more than {high}, the most this takes")
        return value
    conv.__name__ = what
    conv.range_text = f"{low}-{high}"   # type: ignore[attr-defined]
    return conv


positive_int = int_range(1, INT_MAX)
nonneg_int = int_range(0, INT_MAX)
seconds = int_range(1, MAX_SECONDS, "seconds")          # -i/--interval, -d/--duration
intervals = int_range(1, MAX_COUNT, "count")            # -c/-n/count: how many intervals (outputs)
netns_inode = int_range(1, NETNS_INODE_MAX, "inode")    # --netns-id


def map_size(high: int) -> Callable[[str], int]:
    """An argparse type for a BPF map's number of entries, at most high: the
    kernel takes max_entries as a u32 and allocates what it is told."""
    return int_range(1, high, "entries")


# --stack-storage-size: a stack is 127 u64 return addresses, ~1 KiB; 64 MiB at most
stack_storage = map_size(65536)


def pid_max() -> int:
    """The kernel's largest PID now (/proc/sys/kernel/pid_max)."""
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return PID_MAX_LIMIT


def process_id(text: str) -> int:
    """An argparse type for a PID: 1 up to the kernel's pid_max."""
    value = _whole(text)
    if value < 1 or value > PID_MAX_LIMIT or (checking_host() and value > pid_max()):
        raise bad_value(f"'{text}' is not a PID (1 up to the kernel's pid_max, {pid_max()})")
    return value


process_id.range_text = "1-pid_max"    # type: ignore[attr-defined]


def _readable_head(text: str, what: str, size: int) -> bytes:
    """The first bytes of a regular file the user named, or a usage error."""
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)     # a FIFO must not hang us
    except OSError as exc:
        raise bad_value(f"'{text}': {exc.strerror} ({what})") from None
    try:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise bad_value(f"'{text}' is not a file ({what})")
        return os.read(fd, size)
    except OSError as exc:
        raise bad_value(f"'{text}': {exc.strerror} ({what})") from None
    finally:
        os.close(fd)


def output_file(text: str) -> str:
    """An argparse type for a file a command writes (creates or replaces):
    named, in a directory that exists, and not itself a directory."""
    if not text:
        raise bad_value("an empty file name")
    if not checking_host():
        return text
    if os.path.isdir(text):
        raise bad_value(f"'{text}' is a directory")
    return _in_a_directory(text)


def _in_a_directory(text: str) -> str:
    """text, if the directory it names a file in exists."""
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise bad_value(f"'{text}': directory {parent} does not exist")
    return text


def sqlite_file(text: str) -> str:
    """An argparse type for a SQLite store a command adds to: new, empty or SQLite."""
    output_file(text)
    if checking_host() and os.path.lexists(text):
        head = _readable_head(text, "a SQLite store", 16)
        if head and head != b"SQLite format 3\x00":
            raise bad_value(f"'{text}' is not a SQLite file")
    return text


def btf_file(text: str) -> str:
    """An argparse type for --btf: a raw BTF file (BTFHub's .btf) or an ELF
    file with BTF, recognized by its magic: anything else libbpf would
    ignore or fail on far from the flag."""
    if not checking_host():
        return text
    head = _readable_head(text, "a kernel BTF file", 4)
    if head[:2] not in (b"\x9f\xeb", b"\xeb\x9f") and head != b"\x7fELF":
        raise bad_value(f"'{text}' is not a BTF file (raw BTF, or ELF with a .BTF section)")
    return text


def elf_file(text: str) -> str:
    """An argparse type for a binary or library to probe: an ELF file."""
    if not checking_host():
        return text
    if _readable_head(text, "an ELF binary or library", 4) != b"\x7fELF":
        raise bad_value(f"'{text}' is not an ELF binary or library")
    return text


NS_GET_NSTYPE = 0xb703          # ioctl: the CLONE_NEW* type of a namespace file
CLONE_NEWNET = 0x40000000


def netns_ref(text: str) -> str:
    """An argparse type for a network namespace named as `ip netns` names it,
    by path (/proc/PID/ns/net) or by inode: it must exist and be a network
    namespace (/etc/passwd is not one).  The text itself is returned; tools
    resolve it (core/netattach.netns_path)."""
    if text.isdigit():
        if not 1 <= int(text) <= NETNS_INODE_MAX:
            raise bad_value(f"'{text}' is not a namespace inode (1-{NETNS_INODE_MAX})")
        if not checking_host():
            return text
        from ..core.netattach import netns_path
        try:
            netns_path(text)
        except UsageError as exc:
            raise bad_value(str(exc)) from None
        return text
    if not text or text in (".", "..") or ("/" in text and not text.startswith("/")):
        raise bad_value(f"'{text}' is not a network namespace (an ip netns name, a path or an inode)")
    if not checking_host():
        return text
    path = text if text.startswith("/") else f"/run/netns/{text}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        return text         # not ours to look at: entering it will say what privilege is missing
    except OSError as exc:
        hint = " (ip netns list shows the names)" if not text.startswith("/") else ""
        raise bad_value(f"network namespace '{text}': {exc.strerror}{hint}") from None
    try:
        import fcntl
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    finally:
        os.close(fd)
    if kind != CLONE_NEWNET:
        raise bad_value(f"'{text}' is not a network namespace")
    return text


# Whether an argument's validity depended on this host (a PID limit, a
# file): then the CLI parses it again next run instead of remembering it
# (cli/prefetch.note_args)
_host_dependent = False
# Off for flags that are data, not a command to run here (pytrace replay
# parses a recording's flags, which were checked on the host that ran them)
_check_host = True


def checking_host() -> bool:
    """Whether a type converter is to check its value against this host now
    (and, when it does, that the arguments depend on this host)."""
    global _host_dependent
    _host_dependent = True
    return _check_host


def skip_host_checks() -> None:
    global _check_host
    _check_host = False


def parsed_on_host() -> bool:
    """True if a type converter checked an argument against this host."""
    return _host_dependent


def add_allow_host(p: Any) -> None:
    """--allow-host of a command that serves HTTP (core/httpserve)."""
    p.add_argument("--allow-host", type=_allow_host, action="append", default=[], metavar="NAME",
                   help="also answer HTTP requests addressed to NAME (repeatable; '*': any).  By default "
                        "only requests to this server's own address are (and localhost on loopback): "
                        "a page elsewhere cannot read it by DNS rebinding")


def _allow_host(text: str) -> str:
    from ..core.httpserve import allow_host_value     # only when the flag is used
    try:
        return allow_host_value(text)
    except ValueError as exc:
        raise bad_value(str(exc)) from None



# -- cgroups, namespaces, containers (src/bpf/filter.h, core/containers.py) -----------

def container_options(tracer: Any, netns_flags: tuple[str, ...] = ("--netns",),
                      cgroup_flags: tuple[str, ...] = ("--cgroup",)) -> list[tuple[str, tuple, dict]]:
    """The options of the tracer class's SCOPE (core/tracer.py), declared once:
    (the tracer keyword, flags, argparse settings) each.  add_container_args
    adds them to a parser; a declared option group (pytrace.spec) can take
    them as they are (keyword -> Option(*flags, kw=keyword, **settings))."""
    scope = tracer.SCOPE
    table = [
        ("cgroup", tuple(cgroup_flags), dict(
            metavar="PATH|ID", action="append", type=cgroup_ref,
            help="only this cgroup (v2) and its descendants: a directory of the cgroup2 mount, a path as "
                 "/proc/PID/cgroup gives it, or an id (repeatable)")),
        ("netns", netns_flags, dict(
            dest="netns", metavar="NS", type=netns_ref,
            help="only this network namespace: an ip netns name, a path or an inode")),
        ("container", ("--container",), dict(
            metavar="NAME|ID", action="append", type=container_ref,
            help="only this container (podman, docker, containerd, cri-o, systemd-nspawn), by name or id, "
                 "including when it starts or restarts later (repeatable)")),
        ("cgroupmap", ("--cgroupmap",), dict(
            metavar="MAPPATH", type=pinned_map,
            help="only cgroups in this pinned BPF hash map of cgroup ids (as BCC's)")),
        ("mntnsmap", ("--mntnsmap",), dict(
            metavar="MAPPATH", type=pinned_map,
            help="only mount namespaces in this pinned BPF hash map of inodes (as BCC's)")),
        ("labels", ("--show-container",), dict(
            action="store_true", dest="show_container",
            help="a CONTAINER column (name, or short id); with --json, the cgroup id and path, netns, "
                 "container and Kubernetes pod of each event")),
    ]
    return [row for row in table if row[0] in scope]


def add_container_args(p: Any, tracer: Any, netns_flags: tuple[str, ...] = ("--netns",),
                       cgroup_flags: tuple[str, ...] = ("--cgroup",)) -> None:
    """The filters of the tracer class's SCOPE as options, in one group of the
    help: --cgroup, --netns (netns_flags: a tool's BCC spelling), --container,
    --cgroupmap, --mntnsmap, and --show-container where events are labelled.
    container_filters(args) turns them into the tracer's keywords."""
    options = container_options(tracer, netns_flags, cgroup_flags)
    if options:
        g = p.add_argument_group("cgroups, namespaces and containers")
        for _kw, flags, settings in options:
            g.add_argument(*flags, **settings)


def container_filters(args: Any) -> dict[str, Any]:
    """The tracer keywords of add_container_args' options (those given)."""
    kw = {key: getattr(args, key) for key in ("cgroup", "netns", "container", "cgroupmap", "mntnsmap")
          if getattr(args, key, None)}
    if getattr(args, "show_container", False):
        kw["labels"] = True
    return kw


def cgroup_ref(text: str) -> str:
    """--cgroup: a cgroup v2 path or id (checked against this host)."""
    if not text or "\0" in text or len(text) > 4096:
        raise bad_value(f"'{text}' is not a cgroup (a path or an id)")
    if text.isdigit() and not 1 <= int(text) < 1 << 64:
        raise bad_value(f"'{text}' is not a cgroup id")
    if not checking_host():
        return text
    from ..core.containers import resolve_cgroup
    try:
        resolve_cgroup(text)
    except PytraceError as exc:
        raise bad_value(str(exc)) from None
    return text


def container_ref(text: str) -> str:
    """--container: a container name or id (it may start later)."""
    if not text or len(text) > 255 or "/" in text or not text.isprintable():
        raise bad_value(f"'{text}' is not a container name or id")
    return text


def pinned_map(text: str) -> str:
    """--cgroupmap/--mntnsmap: a pinned BPF map (checked when the tool loads)."""
    if not text.startswith("/"):
        raise bad_value(f"'{text}': the absolute path of a pinned BPF map (under /sys/fs/bpf)")
    if checking_host() and not os.path.exists(text):
        raise bad_value(f"{text}: no such pinned map")
    return text


def container_column(tracer: Any, renderer: Callable[[Any, Any, Any], Callable[[list[tuple]], str]],
                     args: Any, out: Any) -> Callable[[list[tuple]], str]:
    """--show-container in text: renderer's lines behind a CONTAINER column,
    whatever the tool prints (each record rendered alone, its lines prefixed)."""
    width = 16
    tracer.keep_fields = frozenset(("cgroup_id", "netns"))

    class _Prefixed:
        def __getattr__(self, name: str) -> Any:
            return getattr(out, name)

        def write(self, text: str | bytes) -> None:
            if isinstance(text, bytes):
                text = text.decode()
            head = f"{'CONTAINER':<{width}} "
            out.write("".join(head + line if line.strip() else line for line in text.splitlines(True)))

    render = renderer(tracer, args, _Prefixed())
    labeler = tracer.labeler
    i_cg, i_ns = tracer.idx.get("cgroup_id"), tracer.idx.get("netns")

    def prefixed(batch: list[tuple]) -> str:
        parts = []
        for r in batch:
            text = render([r])
            if isinstance(text, bytes):
                text = text.decode()
            if not text:
                continue
            cgid = r[i_cg] if i_cg is not None else 0
            name = labeler.labels(cgid, r[i_ns] if i_ns is not None else 0).short if cgid else "-"
            col = f"{name[:width]:<{width}} "
            parts.append("".join(col + line for line in text.splitlines(True)))
        return "".join(parts)
    return prefixed


def add_common(p: argparse.ArgumentParser, hooks: Iterable[str]) -> None:
    """The flags every tool has.  libbpf's log is --libbpf-log everywhere; -v
    (--verbose) is the same only where the tool has not taken -v for itself:
    a tool whose BCC namesake has a -v gives it the namesake's meaning
    (tcptracer's verbose lines, tcpconnlat's program), see spec/options.py."""
    g = p.add_argument_group("pytrace options")
    g.add_argument("--json", action="store_true", help="one JSON object per line")
    g.add_argument("--ebpf", action="store_true", help="print the BPF C source and exit")
    g.add_argument("--hook", choices=list(hooks), help="force this hook variant (default: best usable)")
    g.add_argument("--btf", metavar="FILE", type=btf_file,
                   help="kernel BTF file, for kernels without /sys/kernel/btf/vmlinux")
    taken = getattr(p, "_option_string_actions", {})
    verbose = [f for f in ("-v", "--verbose") if f not in taken]
    g.add_argument("--libbpf-log", *verbose, dest="libbpf_log", action="store_true", help="show libbpf's log")
    add_sink_args(g)


def add_family_args(p: argparse.ArgumentParser, what: str = "") -> None:
    """-4/--ipv4 and -6/--ipv6, one or neither (family_of reads them)."""
    fam = p.add_mutually_exclusive_group()
    what = f" {what}" if what else ""
    fam.add_argument("-4", "--ipv4", action="store_true", help=f"IPv4{what} only")
    fam.add_argument("-6", "--ipv6", action="store_true", help=f"IPv6{what} only")


def family_of(args: Any) -> int:
    """The address family -4/-6 chose, 0 for both."""
    return AF_INET if args.ipv4 else AF_INET6 if args.ipv6 else 0


def add_sink_args(g: Any) -> None:
    """--record and --influx (part of add_common; alone for a tool without BPF, nstat)."""
    # Sinks (src/pytrace/sinks/): cli.py opens them from these two flags before
    # the tool runs; the tool itself never sees them (see stream_events/publish).
    g.add_argument("--record", metavar="FILE", type=_new_file,
                   help="also record every event (and lost count) to this SQLite file (pytrace replay FILE)")
    g.add_argument("--influx", metavar="URL", type=_influx_url,
                   help="also send events/snapshots to InfluxDB 1.x, e.g. http://127.0.0.1:8086/pytrace "
                        "(credentials from INFLUX_USERNAME/INFLUX_PASSWORD)")


def _new_file(text: str) -> str:
    if not text:
        raise bad_value("an empty file name")
    if os.path.lexists(text):
        raise bad_value(f"{text} exists: a recording is never overwritten, choose a new name")
    return _in_a_directory(text)


def influx_url(flag: str) -> Callable[[str], str]:
    """An argparse type for an InfluxDB URL, its errors naming flag."""
    def conv(text: str) -> str:
        from ..sinks.influx import parse_url  # only when the flag is used
        try:
            parse_url(text, flag)
        except UsageError as exc:
            raise bad_value(str(exc)) from None
        return text
    conv.__name__ = "_influx_url"
    return conv


_influx_url = influx_url("--influx")


# -- sinks of this process (set by cli.py from --record/--influx) ----------------

_sinks: Any = None


def set_sinks(sinks: Any) -> None:
    """Attach the session's sinks (a pytrace.sinks.SinkSet, or None)."""
    global _sinks
    _sinks = sinks


def active_sinks() -> Any:
    return _sinks


def publish(snapshot: Any) -> None:
    """Hand one interval's snapshot (pytrace.sinks.Snapshot) of an aggregating
    tool to the session's sinks; nothing happens when none are attached."""
    if _sinks is not None:
        _sinks.snapshot(snapshot)


LATENCY_NOTE = ("Events are read in batches: a line appears at most about 50 ms after "
                "its event at low rates (at once after an idle gap), a little later "
                "under heavy load. The reader runs at its normal priority, raised (nice -10, "
                "then -20) only while it falls behind a storm, so that it does not lose events.")


def _write_all(buf: Any, data: bytes) -> None:
    """All of data to a binary stream.  Under python -u (PYTHONUNBUFFERED) a
    text stream's .buffer is the raw file, whose write() makes one system
    call and returns what it took: a pipe takes part of a large write when a
    signal (a Ctrl-C, handled) arrives in the middle of it."""
    view = memoryview(data)
    while view:
        n = buf.write(view)
        if n is None:       # a non-blocking file that is full: as a buffered writer would
            raise BlockingIOError(errno.EAGAIN, "output would block")
        view = view[n:]


class Output:
    """Where lines go: stdout by default; lost-event reports to stderr or the JSON stream."""

    def __init__(self, json_mode: bool, stream: TextIO | None = None):
        self.json = json_mode
        self.stream = stream or sys.stdout
        self.reported_lost = 0

    def write(self, text: str | bytes) -> None:
        """Write and flush (so the event-to-line delay stays bounded).  Bytes go
        straight to the binary buffer: the hot text renderers produce bytes."""
        if not text:
            return
        try:
            if isinstance(text, bytes):
                buf = getattr(self.stream, "buffer", None)
                if buf is not None:
                    self.stream.flush()
                    _write_all(buf, text)
                    buf.flush()
                    return
                text = text.decode()
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, BlockingIOError):
            raise               # the reader left: a quiet end (cli.main)
        except OSError as exc:  # a full disk, a file too large: one line, status 1
            if self.stream is sys.stdout:
                from .stdout import drop_stdout
                drop_stdout()   # what is still buffered would fail again at exit, with a traceback
            raise PytraceError(f"cannot write the output: {exc.strerror or exc}") from None

    def record(self, obj: dict) -> None:
        import json     # --json only: json imports re (~4 ms of start-up)
        self.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def lost(self, total: int) -> None:
        """Report records lost since the last report (total is cumulative)."""
        new = total - self.reported_lost
        if new <= 0:
            return
        self.reported_lost = total
        if self.json:
            self.record({"type": "lost", "count": new, "total": total})
        else:
            sys.stderr.write(f"lost {new} events (ring buffer full)\n")
            sys.stderr.flush()


class CatchUp:
    """The reader's priority: normal while it keeps up, raised while it is behind.

    A reader that always ran at nice -10 kept up with every storm, but it also
    preempted the traced processes whenever it woke, in the middle of their
    requests, and their peers waited: the 2-worker storm ran at 0.55 of its
    untraced rate, against 0.68 with the reader at nice 0.  At nice 0,
    though, the reader gets only a fair share among many busy processes (8
    storm workers: a third of 300k events lost).  So the reader starts at its
    own priority, is raised to nice -10 while half the ring is unread, and goes
    back once the backlog is under 1/8: a storm the reader can follow at fair
    share is not disturbed (raising it at a quarter already cost the 2-worker
    storm 0.50 against 0.67), one it cannot follow does not overrun the ring.
    At nice -10 against 8 storm pairs the reader's share of its CPU only just
    covers the events (one run in fifteen still overran an 8 MiB ring), so at
    three quarters it goes to -20, where it has nearly the whole CPU.  A
    reader started with a positive nice value (asked to stay out of the way) is
    never raised; without the privilege to raise it stays where it is.
    """

    # (fraction of the ring unread, nice value), highest first
    LEVELS = ((3 / 4, -20), (1 / 2, -10))

    def __init__(self, ring: Any):
        self.ring = ring
        self.base = self.current = os.getpriority(os.PRIO_PROCESS, 0)
        self.boosts = 0
        size = getattr(ring, "size", 0)
        self.levels = [(int(size * frac), value) for frac, value in self.LEVELS if value < self.base]
        self.low = size // 8
        self.enabled = bool(size) and bool(self.levels) and self.base <= 0

    @property
    def boosted(self) -> bool:
        return self.current != self.base

    def update(self) -> None:
        """After each batch: raise or relax according to what is still unread."""
        if not self.enabled:
            return
        unread = self.ring.unread()
        if unread <= self.low:
            if self.boosted:
                os.setpriority(os.PRIO_PROCESS, 0, self.base)
                self.current = self.base
            return
        for threshold, value in self.levels:
            if unread >= threshold:
                if value < self.current:
                    try:
                        os.setpriority(os.PRIO_PROCESS, 0, value)
                    except OSError:
                        self.enabled = False     # not permitted: nothing to adapt
                        return
                    self.current = value
                    self.boosts += 1
                return


class SpreadReader:
    """Spread the reader's CPU time evenly over the CPUs it may use.

    Under a storm the reader works through one batch after another, and the
    scheduler keeps it on one CPU: whatever runs there is slowed by all of the
    reader's time and the other CPUs' tasks by none of it.  Work split evenly
    in advance (a 2-worker connection storm gives each client/server pair half
    the connections, and each pair settles on one CPU) then finishes only when
    its slowest part does: the other pair finished early and its CPU sat idle
    (bench/README.md, item 28).  So after each large batch the reader moves to
    the next allowed CPU; once it has caught up (a small batch) it is let go
    again, for the scheduler to place.
    """

    MIN_BATCH = 1024       # records: a batch this large means a storm, not a trickle

    def __init__(self, ring: Any):
        try:
            self.cpus = sorted(os.sched_getaffinity(0))
        except OSError:
            self.cpus = []
        self.enabled = ring is not None and len(self.cpus) > 1
        self.turn = 0
        self.pinned = False

    def after(self, records: int) -> None:
        if not self.enabled:
            return
        try:
            if records >= self.MIN_BATCH:
                self.turn = (self.turn + 1) % len(self.cpus)
                os.sched_setaffinity(0, (self.cpus[self.turn],))
                self.pinned = True
            elif self.pinned:
                self.close()
        except OSError:          # a CPU went offline, or a cpuset changed: stop spreading
            self.enabled = False

    def close(self) -> None:
        if self.pinned:
            self.pinned = False
            try:
                os.sched_setaffinity(0, self.cpus)
            except OSError:
                pass


def stream_events(tracer: Any, out: Output, render: Callable[[list[tuple]], str],
                  duration: float | None = None, schedule: bool = True) -> int:
    """The CLI loop of every event tool: drain, render in bulk, write, report loss.

    Ctrl-C and SIGTERM end it after a final drain, so nothing already queued
    in the kernel is left unprinted.  Attached sinks (--record, --influx) get
    every batch of raw records and every lost count before the terminal does,
    so whatever was printed has been recorded.  schedule=False leaves the
    reader's priority and CPU alone (--no-reader-sched: no CatchUp, no SpreadReader).
    """
    sinks = _sinks
    ring = getattr(tracer, "ring", None) if schedule else None
    catch_up, spread = CatchUp(ring), SpreadReader(ring)
    if sinks is not None:
        sinks.begin(tracer)
    output = BatchOutput(tracer, out, render, sinks)
    try:
        release_stops()      # a stop held while the tool started lands here, and is drained
        # From the drain that takes a batch out of the ring (so the final
        # drain would not see it) until that batch is written, a stop is held;
        # it is raised between batches and while the ring sleeps, when the
        # reader holds no records (so Ctrl-C stays prompt).  A batch pending
        # for the recording (BatchOutput) is printed by the except clause.
        hold_stops()
        if ring is not None:
            ring.around_sleep = (release_stops, hold_stops)
        for batch in tracer.batches(duration):
            output.emit(batch)
            # after an empty batch too: a reader raised through a storm goes back to
            # its own priority once it is idle (a sink's thread waits for that)
            catch_up.update()
            if not batch:
                output.flush()          # a quiet tick: nothing waits to be printed
            spread.after(len(batch))
            release_stops()
            hold_stops()
    except (KeyboardInterrupt, Terminate):
        try:
            release_stops()     # a stop that insists may cut the final drain short
            output.flush()
            output.emit(tracer.drain())
            output.flush()
        except (KeyboardInterrupt, Terminate):
            pass
    else:
        try:
            release_stops()     # the loop ran its duration: all of it is printed
            output.flush()
        except (KeyboardInterrupt, Terminate):
            pass
    finally:
        if ring is not None:
            ring.around_sleep = None
        spread.close()
    return 0


def emit_batch(tracer: Any, out: Output, render: Callable[[list[tuple]], str], batch: list[tuple],
               sinks: Any) -> None:
    """One drained batch: to the sinks, printed, then the loss count, in that
    order (whatever was printed has been recorded)."""
    emitter = BatchOutput(tracer, out, render, sinks)
    emitter.emit(batch)
    emitter.flush()


class BatchOutput:
    """Drained batches to the sinks, then printed, then the loss count.

    Whatever is printed has been recorded: with a durable sink (--record) a
    batch is printed only once the recording holds it.  The recording works
    on a thread of its own (sinks/worker.py), so the reader does not wait
    for it: emit() renders the batch and keeps it pending, the reader goes
    on draining the ring, and each pending batch is printed, in order, as
    soon as its commit is done (ready(), at every emit).  At most
    MAX_PENDING batches wait; flush() prints them all (on an idle tick, at
    the end, at a stop).  Without a durable sink a batch is printed at once.
    """

    MAX_PENDING = 32            # rendered batches (each at most ringbuf.MAX_BATCH_BYTES of records)

    def __init__(self, tracer: Any, out: Output, render: Callable[[list[tuple]], str], sinks: Any):
        self.tracer, self.out, self.render, self.sinks = tracer, out, render, sinks
        self.durable = sinks is not None and sinks.durable
        # (tickets, text, lost total); a list: collections costs start-up time, and it is short
        self.pending: list[tuple[list[int], str | bytes, int]] = []

    def emit(self, batch: list[tuple]) -> None:
        sinks, out = self.sinks, self.out
        if sinks is None:
            if batch:
                out.write(self.render(batch))
            out.lost(self.tracer.lost)
            return
        tickets = sinks.events(batch) if batch else []
        text = self.render(batch) if batch else ""
        lost = self.tracer.lost
        tickets = sinks.lost(lost) or tickets       # the later ticket covers the batch too
        if not self.durable:
            out.write(text)
            out.lost(lost)
            return
        self.pending.append((tickets, text, lost))
        self.ready(wait_for=len(self.pending) - self.MAX_PENDING)

    def ready(self, wait_for: int = 0) -> None:
        """Print the pending batches the recording holds, in order; the first
        wait_for of them are waited for."""
        sinks, out, pending = self.sinks, self.out, self.pending
        while pending:
            tickets, text, lost = pending[0]
            if wait_for > 0:
                sinks.settle(tickets)
                wait_for -= 1
            elif not sinks.held(tickets):
                return
            out.write(text)
            out.lost(lost)
            del pending[0]

    def flush(self) -> None:
        """Print every pending batch (waiting for the recording to hold it)."""
        self.ready(wait_for=len(self.pending))


def json_renderer(source: Any) -> Callable[[list[tuple]], str]:
    """An event tool's --json: make_event(raw).to_dict() of every record, one
    compact JSON object a line (source: the tracer, or replay's stand-in)."""
    make = source.make_event
    import json
    dumps = json.JSONEncoder(separators=(",", ":")).encode

    def render(batch: list[tuple]) -> str:
        return "".join([dumps(make(r).to_dict()) + "\n" for r in batch])
    return render


def run_stream(tracer: Any, args: Any, renderer: Callable[[Any, Any, Output], Callable[[list[tuple]], str]],
               intro: Callable[[Any], str] | None = None) -> int:
    """run() of an event tool, in the order `pytrace replay` repeats it (the
    protocol in pytrace.sinks): load, intro(args), the renderer (which may
    print its header), then every batch until Ctrl-C."""
    out = Output(args.json)
    with tracer:
        if intro is not None:
            out.write(intro(args))
        duration, schedule = getattr(args, "duration", None), not getattr(args, "no_reader_sched", False)
        if getattr(args, "show_container", False) and not args.json:
            return stream_events(tracer, out, container_column(tracer, renderer, args, out), duration, schedule)
        return stream_events(tracer, out, renderer(tracer, args, out), duration, schedule)


_epoch: list | None = None   # [offset, start_ns] shared by every Clock, once share_epoch() ran


def share_epoch(epoch: tuple[int, int] | None = None) -> None:
    """Make every Clock of this process use one (offset, start_ns): the given
    one (pytrace replay restores a recording's), or the first Clock's.  A
    recording stores it so -T/-t columns replay byte for byte."""
    global _epoch
    _epoch = list(epoch) if epoch is not None else []


def epoch() -> tuple[int, int] | None:
    """The shared (offset, start_ns), fixed now if no Clock was made yet; None if not shared."""
    if _epoch is None:
        return None
    if not _epoch:
        Clock()
    return _epoch[0], _epoch[1]


def wall_iso(wall_ns: int) -> str:
    """Wall-clock nanoseconds -> local ISO 8601 with microseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(wall_ns // 1_000_000_000)) + \
        f".{wall_ns % 1_000_000_000 // 1000:06d}"


def rfc3339(wall_ns: int) -> str:
    """Wall-clock nanoseconds -> RFC 3339 local time with microseconds and the
    zone's offset (2026-12-07T10:04:05.123456+01:00): --json's "time"."""
    sec = wall_ns // 1_000_000_000
    return _rfc3339_second(sec) + f".{wall_ns % 1_000_000_000 // 1000:06d}" + _zone(sec)


def _rfc3339_second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(sec))


def _zone(sec: int) -> str:
    off = time.localtime(sec).tm_gmtoff // 60
    sign = "-" if off < 0 else "+"
    return f"{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"


# The first event's time when it is known before the renderer sees it:
# `pytrace replay --where/--since` renders only some of a recording's
# events, and their TIME(s) count from the run's first event, as printed live.
_first_event_ns: int | None = None


def share_first_event(mono_ns: int | None) -> None:
    global _first_event_ns
    _first_event_ns = mono_ns


class SinceFirst:
    """Time since the first event seen: BCC's TIME(s) columns start at the
    first event, not at the tracer's start (Clock.since_start)."""

    __slots__ = ("first",)

    def __init__(self) -> None:
        self.first: int | None = _first_event_ns

    def ns(self, mono_ns: int) -> int:
        if self.first is None:
            self.first = mono_ns
        return mono_ns - self.first

    def __call__(self, mono_ns: int) -> float:
        """Seconds."""
        return self.ns(mono_ns) / 1e9


class Clock:
    """Kernel monotonic nanoseconds -> wall-clock text, cached per second."""

    def __init__(self) -> None:
        if _epoch:
            self.offset, self.start_ns = _epoch
        else:
            self.offset = time.time_ns() - time.monotonic_ns()
            self.start_ns = time.monotonic_ns()
            if _epoch is not None:
                _epoch.extend((self.offset, self.start_ns))
        self._sec = -1
        self._text = ""
        self._rfc_sec = -1
        self._rfc_text = ("", "")

    def hms(self, mono_ns: int) -> str:
        sec = (mono_ns + self.offset) // 1_000_000_000
        if sec != self._sec:
            self._sec = sec
            self._text = time.strftime("%H:%M:%S", time.localtime(sec))
        return self._text

    def iso(self, mono_ns: int) -> str:
        return wall_iso(mono_ns + self.offset)

    def rfc3339(self, mono_ns: int) -> str:
        """rfc3339() of a kernel monotonic time; the second's text is kept."""
        wall = mono_ns + self.offset
        sec = wall // 1_000_000_000
        if sec != self._rfc_sec:
            self._rfc_sec = sec
            self._rfc_text = (_rfc3339_second(sec), _zone(sec))
        day, zone = self._rfc_text
        return f"{day}.{wall % 1_000_000_000 // 1000:06d}{zone}"

    def since_start(self, mono_ns: int) -> float:
        return (mono_ns - self.start_ns) / 1e9
