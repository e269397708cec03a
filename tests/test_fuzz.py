"""The fuzzer: every option of every tool and command, with bad values.

The cases come from the real parsers (each tool module's add_arguments,
subcommands included, and the commands' own), so a new option is fuzzed as
soon as it exists, and an option of a kind this file does not know fails the
test until it is classified below.  For each option the bad values follow from
its type: out of range (below, above, 99999999999, 10**30), not a number,
empty, a path that does not exist, a file of the wrong kind (/etc/passwd as a
network namespace, a BTF file, a libc...), unknown names.

Expected, for every case: no traceback, ever; exit status 2 and exactly one
line on stderr (bad input is a usage error), which names the option or its
value, prints no empty name ("--tbf : ..."), and blames no other flag or
file of the command line for it; the bad value never runs (a case still
running after its time is an accepted bad value); and nothing is left in the
kernel.  Each command gets what it needs besides the fuzzed option (a
tracepoint to count, a subcommand, a store to report on: base_args), so
that a bad value meets its own check, not the missing argument's.

Most values are refused by the parser itself: those run through the parser
in this process (the CLI builds the same parser from the same add_arguments,
and ArgParser reports an error the same way), with a sample of them through
the real CLI.  A value the parser lets through is refused at run time, so
each of those runs as a real `pytrace` process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from helpers import PYTRACE, Cli, free_port, tcp_roundtrip, wait_until
import kernelstate
from pytrace import tools as registry
from pytrace.commands import exporter, replay
from pytrace.cli import cliutil
from pytrace.cli.argparser import ArgParser
from pytrace.vnet.store import SqliteStore

HUGE = ("99999999999", str(10**30))
NOT_NUMBERS = ("abc", "", "1.5", "0x10", "1e3", " ")
RUN_TIMEOUT = 8.0          # a refused value ends well before; one still running was accepted
CLI_SAMPLE = 3             # parser-refused cases per command also run through the real CLI


@dataclass
class Case:
    command: tuple[str, ...]        # ("tunnelmon", "simulate")
    option: str                     # "--hosts" (or a positional's name)
    value: str
    argv: list[str] = field(default_factory=list)   # the whole command line after `pytrace`
    names: tuple[str, ...] = ()     # what a line may call the option: its flags, or a positional's names

    def __str__(self) -> str:
        return " ".join(self.argv)


# -- bad values by kind ---------------------------------------------------------------

def numbers(low: int, high: int) -> list[str]:
    out = [str(low - 1), str(high + 1), *HUGE, *NOT_NUMBERS]
    if low > 0:
        out.append("0")
    if low >= 0:
        out.append("-1")
    return out


def path_values(garbage: str) -> list[str]:
    """A path option: missing, empty, a directory, and a file of the wrong kind."""
    return ["/nonexistent/pytrace-fuzz", "", "/", garbage]


# By the type's name (argparse types defined in pytrace) ...
BY_TYPE = {
    "process_id": lambda a, env: ["0", "-1", str(cliutil.pid_max() + 1), str(cliutil.PID_MAX_LIMIT + 1),
                                  *HUGE, *NOT_NUMBERS],
    "port": lambda a, env: ["0", "65536", "-1", *HUGE, "abc", ""],
    "port list": lambda a, env: ["0", "65536", "1,,2", "80,abc", "", ",", "-1", HUGE[0]],
    "address": lambda a, env: ["999.1.1.1", "abc", "", "::g", "1.2.3.4/8"],
    "device_name": lambda a, env: ["", "x" * 16, "a/b", "nosuchdev0"],
    "min_latency": lambda a, env: ["-1", "nan", "inf", "abc", "", "1e400"],
    "ring_mb": lambda a, env: ["3", "0", "2048", "-1", *HUGE, "abc"],
    "duration_ns": lambda a, env: ["abc", "1e400s", "", "5x", "1s1"],
    "host_offset": lambda a, env: ["=1ms", "x", "h=abc", ""],
    "_subnets_arg": lambda a, env: ["999.0.0.0/8", "abc", "", "10.0.0.0/99", "10.0.0.0/8,,"],
    "pattern": lambda a, env: ["", "a b", "$(x)", "a;b"],
    "sort_key": lambda a, env: ["nosuch", ""],
    "web_address": lambda a, env: ["abc:80", "127.0.0.1:0", "127.0.0.1:65536", ":", "", HUGE[0]],
    "_web_address": lambda a, env: ["abc:80", "127.0.0.1:0", "127.0.0.1:65536", ":", "", HUGE[0]],
    "tracepoint_spec": lambda a, env: ["", "nocolon", ":x", "x:", "a:b:c:d"],
    "pattern_arg": lambda a, env: ["", "u:lib:probe", "p::func", "p:lib:func", "tcp_sendmsg", "a:b:c:d"],
    "comm_part": lambda a, env: ["", "x" * 16],
    "_vni_list": lambda a, env: ["0", "16777216", "a", "1,1", "", "-5"],
    "_rate": lambda a, env: ["0", "-1", "nan", "inf", "10001", "abc", ""],
    "_client_rate": lambda a, env: ["x", "=5", "h0c0=0", "h0c0=abc", "nosuch=5"],
    "btf_file": lambda a, env: path_values(env["garbage"]),
    "elf_file": lambda a, env: path_values(env["garbage"]),
    "netns_ref": lambda a, env: ["/etc/passwd", "nosuchns", "", "0", HUGE[0], "12345", "/nonexistent/ns", "a/b"],
    "cgroup_ref": lambda a, env: ["", "0", HUGE[0], "/nonexistent/cgroup", "../..", env["garbage"]],
    "container_ref": lambda a, env: ["", "a/b", "x" * 256, "a\tb"],
    "cpu_number": lambda a, env: ["-1", str(os.cpu_count() or 1), str(1 << 32), *HUGE, *NOT_NUMBERS],
    "pinned_map": lambda a, env: ["", "relative/map", "/nonexistent/map", "/", env["garbage"]],
    "output_file": lambda a, env: ["", "/nonexistent/x.out", "/"],
    "sqlite_file": lambda a, env: ["", "/nonexistent/x.db", "/", env["garbage"]],
    "tc_rate": lambda a, env: ["abc", "", "-1mbit", "0kbit", "4 mbit"],
    "_label": lambda a, env: ["", "a b", "a\tb"],
    "_new_file": lambda a, env: ["", "/nonexistent/x.db", "/etc/passwd", "/tmp"],
    "_influx_url": lambda a, env: ["", "ftp://x/db", "http://", "abc", "http://127.0.0.1:99999/db"],
    "_allow_host": lambda a, env: ["", "http://x", "a b", "x:80", "a..b", "[::1]:80"],
    "field_list": lambda a, env: ["nosuchfield", ",", "len,,rc", ",len", "len,len", "len,rc,name,skbaddr,len"],
    "_ctl_socket": lambda a, env: ["/nonexistent/x.sock", "", "/", env["garbage"], env["vnet_config"]],
    # replay --since/--until: every form, malformed and past what a recording's
    # int64 nanoseconds hold (as +SECONDS, Unix seconds and date-times)
    "recording_time": lambda a, env: ["abc", "99:99", "25:00", "", "+1e400", "-5", *HUGE,
                                      "99999999999999999999", "+99999999999999999999", "+" + "9" * 400,
                                      "9" * 400, "9223372037", "+9223372037", "+2562047789h",
                                      "9999-12-31", "0001-01-01", "1969-12-31T00:00:00+00:00"],
}

# ... and for plain strings, by the option's destination
BY_DEST = {
    "cgroup": lambda a, env: path_values(env["garbage"]),
    "dev": lambda a, env: ["nosuchdev0", "", "x" * 16],
    "device": lambda a, env: ["nosuchdev0", "", "x" * 16],
    "config": lambda a, env: path_values(env["garbage"]),
    "file": lambda a, env: path_values(env["garbage"]),
    "db": lambda a, env: ["/nonexistent/x.db", "/", env["garbage"]],
    "ctl": lambda a, env: ["/nonexistent/x.sock", ""],
    "where": lambda a, env: ["nofield=1", "=", "", "a"],
    "listen": lambda a, env: ["abc", "127.0.0.1:99999", "", "999.0.0.1:80"],
    "filter": lambda a, env: ["(((", "a <", "", "nosuchfield == 1"],
    "tracepoints": lambda a, env: ["nosuch:tp", "a", "../../x:y", ""],
    "tbf": lambda a, env: ["nosuch:dev", "abc", ""],
    "loud": lambda a, env: ["nosuch", ""],
    "sources": lambda a, env: ["nosuch", "", "h0c0,,"],
    "name": lambda a, env: ["", "a/b", "x" * 200, ".."],
    "reference": lambda a, env: ["nosuchhost", ""],
}

# Plain strings where any value is a valid one: nothing to fuzz
FREE_TEXT = {("vnet", "ctl", "add", "label"), ("vnet", "ctl", "remove", "label")}


def bad_values(command: tuple[str, ...], action: argparse.Action, env: dict) -> list[str] | None:
    """The bad values of one option, or None if this file does not know its kind."""
    if action.choices is not None and action.type is None:
        return ["nosuch", ""]
    if action.type is not None:
        name = getattr(action.type, "__name__", "")
        limits = getattr(action.type, "range_text", None)
        if name in BY_TYPE:
            return BY_TYPE[name](action, env)
        if limits and name != "process_id":
            low, high = (int(x) for x in limits.split("-"))
            return numbers(low, high)
        return None
    if (*command, action.dest) in FREE_TEXT:
        return []
    make = BY_DEST.get(action.dest)
    return make(action, env) if make else None


# -- the parsers -----------------------------------------------------------------------

def tool_parser(name: str) -> ArgParser:
    p = ArgParser(prog=f"pytrace {name}")      # as cli._run_tool builds it
    registry.command(name).add_arguments(p)
    return p


def command_parser(name: str) -> ArgParser:
    p = ArgParser(prog=f"pytrace {name}")
    {"replay": replay, "exporter": exporter}[name].add_arguments(p)
    return p


def walk(parser: ArgParser, command: tuple[str, ...]):
    """(command, parser, action) for every option that takes a value, subcommands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from walk(subparser, (*command, sub))
        elif action.nargs != 0 and not isinstance(action, argparse._HelpAction):
            yield command, parser, action


