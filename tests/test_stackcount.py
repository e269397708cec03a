"""stackcount: the stacks of tracepoint hits the test causes, a known number of times."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import free_port, run_cli
from ready import started
from matrix import covers
from pytrace.tools.count import TracepointCount
from pytrace.tools.stackcount import frames
from test_count import DummyNet, failed_connects

ME = os.getpid()


@covers("stackcount", "tracepoint")
def test_kernel_stacks_of_udp_transmits():
    size = 333
    with DummyNet() as net, TracepointCount(["net:net_dev_xmit"], filters=[f"name == {net.dev}"], pid=ME,
                                            kernel_stack=True) as c:
        net.send(6, size)
        got = c.counts()
    assert sum(pc.count for pc in got) == 6
    for pc in got:
        k, u = frames(pc)
        assert pc.ustack is None and u == []
        assert k[0].startswith("dev_hard_start_xmit")      # the function that fires the tracepoint
        assert any(f.startswith("udp_sendmsg") for f in k), k
        assert k[-1].startswith("entry_SYSCALL_64")


def test_user_stacks_of_connect_calls():
    with TracepointCount(["syscalls:sys_enter_connect"], pid=ME, user_stack=True) as c:
        failed_connects(4)
        got = c.counts()
    assert sum(pc.count for pc in got) == 4
    for pc in got:
        k, u = frames(pc)
        assert (pc.pid, pc.kstack) == (ME, None)
        assert "connect" in u[0], u                          # libc's connect() wrapper


def test_cli_kernel_stacks_text_and_folded():
    with DummyNet() as net:
        text_and_folded(net)


def text_and_folded(net: DummyNet) -> None:
    filt = f"name == {net.dev}"
    cli = started("stackcount", "-K", "-p", str(ME), "--filter", filt, "net:net_dev_xmit", links=1)
    net.send(3, 444)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0] == "Tracing 1 tracepoint... Hit Ctrl-C to end."
    assert lines[1].startswith("  dev_hard_start_xmit")
    counts = [int(line) for line in lines if line.strip().isdigit()]
    assert sum(counts) == 3

    cli = started("stackcount", "-K", "-f", "-p", str(ME), "--filter", filt, "net:net_dev_xmit", links=1)
    net.send(2, 444)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines and all(line.startswith("net:net_dev_xmit;entry_SYSCALL_64") for line in lines)
    assert all(line.rsplit(" ", 1)[0].split(";")[-1].startswith("dev_hard_start_xmit") for line in lines)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 2


def test_cli_json_user_stacks():
    cli = started("stackcount", "-U", "-p", str(ME), "--json", "syscalls:sys_enter_connect", links=1)
    failed_connects(3)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = cli.json_records()
    assert sum(r["count"] for r in recs) == 3
    assert all(r["pid"] == ME and r["kstack"] is None and "connect" in r["ustack"][0] for r in recs)
    assert all(len(r["ustack_addrs"]) == len(r["ustack"]) for r in recs)


def exited_client(connects: int) -> int:
    """A child process that makes `connects` refused connects and exits, reaped: its PID."""
    code = (f"import socket\nfor _ in range({connects}):\n    s = socket.socket()\n"
            f"    s.connect_ex(('127.0.0.1', {free_port()}))\n    s.close()\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    assert child.wait(10) == 0
    assert not os.path.exists(f"/proc/{child.pid}")         # reaped: its maps are gone
    return child.pid


def test_user_stacks_of_a_process_that_exited_are_named():
    """Issue 20: -U printed raw addresses (0x7f...) for a process gone before the print."""
    with TracepointCount(["syscalls:sys_enter_connect"], user_stack=True) as c:
        pid = exited_client(2)
        got = [pc for pc in c.counts() if pc.pid == pid]
    assert sum(pc.count for pc in got) == 2
    for pc in got:
        _, u = frames(pc)
        assert "connect" in u[0] and not any(f.startswith("0x") for f in u), u


def test_cli_user_stacks_of_a_process_that_exited_are_named():
    cli = started("stackcount", "-U", "--json", "syscalls:sys_enter_connect", links=1)
    pid = exited_client(3)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = [r for r in cli.json_records() if r["pid"] == pid]
    assert sum(r["count"] for r in recs) == 3
    for r in recs:
        assert "connect" in r["ustack"][0] and not any(f.startswith("0x") for f in r["ustack"]), r["ustack"]

    cli = started("stackcount", "-U", "syscalls:sys_enter_connect", links=1)
    pid = exited_client(1)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    at = next(i for i, line in enumerate(lines) if line.startswith("    ") and line.endswith(f" [{pid}]"))
    assert lines[at + 1].strip() == "1"
    stack = []
    for line in reversed(lines[1:at]):          # its frames, above its "comm [pid]" line
        if not line.startswith("  ") or line.startswith("    "):
            break
        stack.insert(0, line.strip())
    assert "connect" in stack[0] and not any(f.startswith("0x") for f in stack), stack


def test_a_frame_beyond_its_file_is_unknown():
    """A build-id frame whose offset lies past the end of its file is a return
    address the frame-pointer walk made up: "[unknown]" (as BCC prints it), not
    "python3.11+0xffff..."."""
    from pytrace.core import usyms
    path = os.path.realpath(sys.executable)
    bid = usyms.elf_build_id(path)
    if bid is None:
        import pytest
        pytest.skip(f"{path} has no GNU build id note")
    usyms.build_ids().add(path)
    assert usyms.build_id_frame_name(bid, os.path.getsize(path) + 4096) == "[unknown]"
    assert usyms.build_id_frame_name(bid, 0x10) != "[unknown]"


def test_unknown_tracepoint_exits_2_with_near_matches():
    r = run_cli("stackcount", "net:net_dev_xmt")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "net:net_dev_xmit" in r.stderr
    r = run_cli("stackcount", "-i", "-3", "net:net_dev_xmit")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


# -- BCC's flags (issue 20) --------------------------------------------------------------------

def test_bcc_frames_symbols_offsets_and_raw_addresses():
    """BCC prints a frame's symbol; -s adds its offset, -v its address first."""
    got = {}
    for flags in ([], ["-s"], ["-s", "-v"]):
        cli = started("stackcount", "-K", *flags, "-p", str(ME), "t:syscalls:sys_enter_connect", links=1)
        failed_connects(2)
        rc, lines, err = cli.stop()
        assert rc == 0, err
        frames_ = [line[2:] for line in lines if line.startswith("  ") and not line.startswith("    ")]
        assert frames_, lines
        got[tuple(flags)] = frames_
    plain, offsets, verbose = got[()], got[("-s",)], got[("-s", "-v")]
    assert all("+0x" not in f for f in plain) and all(re.fullmatch(r"\S+\+0x[0-9a-f]+", f) for f in offsets)
    assert [f.split("+0x")[0] for f in offsets] == plain
    for f, v in zip(offsets, verbose):
        addr, text = v.split(None, 1)
        assert text == f and int(addr, 16) >= 0xffff800000000000


