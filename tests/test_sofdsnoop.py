"""sofdsnoop: descriptors passed over a Unix socket between two processes this
test starts (tests/fdpass.py), with the exact sender and receiver PIDs, COMMs,
sockets, descriptor numbers and file names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import kernelstate
from helpers import netns as netns_named, run_cli, usage_error
from matrix import opened, variants
from pytrace.core import loader
from pytrace.tools.sofdsnoop import SoFdSnoop
from ready import n_programs, started

FDPASS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fdpass.py")
SENDER, RECEIVER = "fdsend", "fdrecv"
# two messages: three descriptors in the first (a pipe's two ends and a file), one socket in the second
MESSAGES = ("pipe file", "sock")


class Passing:
    """A sender and a receiver process, connected; each message sent, then received."""

    def __init__(self) -> None:
        path = f"@pytrace-sofdsnoop-{os.getpid()}-{time.monotonic_ns()}"
        self.procs = []
        self.recv, self.r = self._start("recv", path, RECEIVER)
        self.send, self.s = self._start("send", path, SENDER)
        self.sent: list[dict] = []
        self.received: list[dict] = []

    def _start(self, role: str, path: str, comm: str) -> tuple[subprocess.Popen, dict]:
        proc = subprocess.Popen([sys.executable, FDPASS, role, path, comm], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc, json.loads(proc.stdout.readline())

    @staticmethod
    def _ask(proc: subprocess.Popen, line: str) -> dict:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def run(self, messages=MESSAGES) -> None:
        for kinds in messages:
            self.sent.append(self._ask(self.send, kinds))
        for _ in messages:
            self.received.append(self._ask(self.recv, "recv"))

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
            proc.wait(10)

    def __enter__(self) -> Passing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sends(self) -> list[tuple]:
        """(action, pid, tid, comm, sock_fd, socket, fd, name, peer_pid, peer_comm, peer_fd) per sent fd."""
        return [("SEND", self.s["pid"], self.s["tid"], SENDER, m["sock"], f"{m['sock']}:{m['sock_name']}",
                 fd, name, 0, "", -1) for m in self.sent for fd, name in zip(m["fds"], m["names"])]

    def receives(self) -> list[tuple]:
        out = []
        for m, sent in zip(self.received, self.sent):
            assert len(m["fds"]) == len(sent["fds"]) and m["names"] == sent["names"]
            out += [("RECV", self.r["pid"], self.r["tid"], RECEIVER, m["sock"], f"{m['sock']}:{m['sock_name']}",
                     fd, name, self.s["pid"], SENDER, sent_fd)
                    for fd, name, sent_fd in zip(m["fds"], m["names"], sent["fds"])]
        return out


def as_tuple(e) -> tuple:
    return (e.action, e.pid, e.tid, e.comm, e.sock_fd, e.socket, e.fd, e.name, e.peer_pid, e.peer_comm, e.peer_fd)


@pytest.mark.parametrize("hook", variants(SoFdSnoop))
def test_passes_between_two_processes_exact(hook):
    with opened(SoFdSnoop, hook) as t, Passing() as p:
        p.run()
        events = [e for e in t.events(duration=0.3) if e.pid in (p.s["pid"], p.r["pid"])]
        assert t.lost == 0
        want = p.sends() + p.receives()
        assert len(want) == 8
        assert [w[7].split(":")[0] for w in want[:4]] == ["pipe", "pipe", "/etc/hostname", "socket"]
        assert [as_tuple(e) for e in events] == want
        for e in events:        # both ends still hold their descriptors
            assert e.ino == os.stat(f"/proc/{e.pid}/fd/{e.fd}").st_ino


def test_library_pid_filter_keeps_the_sender_of_a_receive():
    with Passing() as p:
        with SoFdSnoop(pid=p.r["pid"]) as t:
            p.run()
            events = list(t.events(duration=0.3))
    assert [as_tuple(e) for e in events] == p.receives()


def planned_links() -> int:
    return n_programs(SoFdSnoop, loader.planned(SoFdSnoop.VARIANTS)[0].hook)


def wait_lines(cli, marker: str, n: int) -> None:
    """Until the CLI printed n lines containing marker."""
    assert cli.read_until(lambda _: sum(marker in line for line in cli.seen) >= n), cli.seen


def run_cli_over_passes(*args: str) -> tuple[Passing, list[str], str]:
    """The CLI started with args, two messages passed, the CLI stopped: (passing, lines, stderr)."""
    cli = started("sofdsnoop", *args, links=planned_links())
    with Passing() as p:
        p.run()
        wait_lines(cli, RECEIVER, 4)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    return p, lines, err


def bcc_line(w: tuple) -> str:
    return f"{w[0]:<6} {w[2]:<6} {w[3]:<16} {w[5]:<25} {w[6]:<5} {w[7]}"


def test_cli_columns_as_bcc():
    before = kernelstate.snapshot()
    p, lines, _ = run_cli_over_passes()
    assert lines[0] == "ACTION TID    COMM             SOCKET                    FD    NAME"
    mine = [l for l in lines[1:] if f" {SENDER} " in l or f" {RECEIVER} " in l]
    assert mine == [bcc_line(w) for w in p.sends() + p.receives()]
    assert kernelstate.left_since(before) == {}


def test_cli_wide_timestamp_and_pid_filter():
    # -p the receiver: its lines only, each naming the sender
    with Passing() as p:
        cli = started("sofdsnoop", "-w", "-T", "-p", str(p.r["pid"]), links=planned_links())
        p.run()
        wait_lines(cli, RECEIVER, 4)
        rc, lines, err = cli.stop()
        assert rc == 0, err
        cli_pid_filter = lines
    assert cli_pid_filter[0] == ("TIME(s)       ACTION TID    COMM             PID     FROM    FROM-COMM        "
                                 "SOCKET                    FD    NAME")
    rows = cli_pid_filter[1:]
    assert len(rows) == 4 and rows[0].startswith("0.000000000   RECV")
    times = [float(r[:14]) for r in rows]
    assert times == sorted(times) and times[-1] < 5
    assert [r[14:] for r in rows] == [
        f"{w[0]:<6} {w[2]:<6} {w[3]:<16} {w[1]:<7} {w[8]:<7} {w[9]:<16} {w[5]:<25} {w[6]:<5} {w[7]}"
        for w in p.receives()]


@pytest.mark.parametrize("flag", ["-p", "-t", "-n"])
def test_cli_sender_only(flag):
    """-p PID, -t TID, -n NAME (part of the command name) of the sender: its SEND lines only, FROM "-"."""
    with Passing() as p:
        value = {"-p": str(p.s["pid"]), "-t": str(p.s["tid"]), "-n": SENDER[1:5]}[flag]
        cli = started("sofdsnoop", "-w", flag, value, links=planned_links())
        p.run()
        wait_lines(cli, SENDER, 4)
        time.sleep(0.3)     # the receives happened too: they must not show
        rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[1:] == [f"{w[0]:<6} {w[2]:<6} {w[3]:<16} {w[1]:<7} {'-':<7} {'':<16} {w[5]:<25} {w[6]:<5} {w[7]}"
                         for w in p.sends()]


def test_cli_json():
    p, lines, _ = run_cli_over_passes("--json")
    records = [json.loads(l) for l in lines if l.startswith("{")]
    mine = [r for r in records if r["pid"] in (p.s["pid"], p.r["pid"])]
    keys = ("action", "pid", "tid", "comm", "sock_fd", "socket", "fd", "name", "peer_pid", "peer_comm", "peer_fd")
    assert [tuple(r[k] for k in keys) for r in mine] == p.sends() + p.receives()
    assert list(mine[0])[:3] == ["time", "ts_ns", "action"]


def test_duration_ends_the_run():
    before = kernelstate.snapshot()
    t0 = time.monotonic()
    r = run_cli("sofdsnoop", "-d", "1", "-p", "1")
    assert r.returncode == 0, r.stderr
    assert 1 <= time.monotonic() - t0 < 15
    assert r.stdout.splitlines() == ["ACTION TID    COMM             SOCKET                    FD    NAME"]
    assert kernelstate.left_since(before) == {}


@pytest.mark.parametrize("args,needle", [
    (["-p", "abc"], "abc"),
    (["-t", "-3"], "-3"),
    (["-n", "a-name-longer-than-15"], "a-name-longer-than-15"),
    (["-d", "0"], "0"),
])
def test_bad_input(args, needle):
    usage_error("sofdsnoop", args, needle)
    r = run_cli("sofdsnoop", *args)
    assert "Traceback" not in r.stderr


def test_fds_left_in_the_sender_are_not_reused_by_a_later_message():
    """Several messages: each descriptor number sent once (fdpass keeps them open)."""
    with Passing() as p:
        with SoFdSnoop(pid=p.s["pid"]) as t:
            p.run(("pipe", "file file", "sock pipe"))
            events = list(t.events(duration=0.3))
    fds = [e.fd for e in events]
    assert len(fds) == 7 and len(set(fds)) == 7
    assert [as_tuple(e) for e in events] == p.sends()


def test_kprobe_variant_verifies():
    """Where kprobes cannot attach (here), the kprobe variant's programs still
    load: the verifier of this kernel accepts them; --hook kprobe says in one
    line why it cannot run."""
    from netlab import forced_hook_fails_cleanly, kprobe_programs_verify
    kprobe = next(v for v in SoFdSnoop.VARIANTS if v.hook == "kprobe")
    kprobe_programs_verify("sofdsnoop", set(kprobe.programs))
    forced_hook_fails_cleanly("sofdsnoop", "kprobe")


def own_cgroup() -> tuple[str, int]:
    """This process's cgroup v2 path and id (the id is its directory's inode)."""
    with open("/proc/self/cgroup") as fh:
        path = next(line.split(":", 2)[2].strip() for line in fh if line.startswith("0::"))
    return path, os.stat(f"/sys/fs/cgroup{path}").st_ino


def test_netns_and_cgroup_filters_and_labels():
    """filter.h: passes of the test's children (this cgroup, this namespace) are
    reported under their own cgroup and namespace, with those as labels, and
    none under another namespace."""
    path, cgid = own_cgroup()
    netns = os.stat("/proc/self/ns/net").st_ino
    with Passing() as p:
        with SoFdSnoop(cgroup=[path], netns=str(netns), labels=True) as mine:
            p.run()
            events = [e for e in mine.events(duration=0.3) if e.pid in (p.s["pid"], p.r["pid"])]
    assert [as_tuple(e) for e in events] == p.sends() + p.receives()
    assert {(e.cgroup_id, e.netns) for e in events} == {(cgid, netns)}
    with netns_named(f"ptfd{os.getpid()}") as other:
        with Passing() as p, SoFdSnoop(netns=other) as t:
            p.run()
            assert [e for e in t.events(duration=0.3) if e.pid in (p.s["pid"], p.r["pid"])] == []
