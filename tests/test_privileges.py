"""Privilege and environment errors name the real cause.

Run as nobody (uid 65534, through setpriv) with some capabilities and not
others, each tool says which capability is missing for what, in one line
with status 1, instead of passing on the EPERM of a system call (setns, a
uprobe) or blaming something else (libc, an unmounted tracefs); and the
capability it names is the one that was missing.
"""

from __future__ import annotations

import os

import pytest

from helpers import Cli, netns, run_cli
from pytrace.core import tracefs

NO_CACHE = {"PYTRACE_CACHE": "/nonexistent/pytrace-cache"}


def nobody(caps: str = "") -> list[str]:
    """setpriv as nobody, with these capabilities (e.g. '+bpf,+perfmon') or none."""
    args = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if caps:
        args += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    return args


def one_line(r, needle: str) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert (r.returncode, len(r.stderr.strip().splitlines())) == (1, 1), r.stderr
    assert needle in r.stderr, r.stderr


def test_tunnelmon_netns_names_the_capability():
    with netns(f"ptpriv{os.getpid()}") as ns:
        r = run_cli("tunnelmon", "--dev", "lo", "--netns", ns, env=NO_CACHE, prefix=nobody("+bpf,+perfmon,+net_admin"))
        one_line(r, "entering another network namespace (--netns) needs CAP_SYS_ADMIN")
        assert "setns" not in r.stderr and "Errno" not in r.stderr
        r = run_cli("tunnelmon", "--dev", "lo", "--netns", ns, env=NO_CACHE, prefix=nobody())
        one_line(r, "tunnelmon needs root, or CAP_BPF and CAP_PERFMON and CAP_NET_ADMIN "
                    "(missing: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)")
    # a namespace file this user may not even look at: the privilege, not "no such file"
    r = run_cli("tunnelmon", "--dev", "lo", "--netns", "/proc/1/ns/net", env=NO_CACHE,
                prefix=nobody("+bpf,+perfmon,+net_admin"))
    one_line(r, "needs CAP_SYS_ADMIN")


def test_gethostlatency_names_cap_sys_admin_not_libc():
    cli = Cli("gethostlatency", env=NO_CACHE, prefix=nobody("+bpf,+perfmon"), ready=False)
    try:
        rc = cli.proc.wait(15)
    except Exception:
        cli.stop()
        pytest.skip("uprobes attach with CAP_BPF and CAP_PERFMON on this kernel")
    err = cli.stderr()
    assert (rc, len(err.strip().splitlines())) == (1, 1), err
    assert "attaching uprobes needs CAP_SYS_ADMIN" in err and "glibc" not in err and "--libc" not in err, err


@pytest.fixture
def closed_tracefs():
    where = tracefs.mounted()
    if where is None or os.stat(where).st_mode & 0o005:
        pytest.skip("needs tracefs mounted and closed to other users (mode 700, the kernel's default)")
    return where


def test_a_closed_tracefs_is_named_not_mounted_again(closed_tracefs):
    r = run_cli("tcpstates", "--hook", "tracepoint", env=NO_CACHE, prefix=nobody("+bpf,+perfmon"))
    one_line(r, f"tracefs is mounted at {closed_tracefs} but closed to uid 65534 (mode 700): "
                "classic tracepoints need root or CAP_DAC_READ_SEARCH")
    assert "mount tracefs" not in r.stderr
    doctor = run_cli("doctor", env=NO_CACHE, prefix=nobody("+bpf,+perfmon"))
    line = next(l for l in doctor.stdout.splitlines() if l.startswith("tracefs"))
    assert line == (f"tracefs        {closed_tracefs} (closed to uid 65534 (mode 700): "
                    "classic tracepoints need root or CAP_DAC_READ_SEARCH)")


def test_the_capability_named_for_tracefs_is_enough(closed_tracefs):
    cli = Cli("tcpstates", "--hook", "tracepoint", env=NO_CACHE, prefix=nobody("+bpf,+perfmon,+dac_read_search"))
    rc, _, err = cli.stop()
    assert rc == 0, err
