"""cli/prefetch: the CLI's speculative load, against the real kernel.

A command's first run remembers what it loaded; the next identical command
loads exactly that in a thread while the CLI imports, and Tracer.open()
takes it.  A load that would differ gets its own object, and the speculative
one is closed without ever having been attached."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys

import pytest

from helpers import Cli, bpf_prog_ids, free_port, released, tcp_roundtrip, wait_until
from test_tcpstates import CHILD, LISTENER, by_socket
from pytrace.core import cachefile, corebtf, libbpf
from pytrace.cli import prefetch
from pytrace.core.tracer import Tracer
from pytrace.tools.tcpstates import TcpStates


def check_server_side(events, conn) -> None:
    """-L port: the listener's and the accepted socket's changes, exactly."""
    socks = by_socket(events)
    assert sorted(tuple((e.oldstate, e.newstate) for e in evs) for evs in socks.values()) == \
        sorted([tuple(LISTENER), tuple(CHILD)])
    assert all(e.lport == conn.server_port for e in events)
    assert {e.rport for e in events} == {0, conn.client_port}


def speculated_and_traced(argv: list[str], port: int) -> tuple[str, str | None]:
    """`tcpstates ARGV` started as the CLI starts it (speculated), the
    speculative object taken by the tracer, and a connection to port traced
    exactly: (the variant's hook, the BTF the object was relocated against)."""
    prefetch.start("tcpstates", argv)
    ptr = prefetch._pending[2]
    with TcpStates(lports=[port]) as tracer:
        assert tracer.obj.ptr == ptr
        used = tracer.variant.hook, tracer.obj.relocation_btf
        conn = tcp_roundtrip("127.0.0.1", port)
        events = list(tracer.events(duration=0.3))
    check_server_side(events, conn)
    return used


@pytest.fixture
def cli_state(tmp_path, monkeypatch):
    """prefetch as a fresh CLI process has it, remembering under tmp_path."""
    monkeypatch.setattr(cachefile, "DIR", str(tmp_path))
    monkeypatch.setattr(Tracer, "preloads", prefetch)      # as the CLI sets it (a library user's is None)

    def fresh():
        for name, value in (("_tool", None), ("_argv", ()), ("_done", None), ("_pending", None),
                            ("_claimed", None), ("_args", None), ("_noted", None)):
            monkeypatch.setattr(prefetch, name, value)
    fresh()
    yield fresh
    prefetch._discard()
    fresh()


def test_a_remembered_command_is_loaded_ahead_and_taken(cli_state):
    port = free_port()
    argv = ["-L", str(port)]
    prefetch.start("tcpstates", argv)
    assert prefetch._done is None                      # first run: nothing remembered, no thread
    with TcpStates(lports=[port]) as first:
        hook = first.variant.hook
    assert os.path.exists(os.path.join(cachefile.DIR, prefetch._name("tcpstates")))

    cli_state()                                        # the same command again
    assert speculated_and_traced(argv, port)[0] == hook


def test_the_speculative_load_relocates_against_the_reduced_btf(cli_state):
    """What the first run relocated against (core/corebtf's file of this boot)
    is remembered and used ahead; another boot's file is not: the kernel's
    own BTF serves then, as right and slower."""
    port = free_port()
    argv = ["-L", str(port)]
    prefetch.start("tcpstates", argv)
    with TcpStates(lports=[port]) as first:
        reduced = first.obj.relocation_btf
    assert reduced and corebtf.of_this_boot(reduced)
    known = cachefile.read_dict(prefetch._name("tcpstates"))
    assert known[tuple(argv)][6] == reduced

    cli_state()
    assert speculated_and_traced(argv, port)[1] == reduced

    stale = reduced.replace(f"-{corebtf._boot_id()}-", "-0123456789abcdef-")
    os.link(reduced, stale)
    entry = known[tuple(argv)]
    known[tuple(argv)] = (*entry[:6], stale, entry[7])
    cachefile.write_dict(prefetch._name("tcpstates"), known)
    cli_state()
    assert speculated_and_traced(argv, port)[1] is None


def test_an_object_remembered_by_another_installation_is_not_loaded(cli_state, tmp_path):
    """The cache is shared by every pytrace a user runs (two venvs, an upgrade in
    place): an object another installation remembered may have other record
    layouts, so only this installation's objects are speculated on."""
    import shutil
    from pytrace.core import objects
    port = free_port()
    argv = ["-L", str(port)]
    prefetch.start("tcpstates", argv)
    with TcpStates(lports=[port]):
        pass
    name = os.path.join(cachefile.DIR, prefetch._name("tcpstates"))
    known = cachefile.read_dict(prefetch._name("tcpstates"))
    entry = known[tuple(argv)]
    assert entry[2] == os.path.join(objects.BPF_DIR, "tcpstates.bpf.o")

    cli_state()                                        # this installation's: speculated
    prefetch.start("tcpstates", argv)
    assert prefetch._pending is not None
    prefetch._discard()

    other = tmp_path / "other" / "pytrace" / "bpf"
    other.mkdir(parents=True, mode=0o755)
    copy = shutil.copy2(entry[2], other / "tcpstates.bpf.o")
    st = os.stat(copy)
    known[tuple(argv)] = (*entry[:2], str(copy), (st.st_size, st.st_mtime_ns), *entry[4:])
    with open(name, "wb") as fh:
        fh.write(marshal.dumps(known))
    cli_state()                                        # another installation's: not even opened
    prefetch.start("tcpstates", argv)
    assert prefetch._pending is None and prefetch._done is None


def test_another_load_is_not_taken_and_the_command_stops_speculating(cli_state):
    port, other = free_port(), free_port()
    argv = ["-L", str(port)]
    prefetch.start("tcpstates", argv)
    with TcpStates(lports=[port]):
        pass

    cli_state()
    prefetch.start("tcpstates", argv)
    with TcpStates(lports=[other]) as tracer:          # the same command now means another load
        # the events tell which load is attached (object pointers do not: the
        # speculative object is freed first and malloc may reuse its address)
        tcp_roundtrip("127.0.0.1", port)
        conn = tcp_roundtrip("127.0.0.1", other)
        events = list(tracer.events(duration=0.3))
    check_server_side(events, conn)                    # nothing of port: its speculative load never attached
    assert prefetch._remembered("tcpstates")[tuple(argv)] == prefetch.UNSTABLE

    cli_state()
    prefetch.start("tcpstates", argv)
    assert prefetch._done is None                      # no more speculation for it


def test_an_untaken_speculative_load_leaves_nothing_behind(cli_state):
    """A run that stops before loading (say, Ctrl-C during start-up) closes the
    speculative object at exit: no program stays loaded."""
    port = free_port()
    prefetch.start("tcpstates", ["-L", str(port)])
    with TcpStates(lports=[port]):
        pass
    before = bpf_prog_ids()
    cli_state()
    prefetch.start("tcpstates", ["-L", str(port)])
    with prefetch._done:                               # the load finished: its program exists
        pass
    mine = bpf_prog_ids(os.getpid()) - before
    assert mine
    prefetch._discard()
    assert released(mine)


# What a second run of the CLI does first: nothing but speculation may come
# before the load thread starts, and neither ctypes nor os (~3.5 ms together)
# is part of it (core/barelibbpf).
EARLY = """
import sys
sys.path[:0] = PATHS
from pytrace.cli import prefetch
prefetch.start("tcpstates", ARGV)
early = sorted({"ctypes", "os"} & set(sys.modules))
with prefetch._done:
    pass
print(early, prefetch._pending[3])
"""


def test_the_load_starts_before_ctypes_and_os_are_imported(cli_state, tmp_path):
    port = free_port()
    argv = ["-L", str(port)]
    prefetch.start("tcpstates", argv)
    with TcpStates(lports=[port]):
        pass
    code = EARLY.replace("PATHS", repr(sys.path)).replace("ARGV", repr(argv))
    before = bpf_prog_ids()
    # -S: the CLI's interpreter does not import site (and os with it)
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTRACE_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] 0"          # loaded by the thread, before either import
    assert wait_until(lambda: not bpf_prog_ids() - before, 5)    # and closed at exit, never taken