def base_args(command: tuple[str, ...], env: dict) -> dict[str, list[str]]:
    """What a command needs besides the fuzzed option to get as far as using
    it (required options, a recording to replay, a tracepoint to count, a
    store with records to report on), by the option it sets.  Without them a
    bad value was refused for the missing argument, never for itself."""
    return {
        ("replay",): {"file": [env["recording"]]},
        ("exporter",): {"config": ["--config", env["exporter_config"]]},
        ("count",): {"tracepoints": ["net:net_dev_xmit"]},
        ("stackcount",): {"pattern": ["t:net:net_dev_xmit"]},
        ("tunnelmon",): {"dev": ["--dev", "lo"]},
        ("vnet", "record"): {"config": ["-c", env["vnet_config"]], "db": ["-o", env["vnet_db"]]},
        ("vnet", "report"): {"db": [env["vnet_store"]]},
        ("vnet", "ctl", "add"): {"label": ["x"], "device": ["--device", "lo"], "direction": ["--direction", "ingress"],
                                 "method": ["--method", "tc"]},
        ("vnet", "ctl", "remove"): {"label": ["x"]},
    }.get(command, {})


def parent_args(command: tuple[str, ...], env: dict) -> list[str]:
    """What a subcommand's parent needs before the subcommand's name."""
    return {("vnet", "ctl"): ["-s", env["ctl_socket"]]}.get(command, [])


