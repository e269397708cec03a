"""Every tool's command line, built in this process with no privilege and no
BPF: the options its SPEC declares parse, its -h ends with its examples, and
a bad value or an unknown flag ends in status 2 with one line (the contract
test, tests/test_contract.py, runs each as a command, as root)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from pytrace import tools as registry
from pytrace.cli.argparser import ArgParser

TOOLS = registry.names()


def parser_of(name: str) -> ArgParser:
    parser = ArgParser(prog=f"pytrace {name}")
    registry.command(name).add_arguments(parser)
    return parser


def command_parser(name: str) -> tuple[ArgParser, list[str]]:
    """The parser that holds the tool's options, and the argv that reaches it: a
    tool whose command line needs a subcommand (vnet record|report|...) has them
    on its first subcommand's."""
    parser = parser_of(name)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and action.required:
            first = next(iter(action.choices))
            return action.choices[first], [first]
    return parser, []


def exit_of(parser: ArgParser, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        parser.parse_args(argv)
    return stop.value.code, err.getvalue()


@pytest.mark.parametrize("name", TOOLS)
def test_help_has_the_shared_options_and_ends_with_examples(name):
    sub, _argv = command_parser(name)
    assert "--json" in sub.format_help()
    text = parser_of(name).format_help()
    spec = registry.spec(name)
    if spec is None:
        pytest.skip(f"{name} declares no SPEC yet (its examples are its own help's)")
    assert spec.examples, f"{name}: a SPEC without examples"
    assert text.rstrip().endswith(spec.examples[-1][1]), text[-300:]
    for example, _what in spec.examples:
        assert example in text


@pytest.mark.parametrize("name", TOOLS)
def test_unknown_flag_is_status_2_and_one_line(name):
    _sub, argv = command_parser(name)
    code, err = exit_of(parser_of(name), [*argv, "--no-such-flag-xyz"])
    assert code == 2
    assert err.count("\n") == 1 and "--no-such-flag-xyz" in err, err


@pytest.mark.parametrize("name", TOOLS)
def test_hook_choices_are_the_variants(name):
    tool = registry.command(name)
    variants = [v.hook for v in getattr(tool, "variants", ())]
    if not variants:
        pytest.skip(f"{name} has no hook variants to choose from")
    _sub, argv = command_parser(name)
    code, err = exit_of(parser_of(name), [*argv, "--hook", "no-such-hook"])
    assert code == 2, err
    choices = set(re.findall(r"'([a-z_]+)'", err.partition("choose from")[2]))
    if argv:    # a subcommand's --hook may choose among some kinds of points only (vnet: tracepoints)
        assert choices and choices <= set(variants), err
    else:
        assert choices == set(variants), err


@pytest.mark.parametrize("name", TOOLS)
def test_one_convention_for_duration_interval_and_count(name):
    """--duration SEC on every tool (-d too, unless its BCC namesake gives -d
    another meaning); an interval tool's period and count as -i SEC -c N, or as
    BCC's positional [interval [count]] where its namesake has that."""
    spec = registry.spec(name)
    if spec is None:
        pytest.skip(f"{name} declares no SPEC yet")
    sub, words = command_parser(name)
    parser = parser_of(name)
    assert parser.parse_args([*words, "--duration", "2"]).duration == 2
    flags = sub._option_string_actions
    if flags["--duration"].option_strings != ["-d", "--duration"]:
        assert "-d" in flags, f"{name}: -d is free, and is not --duration"
    if spec.kind == "event stream":
        return
    argv = ["-i", "3"] if "-i" in flags else ["3"]
    argv += ["--count", "4"] if "--count" in flags else ["4"]
    args = parser.parse_args([*words, *argv])
    assert (args.interval, args.count) == (3, 4)


@pytest.mark.parametrize("name", TOOLS)
def test_an_event_stream_can_leave_its_reader_unscheduled(name):
    """--no-reader-sched turns cli/cliutil's reader scheduling (CatchUp's renice,
    SpreadReader's CPU rotation) off, on every event stream with BPF."""
    spec = registry.spec(name)
    if spec.kind != "event stream" or spec.mixed or not spec.variants or spec.commands:
        pytest.skip(f"{name} does not stream events through cli/cliutil.stream_events")
    assert parser_of(name).parse_args(["--no-reader-sched"]).no_reader_sched is True
