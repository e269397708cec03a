"""The stop matrix: every tool of the registry, stopped every way a tool is
stopped, must end as documented and leave nothing in the kernel.

  SIGINT, SIGTERM, SIGHUP   status 0, stderr free of tracebacks and noise
                            (vnet record: SIGHUP re-reads its config, as
                            documented; it must go on and stop on SIGINT)
  two stops 0-40 ms apart   status 0, nothing on stderr, and what was traced
                            printed: one pair and one gap a tool, in turn
  closed stdout             the read end of its pipe closed while it runs
                            (`| head`): status 0, nothing on stderr
  full disk                 stdout a file on a tmpfs that is full: one line
                            on stderr, status 1
  SIGKILL, then a next run  the next run starts, traces and stops with
                            status 0; once it has started, nothing the dead
                            one held is left in the kernel

Each run is started with the tool's minimal arguments and stopped once it is
"ready": its main thread sleeps in its loop (epoll or nanosleep) and it holds
its BPF objects.  "Left in the kernel" is judged by the IDs of the programs,
maps and links the process itself held (other tests on this machine load
programs of their own meanwhile), read from its fdinfo when it was ready and
again right before the stop, and by the tracefs mounts and probe events of
kernelstate.left_since().

Bounded: one run is ~0.3 s; the whole file, ~290 runs, stays under ~3.5 min
(the double stops, one run a tool: ~18 s).  The commands that are not
registry tools, or run otherwise, are test_stop_commands's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import pytest

import kernelstate
from helpers import PYTRACE, free_port, sh, tcp_roundtrip, wait_until
from pytrace import tools

TOOLS = tools.names()
# where a tool's main thread sleeps once its loop runs (periodic: nanosleep; ring: epoll)
LOOP_WAITS = frozenset(("do_epoll_wait", "hrtimer_nanosleep"))
NO_BPF = frozenset(("nstat",))
NETNS = f"pt-stopmx-{os.getpid()}"

# Tools whose next run is checked to trace: the loopback connection's
# server port is in what they print for it.
PRINTS_PORT = frozenset(("tcplife", "tcpstates", "tcpconnect", "tcpaccept", "tcptracer", "soconnect"))


class Lab:
    """What tools without a default need: a veth in a namespace of our own
    (tunnelmon, vnet record), a trace-point file, a directory for stores."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.runs = 0
        self.config = os.path.join(tmp, "vnet.toml")
        with open(self.config, "w") as fh:
            fh.write('host = "stopmx"\n[select]\nprotocol = "udp"\n'
                     f'[[point]]\nlabel = "pt0.in"\ndevice = "pt0"\nnetns = "{NETNS}"\n'
                     'direction = "ingress"\nmethod = "tc"\n')

    def args(self, tool: str) -> list[str]:
        self.runs += 1
        return {
            "count": ["net:net_dev_xmit"],
            "stackcount": ["net:net_dev_xmit"],
            "tunnelmon": ["--netns", NETNS, "--dev", "pt0"],
            "vnet": ["record", "-c", self.config, "-o", os.path.join(self.tmp, f"vnet{self.runs}.db")],
        }.get(tool, [])