def trailing_args(command: tuple[str, ...]) -> list[str]:
    """What a command with subcommands needs after its own fuzzed option: a
    subcommand (one that changes nothing), or it stops at the missing one."""
    return {("vnet", "ctl"): ["list"]}.get(command, [])


def command_line(command: tuple[str, ...], action: argparse.Action, value: str, env: dict) -> list[str]:
    """The whole argv after `pytrace` for one value of one option."""
    argv: list[str] = []
    for depth in range(1, len(command) + 1):
        argv.append(command[depth - 1])
        if depth < len(command):
            argv += parent_args(command[:depth], env)
    for dest, args in base_args(command, env).items():
        if dest != action.dest:
            argv += args
    if action.option_strings:
        long = [o for o in action.option_strings if o.startswith("--")]
        return argv + ([f"{long[0]}={value}"] if long else [action.option_strings[0], value]) + \
            trailing_args(command)
    return argv + ([value] if not value.startswith("-") else ["--", value])


def option_names(action: argparse.Action) -> tuple[str, ...]:
    """What a refusal may call the option: its flags, or a positional's
    destination and metavar (argparse says "argument TRACEPOINT")."""
    if action.option_strings:
        return tuple(action.option_strings)
    return tuple(n for n in (action.dest, action.metavar) if isinstance(n, str))