def test_an_object_opened_by_another_libbpf_is_closed_not_taken(cli_state):
    """The speculation dlopens the libbpf the last run used, by path, before
    core/libbpf picks its own.  When they differ (PYTRACE_LIBBPF changed, say)
    an object opened by one library is never handed to the other."""
    port = free_port()
    argv = ["-L", str(port)]
    prefetch.start("tcpstates", argv)
    with TcpStates(lports=[port]):
        pass
    bundled = os.path.realpath(os.path.join(libbpf.LIB_DIR, "libbpf.so.1"))    # build.py's copy
    assert os.path.exists(bundled) and bundled != libbpf.lib_path
    known = prefetch._remembered("tcpstates")
    assert known[tuple(argv)][-1] == (libbpf.lib_path,)
    known[tuple(argv)] = known[tuple(argv)][:-1] + ((bundled,),)
    cachefile.write(prefetch._name("tcpstates"), marshal.dumps(known))

    cli_state()
    before = bpf_prog_ids()
    prefetch.start("tcpstates", argv)
    with prefetch._done:
        pass
    speculative = bpf_prog_ids(os.getpid()) - before
    assert speculative
    with TcpStates(lports=[port]) as tracer:
        # its programs released, so not taken (an object pointer would not
        # tell: malloc may give the new object the freed one's address)
        assert released(speculative)                   # closed through the library that opened it
        conn = tcp_roundtrip("127.0.0.1", port)
        events = list(tracer.events(duration=0.3))
    check_server_side(events, conn)


