"""spec/commands.py: the tools whose command line has subcommands (vnet,
tunnelmon), parsed in this process with no privilege and no BPF."""

from __future__ import annotations

import contextlib
import io

import subprocess
import sys

import pytest

from pytrace.cli import cliutil
from pytrace.cli.argparser import ArgParser
from pytrace.spec import EVENTS, Option
from pytrace.spec.commands import Command, CommandSpec, Records
from pytrace.tools import tunnelmon, vnet


@pytest.fixture(autouse=True)
def _no_host_checks(monkeypatch):
    """The parse only: no file or namespace of this host is looked at (record's
    default store ./vnet.db need not be writable by whoever runs the unit tier)."""
    monkeypatch.setattr(cliutil, "_check_host", False)


def parse(spec: CommandSpec, *argv: str):
    parser = ArgParser(prog=f"pytrace {spec.name}")
    spec.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_vnet_commands_and_the_one_that_streams():
    assert vnet.SPEC.command_words() == [(), ("record",), ("report",), ("demo",), ("ctl",), ("ctl", "add"),
                                         ("ctl", "remove"), ("ctl", "list"), ("ctl", "reload")]
    assert vnet.SPEC.streaming() == ("record",) and not vnet.SPEC.streams
    assert tunnelmon.SPEC.streaming() == () and tunnelmon.SPEC.streams
    assert [w for w in vnet.SPEC.command_words()[1:] if vnet.SPEC.command(w).streams] == [("record",)]
    assert vnet.SPEC.hooks == ("tp_btf", "raw_tp", "tracepoint")
    assert tunnelmon.SPEC.hooks == ("tc", "xdp")


def test_a_command_keeps_the_flags_its_parent_parsed():
    """ctl's --json before its own command (add) is kept: a subcommand's
    defaults must not replace what the command above it parsed."""
    args = parse(vnet.SPEC, "ctl", "-s", "/run/x.sock", "--json", "-v", "add", "mid", "--device", "lo",
                 "--direction", "ingress", "--method", "tc")
    assert (args.command, args.op, args.json, args.verbose, args.label) == ("ctl", "add", True, True, "mid")
    args = parse(vnet.SPEC, "ctl", "-s", "/run/x.sock", "list")
    assert (args.json, args.verbose, args.ebpf, args.hook) == (False, False, False, None)


def test_negative_durations_are_values_of_record_only():
    assert parse(vnet.SPEC, "record", "--clock-offset", "-3ms").clock_offset == -3_000_000
    assert parse(vnet.SPEC, "record", "--clock-offset=-1.5us").clock_offset == -1_500
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        parse(vnet.SPEC, "report", "--offset", "-3ms")
    assert stop.value.code == 2 and err.getvalue().count("\n") == 1


def test_tunnelmon_runs_itself_or_simulates():
    args = parse(tunnelmon.SPEC, "--dev", "eth0", "-i", "2", "--json")
    assert (args.command, args.dev, args.interval, args.json) == (None, "eth0", 2, True)
    args = parse(tunnelmon.SPEC, "simulate", "--hosts", "4", "--from", "h0c0")
    assert (args.command, args.hosts, args.sources) == ("simulate", 4, "h0c0")


def test_the_argument_cache_is_keyed_on_every_file_that_shapes_the_parse():
    """cli/prefetch keeps a parse while every pytrace module the parsing run
    had imported is unchanged: for tunnelmon, simulate's options are declared
    in tunnelmon/simulate.py; for any tool, the spec and cliutil."""
    code = ("import sys\nfrom pytrace import tools\nfrom pytrace.cli import prefetch\n"
            "from pytrace.cli.argparser import ArgParser\n"
            "p = ArgParser(prog='x')\ntools.command(sys.argv[1]).add_arguments(p)\n"
            "print('\\n'.join(prefetch._imported_files()))\n")
    for tool, wanted in (("tunnelmon", (("tunnelmon", "simulate.py"), ("tools", "tunnelmon.py"))),
                         ("vnet", (("tools", "vnet.py"), ("spec", "commands.py"))),
                         ("tcptop", (("tools", "tcptop.py"), ("spec", "__init__.py"), ("cli", "cliutil.py")))):
        out = subprocess.run([sys.executable, "-c", code, tool], capture_output=True, text=True, check=True).stdout
        names = {tuple(path.rsplit("/", 2)[-2:]) for path in out.split()}
        assert set(wanted) <= names, (tool, sorted(names))


def test_declarations_that_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="instead="):
        Command("report", "a report")                                  # neither streams nor says why not
    with pytest.raises(ValueError, match="instead="):
        Command("record", "records", streams=True, instead="prints")   # both
    with pytest.raises(ValueError, match="dest="):
        Command("ctl", "talk", instead="talks", commands=(Command("add", "add", instead="asks"),))
    ok = Command("record", "records", streams=True, options=(Option("-c"),))
    with pytest.raises(ValueError, match="runs itself"):
        CommandSpec("vnet", "x", vnet.VnetTracer, EVENTS, commands=(ok,), records=Records("a"),
                    renderer=lambda s, a, o: None)                     # neither run= nor required=
    bad = Command("record", "records", streams=True, examples=(("pytrace other record", "x"),))
    with pytest.raises(ValueError, match="not a pytrace vnet command line"):
        CommandSpec("vnet", "x", vnet.VnetTracer, EVENTS, commands=(bad,), records=Records("a"), required=True,
                    renderer=lambda s, a, o: None)