def cases(env: dict) -> tuple[list[Case], list[str]]:
    """Every case, and the options whose kind is unknown here."""
    parsers = [((name,), tool_parser(name)) for name in registry.names()]
    parsers += [((name,), command_parser(name)) for name in ("replay", "exporter")]
    out, unknown = [], []
    for command, parser in parsers:
        for cmd, _, action in walk(parser, command):
            values = bad_values(cmd, action, env)
            if values is None:
                unknown.append(f"{' '.join(cmd)} {action.option_strings or action.dest} "
                               f"({getattr(action.type, '__name__', 'str')})")
                continue
            for value in values:
                out.append(Case(cmd, (action.option_strings or [action.dest])[0], value,
                                command_line(cmd, action, value, env), option_names(action)))
    return out, unknown


def parse_in_process(case: Case) -> tuple[int | None, str]:
    """The argv through the command's real parser: (exit status, stderr);
    status None if the parser accepted it."""
    name = case.argv[0]
    parser = command_parser(name) if name in ("replay", "exporter") else tool_parser(name)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(case.argv[1:])
        except SystemExit as exc:
            return exc.code, err.getvalue()
    return None, err.getvalue()


CHILDREN: list[int] = []        # every pytrace process the fuzzer started


def run_real(case: Case, cache: str) -> tuple[int | None, str, str]:
    """The case as a real `pytrace` process: (status, stdout, stderr); status
    None if it was still running after RUN_TIMEOUT (it was accepted)."""
    proc = subprocess.Popen([*PYTRACE, *case.argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTRACE_CACHE": cache}, stdin=subprocess.DEVNULL)
    CHILDREN.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return None, out, err


def names_flag(line: str, case: Case) -> bool:
    """Whether a line names the option: one of its flags (or a positional's
    names) as a whole word (-c is not in --cgroup)."""
    return any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line) for name in case.names or (case.option,))


def names_option(line: str, case: Case) -> bool:
    """Whether a refusal's line names the option (names_flag) or the value:
    quoted (the start of a long one), or as a word of its own ("device
    nosuchdev0: no such device").  A line that does neither leaves the reader
    to guess which value of the command line was wrong, and says nothing at
    all of an empty one."""
    if names_flag(line, case):
        return True
    v = case.value
    quoted = [f"'{v}'", f'"{v}"', repr(v)] if len(v) <= 30 else [f"'{v[:30]}", f'"{v[:30]}']
    if any(q in line for q in quoted):
        return True
    return bool(case.value.strip()) and re.search(rf"(?:^|\s){re.escape(case.value)}[:,)]?(?:\s|$)", line) is not None