def test_regexp_pattern_and_cpu_filter():
    """-r: the pattern is a regular expression; -c CPU: only that CPU's hits."""
    if os.cpu_count() < 2:
        pytest.skip("needs two CPUs")
    cli = started("stackcount", "-K", "-r", "-p", str(ME), "^syscalls:sys_enter_conn", links=1)
    on0 = started("stackcount", "-K", "-c", "0", "-p", str(ME), "t:syscalls:sys_enter_connect", links=1)
    on1 = started("stackcount", "-K", "-c", "1", "-p", str(ME), "t:syscalls:sys_enter_connect", links=1)
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        failed_connects(3)
    finally:
        os.sched_setaffinity(0, old)
    results = [c.stop() for c in (cli, on0, on1)]
    for rc, _, err in results:
        assert rc == 0, err
    assert results[0][1][0] == "Tracing 1 tracepoint... Hit Ctrl-C to end."
    counts = [sum(int(line) for line in lines if line.strip().isdigit()) for _, lines, _ in results]
    assert counts == [3, 3, 0]


@pytest.mark.parametrize("pattern,needle", [("ip_output", "kprobes"), ("p::ip_output", "kprobes"),
                                            ("c:malloc", "uprobes"), ("p:c:malloc", "uprobes"),
                                            ("u:pthread:pthread_create", "USDT")])
def test_patterns_it_cannot_attach_say_why(pattern, needle):
    r = run_cli("stackcount", pattern)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert needle in r.stderr
