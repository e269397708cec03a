"""Kernels that do not show their BTF (/sys/kernel/btf/vmlinux): the tools
load with the BTF pytrace carries for the kernel's release (build.py:
bpftool gen min_core_btf of every object, for the lab's kernels), or with
--btf FILE, and otherwise say in one line what to do.

The BTF is hidden from one command at a time: it runs in a mount namespace
of its own, with an empty tmpfs over /sys/kernel/btf.  Part of the kernel
matrix: on the lab's Debian kernels the carried BTF is the one used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import relocation
from helpers import Cli, run_cli, tcp_roundtrip, wait_until
from pytrace.core import objects

HIDE = 'mount -t tmpfs -o size=64k,mode=0755 pytrace-nobtf /sys/kernel/btf; exec "$@"'
NO_BTF = ["unshare", "--mount", "--propagation", "private", "sh", "-euc", HIDE, "sh"]
RELEASE = os.uname().release


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """What a run without BTF learns (tp_btf refused) stays out of the suite's cache."""
    monkeypatch.setenv("PYTRACE_CACHE", str(tmp_path / "cache"))


def traced_transitions(*args: str) -> dict[int, list[tuple[str, str]]]:
    """tcpstates --json ARGS with the BTF hidden: the transitions of one loopback
    connection's three sockets, by socket."""
    cli = Cli("tcpstates", "--json", *args, prefix=NO_BTF)
    conn = tcp_roundtrip()
    ports = {conn.server_port, conn.client_port}

    def all_twelve() -> bool:
        cli.read_until(lambda line: False, 0.05)        # what arrived meanwhile, into cli.seen
        return sum(1 for r in cli.json_records() if r["lport"] in ports or r["rport"] in ports) >= 12
    wait_until(all_twelve, 5)
    rc, _, err = cli.stop()
    assert rc == 0 and err == "", err
    by_sk: dict[int, list] = {}
    for r in cli.json_records():
        if r["lport"] in ports or r["rport"] in ports:
            by_sk.setdefault(r["skaddr"], []).append((r["oldstate"], r["newstate"]))
    return by_sk


def check_connection(by_sk: dict) -> None:
    assert sorted(by_sk.values()) == sorted([
        [("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT1"),
         ("FIN_WAIT1", "FIN_WAIT2"), ("FIN_WAIT2", "CLOSE")],
        [("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED"), ("ESTABLISHED", "CLOSE_WAIT"),
         ("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSE")],
        [("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")]])


@pytest.mark.matrix
def test_the_carried_btf_of_this_release(own_cache):
    if objects.shipped_btf() is None:
        pytest.skip(f"pytrace carries no BTF for {RELEASE} (only for the lab's kernels: vmlinux/x86/btf/)")
    doctor = run_cli("doctor", prefix=NO_BTF)
    assert f"kernel BTF     MISSING; the one pytrace carries for this release is used: " \
           f"{objects.shipped_btf()}" in doctor.stdout, doctor.stdout + doctor.stderr
    check_connection(traced_transitions())


@pytest.mark.matrix
def test_every_program_relocates_against_the_carried_btf_as_against_the_kernels(own_cache):
    """build.py's carried BTF (bpftool gen min_core_btf) for this release
    relocates every program of every object exactly as the kernel's own BTF
    does, instruction for instruction; a program that needs the kernel's BTF
    beyond relocation (tp_btf, fentry: their attach target) is refused
    without it, as it must be."""
    if objects.shipped_btf() is None:
        pytest.skip(f"pytrace carries no BTF for {RELEASE} (only for the lab's kernels: vmlinux/x86/btf/)")
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([*NO_BTF, sys.executable, os.path.join(here, "relocation.py"), "default"],
                       capture_output=True, text=True, timeout=600, cwd=here)
    assert r.returncode == 0, r.stderr
    carried = json.loads(r.stdout)
    own = relocation.every_program("own")
    compared = 0
    for name, programs in own.items():
        for program, code in programs.items():
            if code is None:
                continue
            if carried[name][program] is None:
                assert program in relocation.kernel_btf_programs(name), f"{name} {program}: refused with the carried BTF"
                continue
            assert carried[name][program] == code, f"{name} {program}: relocated differently"
            compared += 1
    assert compared > 50, compared


@pytest.mark.matrix
def test_kfuncs_without_the_kernels_btf_are_one_line(own_cache):
    """tcpnagle's object names kfuncs (its sockops variant's), which libbpf
    finds only in the running kernel's own BTF: without it, the carried BTF
    cannot stand in, and the command says so in one line."""
    if objects.shipped_btf() is None:
        pytest.skip(f"pytrace carries no BTF for {RELEASE}: no tool gets as far as its kfuncs without one")
    r = run_cli("tcpnagle", prefix=NO_BTF)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert "its kfunc references need the kernel's own BTF (/sys/kernel/btf/vmlinux)" in r.stderr, r.stderr


@pytest.mark.matrix
def test_a_btf_file_given_with_btf(own_cache, tmp_path):
    copy = tmp_path / "vmlinux.btf"
    shutil.copyfile(objects.KERNEL_BTF, copy)
    check_connection(traced_transitions("--btf", str(copy)))


@pytest.mark.matrix
def test_without_any_btf_one_line_says_what_to_do(own_cache):
    if objects.shipped_btf() is not None:
        pytest.skip(f"pytrace carries BTF for {RELEASE}: a tool never lacks one here")
    r = run_cli("tcpstates", prefix=NO_BTF)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"this kernel ({RELEASE}) has no BTF in /sys/kernel/btf/vmlinux" in r.stderr
    assert "--btf FILE or PYTRACE_BTF" in r.stderr and "Traceback" not in r.stderr