def garbled(line: str) -> bool:
    """An empty name printed as if it were one: "no client  (clients are...)",
    "--tbf : HOST:DEV ...", ": Invalid argument"."""
    message = line.split(": ", 1)[1] if line.startswith("pytrace") and ": " in line else line
    return re.search(r"(?:^|\s):(?:\s|$)", message) is not None or "  " in message


def other_flag(line: str, case: Case) -> str | None:
    """A flag the line names that is neither the option's nor on the command
    line: in a line that does not name the option's own, it blames (or was
    worded for) another option ("--influx abc" for --from-influx=abc)."""
    for flag in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", line):
        if flag not in case.names and not any(a == flag or a.startswith(flag + "=") for a in case.argv):
            return flag
    return None


def verdict(status: int | None, out: str, err: str, case: Case | None = None) -> str | None:
    """What is wrong with one refusal, or None.  With the case, the line must
    name the option or its value (names_option) without an empty name in it
    (garbled); one that names neither is worse when it names another flag or
    another file of the command line instead (replay once called a bad
    --since a damaged recording)."""
    if "Traceback" in err or "Traceback" in out:
        return f"traceback: {err.strip().splitlines()[-1] if err.strip() else out[-200:]}"
    if status is None or status == 0:
        return f"accepted (status {status}): {err.strip()[:200]!r}"
    lines = err.strip().splitlines()
    if status != 2:
        return f"status {status}, not 2: {err.strip()[:200]!r}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr: {err.strip()[:300]!r}"
    if case is None:
        return None
    line = lines[0]
    if garbled(line):
        return f"an empty name in the line: {line[:300]!r}"
    other = None if names_flag(line, case) else other_flag(line, case)
    if other:
        return f"names {other}, not {case.option}: {line[:300]!r}"
    if not names_option(line, case):
        blamed = [a for a in case.argv[1:] if "/" in a and case.value not in a and a in line]
        if blamed:
            return f"blames {blamed[0]}, not {case.option}: {line[:300]!r}"
        return f"names neither {case.option} nor {case.value!r}: {line[:300]!r}"
    return None


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    garbage = d / "garbage"
    garbage.write_bytes(b"root:x:0:0:not what you think\n" * 8)
    cache = d / "cache"
    cache.mkdir(mode=0o700)
    recording = d / "rec.db"
    port = free_port()
    cli = Cli("tcpstates", "-L", str(port), "--record", str(recording), env={"PYTRACE_CACHE": str(cache)})
    tcp_roundtrip("127.0.0.1", port)
    assert cli.read_until(lambda line: "LAST_ACK" in line)
    assert cli.stop()[0] == 0
    exporter_config = d / "exporter.toml"
    exporter_config.write_text('[[metric]]\ntool = "tcprtt"\n')
    vnet_config = d / "vnet.toml"
    vnet_config.write_text('[[point]]\nlabel = "lo"\ndevice = "lo"\ndirection = "ingress"\n'
                           'method = "netif_receive_skb"\n')
    # a store for `vnet report`, two hosts' records of one path (as `vnet
    # record` writes them): without one, report refused every value for
    # having no records
    vnet_store = str(d / "store.db")
    with SqliteStore(vnet_store) as st:
        st.write([(host, 1_000_000 * i + 5_000 * (host == "h2"), point, 100 + i, 17, "192.0.2.1", 1000,
                   "192.0.2.2", 2000, 100, 86, 1, 2, 0, 0)
                  for i in range(10) for host, point in (("h1", "a"), ("h2", "b"))])
    # a recorder for `vnet ctl` to talk to: it checks what ctl asks of it
    ctl_socket = str(d / "ctl.sock")
    recorder = Cli("vnet", "record", "-q", "-c", str(vnet_config), "-o", str(d / "recorder.db"), "--ctl", ctl_socket,
                   env={"PYTRACE_CACHE": str(cache)})
    assert wait_until(lambda: os.path.exists(ctl_socket), 10)
    yield {"garbage": str(garbage), "cache": str(cache), "recording": str(recording),
           "exporter_config": str(exporter_config), "vnet_config": str(vnet_config),
           "vnet_db": str(d / "vnet.db"), "vnet_store": vnet_store, "ctl_socket": ctl_socket}
    rc, _, err = recorder.stop()
    assert rc == 0, err