def test_remembered_arguments_are_used_while_their_sources_are_unchanged(cli_state, tmp_path):
    port = free_port()
    source = tmp_path / "tool.py"
    source.write_text("# v1\n")
    prefetch.start("tcpstates", ["-L", str(port)])
    prefetch.note_args({"localport": [port], "json": False}, (str(source),))
    with TcpStates(lports=[port]):
        pass

    cli_state()
    prefetch.start("tcpstates", ["-L", str(port)])
    assert prefetch.parsed_args() == {"localport": [port], "json": False}
    source.write_text("# v2, another default\n")
    assert prefetch.parsed_args() is None     # parse again


def test_the_cli_speculates_on_its_second_run(tmp_path):
    """Two runs of the same command line through the CLI, whose second run
    starts a speculative load and skips argument parsing: both print the
    connection's events and only those of -L's port, the second without ever
    importing argparse (nor re, json or enum, which only it needed).  That
    the second run's object is the speculative one is checked in process
    above (the CLI leaves no trace of it)."""
    port, other = free_port(), free_port()
    env = {"PYTRACE_CACHE": str(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"}
    for run in range(2):
        cli = Cli("tcpstates", "-L", str(port), env=env)
        tcp_roundtrip("127.0.0.1", other)
        tcp_roundtrip("127.0.0.1", port)
        assert cli.read_until(lambda l: "LAST_ACK" in l and "CLOSE" in l), f"run {run}: {cli.seen}"
        rc, _, err = cli.stop()
        assert rc == 0, err
        assert not [l for l in cli.seen if f" {other} " in l], cli.seen      # the filter held
        assert os.path.exists(os.path.join(tmp_path, "spec-tcpstates.marshal"))
        imported = {l.split("|")[-1].strip() for l in err.splitlines() if l.startswith("import time:")}
        assert ("argparse" in imported) == (run == 0), sorted(imported)
        if run == 1:
            assert not imported & {"re", "json", "enum"}, sorted(imported & {"re", "json", "enum"})


def test_a_changed_module_that_shaped_the_parse_parses_again(tmp_path):
    """The remembered parse is keyed by every pytrace module the parsing run had
    imported, not only the tool's own: a change to pytrace/spec (which adds
    --duration and the container options to every tool) parses again."""
    import pytrace.spec
    port = free_port()
    env = {"PYTRACE_CACHE": str(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"}

    def parsed() -> bool:
        cli = Cli("tcpstates", "-L", str(port), env=env)
        rc, _, err = cli.stop()
        assert rc == 0, err
        return any(l.split("|")[-1].strip() == "argparse" for l in err.splitlines() if l.startswith("import time:"))
    assert parsed() and not parsed()               # parsed once, then remembered
    st = os.stat(pytrace.spec.__file__)
    os.utime(pytrace.spec.__file__, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        assert parsed()                            # spec/__init__.py changed: parsed again
    finally:
        os.utime(pytrace.spec.__file__, ns=(st.st_atime_ns, st.st_mtime_ns))