@contextlib.contextmanager
def veth_namespace(netns: str):
    """A namespace of our own with a veth pair pt0/pt1 up in it (a veth: this
    kernel has no dummy module), deleted afterwards."""
    sh(f"ip netns add {netns}")
    try:
        sh(f"ip -n {netns} link add pt0 type veth peer name pt1 && ip -n {netns} link set pt0 up "
           f"&& ip -n {netns} link set pt1 up")
        yield
    finally:
        sh(f"ip netns del {netns}", check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with veth_namespace(NETNS):
        yield Lab(str(tmp_path_factory.mktemp("stopmx")))


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """A tmpfs with not one free block: the first write to a new file fails."""
    path = str(tmp_path_factory.mktemp("full"))
    sh(f"mount -t tmpfs -o size=16k,mode=0700 pt-stopmx-full {path}")
    try:
        fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:         # ENOSPC: full
            pass
        finally:
            os.close(fd)
        yield path
    finally:
        sh(f"umount {path}", check=False)


def held_ids(pid: int) -> dict[str, set[int]]:
    """The BPF programs, maps and links a process holds, by ID, from its fdinfo."""
    ids: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    keys = {"prog_id:": "prog", "map_id:": "map", "link_id:": "link"}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ids
    for fd in fds:
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("anon_inode:bpf"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                for line in fh:
                    kind = keys.get(line.split(maxsplit=1)[0] if line.strip() else "")
                    if kind:
                        ids[kind].add(int(line.split()[1]))
        except (OSError, ValueError):
            continue
    return ids


def wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as fh:
            return fh.read()
    except OSError:
        return ""


class Run:
    """One run of `pytrace TOOL minimal-args`, stdout where the case says."""

    started: list["Run"] = []       # killed after each test if still running (a failed case)

    def __init__(self, tool: str, lab: Lab | None, stdout=subprocess.PIPE, argv: list[str] | None = None):
        """argv: the command line after `pytrace` (default: TOOL and its minimal arguments)."""
        Run.started.append(self)
        self.tool = tool
        self.before = kernelstate.snapshot()
        self.proc = subprocess.Popen([*PYTRACE, *(argv if argv is not None else [tool, *lab.args(tool)])],
                                     stdout=stdout, stderr=subprocess.PIPE, text=True)
        self.held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}

    def double_stop(self, first: int, second: int, gap_ms: float) -> tuple[int, str, str]:
        """Two stops gap_ms apart (the second only if it still runs): (status, out, err)."""
        self._note_held()
        self.proc.send_signal(first)
        time.sleep(gap_ms / 1000)
        if self.proc.poll() is None:
            self.proc.send_signal(second)
        return self.stop(None)

    def _note_held(self) -> None:
        for kind, ids in held_ids(self.proc.pid).items():
            self.held[kind] |= ids

    def sleeping(self) -> bool:
        """Its main thread sleeps where its loop waits."""
        return wchan(self.proc.pid) in LOOP_WAITS

    def holds_all(self) -> bool:
        """It holds the BPF objects it runs with (called once it sleeps, its fdinfo read)."""
        return self.tool in NO_BPF or bool(self.held["prog"])

    def ready(self) -> None:
        """Until the tool sleeps in its loop holding its objects (or ended: a failure)."""
        def looping() -> bool:
            if self.proc.poll() is not None:
                return True
            if not self.sleeping():
                return False
            self._note_held()
            return self.holds_all()
        assert wait_until(looping, 20, 0.005), f"{self.tool} did not reach its loop"
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.tool} ended at start-up: {self.proc.returncode} "
                                 f"{self.proc.stderr.read()}")

    def stop(self, sig: int | None, timeout: float = 10) -> tuple[int, str, str]:
        """Send sig (None: none, it ends by itself) and collect status, stdout, stderr."""
        if self.proc.poll() is None:
            self._note_held()
            if sig is not None:
                self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"{self.tool} did not end within {timeout} s of "
                                 f"{signal.Signals(sig).name if sig else 'its end'}: {err}")
        return self.proc.returncode, out or "", err

    def left(self, timeout: float = 5) -> dict:
        """What this run held that is still in the kernel (programs are
        freed asynchronously: waited for), and any new tracefs mount or
        probe event."""
        def still() -> dict:
            return {kind: sorted(ids & kernelstate.bpf_ids(kind)) for kind, ids in self.held.items()
                    if ids & kernelstate.bpf_ids(kind)}
        wait_until(lambda: not still(), timeout, 0.05)
        left = still()
        for key, value in kernelstate.left_since(self.before, timeout=0).items():
            if key in ("tracefs mounts", "probe events"):
                left[key] = value
        return left


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    yield
    while Run.started:
        run = Run.started.pop()
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def traffic() -> int:
    """Something for every kind of tool to see: a loopback TCP connection
    (listen, connect, accept, data, close), a UDP connect, a name lookup.
    Returns the TCP server's port."""
    port = free_port()
    tcp_roundtrip("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect(("127.0.0.1", 9))
    socket.getaddrinfo("localhost", 80)
    return port


def noise(err: str) -> list[str]:
    return [line for line in err.splitlines()
            if "Traceback" in line or "Error" in line or "Exception" in line or "ignored" in line]


def messages(tool: str, err: str) -> list[str]:
    """stderr without what a tool says there by design: vnet record's notes
    (what it traces, how many records it stored)."""
    lines = err.splitlines()
    if tool == "vnet":
        lines = [line for line in lines if not line.startswith("vnet: ")]
    return lines


# -- signals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
@pytest.mark.parametrize("tool", TOOLS)
def test_a_signal_ends_it_cleanly(tool, sig, lab):
    run = Run(tool, lab)
    run.ready()
    traffic()
    if tool == "vnet" and sig == signal.SIGHUP:
        run.proc.send_signal(sig)           # vnet record: SIGHUP re-reads the config file
        time.sleep(0.3)
        assert run.proc.poll() is None, run.proc.stderr.read()
        sig = signal.SIGINT
    rc, _, err = run.stop(sig)
    assert (rc, noise(err)) == (0, []), err
    assert run.left() == {}


# -- two stops ----------------------------------------------------------------------------------------------

# Two stops 0-40 ms apart, so the second lands anywhere on the way out (the
# final drain, the release, Python's finalization).  test_stops runs tcplife
# with each pair at each gap; here every tool gets one pair and one gap, in
# turn over the registry (6 pairs, 5 gaps: 30 combinations over the tools).
PAIRS = ((signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM),
         (signal.SIGTERM, signal.SIGINT), (signal.SIGHUP, signal.SIGINT), (signal.SIGTERM, signal.SIGHUP))
GAPS_MS = (0, 3, 10, 20, 40)
DOUBLE_STOPS = [(tool, *PAIRS[i % len(PAIRS)], GAPS_MS[i % len(GAPS_MS)]) for i, tool in enumerate(TOOLS)]


@pytest.mark.parametrize("tool,first,second,gap_ms", DOUBLE_STOPS,
                         ids=[f"{t}-{signal.Signals(a).name[3:]}-{signal.Signals(b).name[3:]}-{g}ms"
                              for t, a, b, g in DOUBLE_STOPS])
def test_a_double_stop_ends_it_with_status_0(tool, first, second, gap_ms, lab):
    """Status 0, not a line on stderr, nothing left, and (the second stop
    absorbed, not cutting the final drain short) the traced connection
    printed.  vnet record: SIGHUP first re-reads its config and the SIGINT
    stops it; SIGHUP second lands on its way out."""
    run = Run(tool, lab)
    run.ready()
    port = traffic()
    if tool in PRINTS_PORT:
        time.sleep(0.1)     # the event of the connection's last ACK: in the kernel before the stops
    rc, out, err = run.double_stop(first, second, gap_ms)
    assert (rc, messages(tool, err)) == (0, []), err
    if tool in PRINTS_PORT:
        assert str(port) in out, out
    assert run.left() == {}


# -- closed stdout and full disk ---------------------------------------------------------------------------

@pytest.mark.parametrize("tool", TOOLS)
def test_a_closed_stdout_ends_it_quietly(tool, lab):
    """The reader goes away (`pytrace tool | head`): the next write ends the
    tool, status 0, and not one line on stderr.  Traffic makes the event
    tools write; the aggregating ones write at the stop."""
    run = Run(tool, lab)
    run.ready()
    run.proc.stdout.close()
    run.proc.stdout = None
    traffic()
    wait_until(lambda: run.proc.poll() is not None, 0.25)    # an event tool's write ends it; else the stop's
    rc, _, err = run.stop(signal.SIGINT)
    assert (rc, messages(tool, err)) == (0, []), err
    assert run.left() == {}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_full_disk_is_one_line(tool, lab, full_disk):
    """stdout is a file on a full tmpfs: the first write fails (at start-up,
    or at the stop for a tool that prints only then).  One line saying so,
    status 1, and everything released."""
    path = os.path.join(full_disk, f"{tool}.out")
    with open(path, "w") as out:
        run = Run(tool, lab, stdout=out)
    try:
        wait_until(lambda: run.proc.poll() is not None or wchan(run.proc.pid) in LOOP_WAITS, 20, 0.005)
        rc, _, err = run.stop(signal.SIGINT)
    finally:
        os.unlink(path)
    assert rc == 1, err
    assert messages(tool, err) == [f"pytrace {tool}: cannot write the output: No space left on device"]
    assert run.left() == {}


# -- SIGKILL, then the next run ------------------------------------------------------------------------------

# tc filters outlive their process: the next run of tunnelmon or vnet
# removes a dead run's (core/leftovers.py)
@pytest.mark.parametrize("tool", TOOLS)
def test_after_sigkill_the_next_run_works_and_nothing_of_the_dead_one_stays(tool, lab):
    dead = Run(tool, lab)
    dead.ready()
    dead._note_held()
    dead.proc.kill()
    dead.stop(None)
    nxt = Run(tool, lab)
    nxt.ready()
    assert dead.left() == {}, "left by the SIGKILLed run once the next one started"
    port = traffic()
    time.sleep(0.1)
    rc, out, err = nxt.stop(signal.SIGINT)
    assert (rc, noise(err)) == (0, []), err
    if tool in PRINTS_PORT:
        assert str(port) in out, out
    assert nxt.left() == {}