def leftovers(before: dict) -> dict:
    """What the fuzzer's processes left in the kernel.  Other tests may run on
    this machine meanwhile: a new object that a live process holds is not a
    leftover of the fuzzer's processes (all of which have ended), and only
    namespaces named after one of them (pytrace puts its PID in the names) are."""
    left = kernelstate.left_since(before, timeout=5)
    held = kernelstate.held_ids()
    for kind in ("prog", "map", "link"):
        if kind in left:
            left[kind] = [i for i in left[kind] if i not in held[kind]] or None
    if not left.get("prog"):
        # Maps alone are not a fuzzer's leftover: every pytrace map belongs to
        # an object whose programs would be left with it.  (Orphaned prog_array
        # maps do come and go on this machine while other tests run.)
        left.pop("map", None)
    if "netns" in left:
        left["netns"] = [n for n in left["netns"] if any(str(pid) in n for pid in CHILDREN)] or None
    return {k: v for k, v in left.items() if v}


def test_every_option_is_known_to_the_fuzzer(env):
    _, unknown = cases(env)
    assert unknown == []


def test_every_number_shows_its_bounds_in_help(env):
    missing = []
    parsers = [((name,), tool_parser(name)) for name in registry.names()]
    parsers += [((name,), command_parser(name)) for name in ("replay", "exporter")]
    for command, parser in parsers:
        for cmd, sub, action in walk(parser, command):
            limits = getattr(action.type, "range_text", None)
            if limits is None and getattr(action.type, "__name__", "") not in ("int", "float"):
                continue
            if limits is None or limits not in sub.format_help():
                missing.append(f"{' '.join(cmd)} {action.option_strings or action.dest}")
    assert missing == []


def test_bad_values_are_refused_in_one_line_and_leave_nothing(env):
    all_cases, _ = cases(env)
    assert len(all_cases) > 1000
    before = kernelstate.snapshot()
    started = time.monotonic()
    problems, at_run_time, sampled = [], [], {}
    for case in all_cases:
        status, err = parse_in_process(case)
        if status is None:
            at_run_time.append(case)
            continue
        problem = verdict(status, "", err, case)
        if problem:
            problems.append(f"{case}: {problem}")
        elif len(sampled.setdefault(case.command, [])) < CLI_SAMPLE:
            sampled[case.command].append(case)
    parsed = time.monotonic() - started
    real = at_run_time + [c for group in sampled.values() for c in group]
    for case in real:
        problem = verdict(*run_real(case, env["cache"]), case)
        if problem:
            problems.append(f"{case}: {problem}")
    left = leftovers(before)
    print(f"{len(all_cases)} cases ({parsed:.1f} s), {len(at_run_time)} refused at run time, {len(real)} real runs, "
          f"{time.monotonic() - started:.1f} s in all")
    assert problems == [], "\n".join(problems)
    assert left == {}


def test_commands_without_options_refuse_any(env):
    for argv in (["list", "--bogus"], ["doctor", "x"], ["nosuchtool"], ["replay"], ["exporter"]):
        status, out, err = run_real(Case((argv[0],), "", "", argv), env["cache"])
        assert verdict(status, out, err) is None, (argv, status, err)
