"""Parity with the BCC tools people know (issue 20), read from BCC's own documents.

For every tool of the BCC network suite, from the installed bpfcc-tools
(Debian's package: apt-get install bpfcc-tools):

  - its man page (/usr/share/man/man8/<tool>-bpfcc.8.gz): every flag and
    positional of SYNOPSIS and OPTIONS is one pytrace's parser accepts; every
    command line of EXAMPLES runs (below); the columns of FIELDS appear in
    what pytrace prints, over the runs that show them (HEADER_RUNS);
  - its example file (/usr/share/doc/bpfcc-tools/examples/doc/<tool>_example.txt,
    Debian's place; examples/<tool>_example.txt elsewhere): every command line,
    at a prompt (`# ./<tool> ...`, `# <tool> ...`) or in the -h text it shows
    (`    ./<tool> ...   # what it does`), runs.

test_every_page_and_file_of_the_suite_is_read checks that every tool's page
and file is there and gives flags and command lines.  A command line runs as
`pytrace <tool> <args>`: it exits 0 by itself (-h, a count of intervals), or
runs, sees loopback traffic, and stops on SIGINT with status 0, within a
bounded time.  PIDs in BCC's examples (181, 185, 1234, 4902, $(pidof
parprimes)) become a live process of the test's; BCC's own examples that
leave out a flag's value (tcprtt's `-p`) are refused as BCC refuses them,
then run with one; -Y logs to a socket of the test's where journald does not
run.  What cannot run here is skipped, naming why, after checking that
pytrace says so in one line: stackcount's
kernel-function, user-function and USDT patterns (kprobes/uprobes, which
pytrace's precompiled program does not attach: documented in its -h).
sofdsnoop is in the suite but written on another branch: its tests skip
("sofdsnoop not in this tree") only while pytrace.tools.sofdsnoop cannot be
imported, and run once it is merged.  BCC's --cgroupmap/--mntnsmap paths
become maps pinned by the test (BCC's layout) holding this process's cgroup
and mount namespace, and the namespace inodes of -n/-N this process's.

The behaviour tests of issue 20's defects live with their tools
(test_<tool>.py); the last part of this file has those that span tools.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import lru_cache

import pytest

from helpers import (PYTRACE, LoopbackPair, has_bpf_link, run_cli, socket_drop, syn_retransmit, tcp_roundtrip,
                     wait_until)
from pytrace import tools as registry
from pytrace.cli.argparser import ArgParser

SUITE = ("tcpaccept", "tcpconnect", "tcpconnlat", "tcpdrop", "tcplife", "tcpretrans", "tcpstates", "tcpsubnet",
         "tcptop", "tcptracer", "solisten", "softirqs", "tcprtt", "gethostlatency", "stackcount", "sofdsnoop")
MAN = "/usr/share/man/man8/{}-bpfcc.8.gz"
EXAMPLES = ("/usr/share/doc/bpfcc-tools/examples/doc/{}_example.txt",
            "/usr/share/doc/bpfcc-tools/examples/{}_example.txt")
# the flags of a network namespace inode in BCC's pages (sofdsnoop's -n is a name)
NETNS_FLAGS = {"solisten": {"-n", "--netns"}, "tcptracer": {"-N", "--netns"}}
BCC_PIDS = ("181", "185", "1234", "4902", "2576", "123")    # the PIDs (and sofdsnoop -t TID) of BCC's examples

pytestmark = pytest.mark.skipif(not os.path.exists(MAN.format("tcpaccept")),
                                reason="bpfcc-tools is not installed (apt-get install bpfcc-tools)")


# -- reading BCC's documents -------------------------------------------------------------------

def _unescape(text: str) -> str:
    """groff to plain text: fonts off, \\- to -, quotes and the like."""
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\-", "-").replace("\\(aq", "'").replace("\\(dq", '"').replace("\\e", "\\") \
        .replace("\\ ", " ").replace("\\&", "")


@lru_cache(maxsize=None)
def man_sections(tool: str) -> dict[str, list[str]]:
    """The man page's sections (SYNOPSIS, OPTIONS, EXAMPLES, FIELDS...) as unescaped lines
    (none for a missing page: test_every_page_and_file_of_the_suite_is_read says so)."""
    if not os.path.exists(MAN.format(tool)):
        return {}
    with gzip.open(MAN.format(tool), "rt", errors="replace") as fh:
        lines = fh.read().splitlines()
    out: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith(".SH"):
            current = line[3:].strip().strip('"').upper()
            out[current] = []
        elif current is not None:
            out[current].append(_unescape(line))
    return out


FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")


def man_flags(tool: str) -> tuple[set[str], set[str]]:
    """(flags, positionals) of SYNOPSIS and OPTIONS."""
    sec = man_sections(tool)
    flags, positionals = set(), set()
    synopsis = " ".join(l for l in sec.get("SYNOPSIS", []) if not l.startswith(".SH"))
    flags |= set(FLAG.findall(synopsis))
    for word in re.findall(r"\[([a-z_]+)\]", synopsis):         # [interval] [count] [min_ms] [subnets]
        positionals.add(word)
    if re.search(r"\bpattern\s*$", synopsis.strip()):
        positionals.add("pattern")
    opts = sec.get("OPTIONS", [])
    for i, line in enumerate(opts):
        head = line.lstrip(".B ").strip()
        if line.startswith("-") or (i and opts[i - 1].startswith(".TP") and head.startswith("-")):
            flags |= set(FLAG.findall(head.split("  ")[0]))
        elif i and opts[i - 1].startswith(".TP") and re.fullmatch(r"[a-z_]+", head):
            positionals.add(head)
    flags.discard("--help")       # argparse's own, with -h
    return flags, positionals


def man_fields(tool: str) -> list[str]:
    """The column names of FIELDS (the line after each .TP), for tools that document columns."""
    lines = man_sections(tool).get("FIELDS", [])
    out = []
    for i, line in enumerate(lines):
        if i and lines[i - 1].startswith(".TP") and not line.startswith("."):
            name = line.split()[0] if line.split() else ""
            if re.fullmatch(r"[A-Za-z][A-Za-z0-9_()>:/-]*", name):
                out.append(name)
    return out


def man_examples(tool: str) -> list[str]:
    """EXAMPLES' command lines (`.B tool args`)."""
    out = []
    for line in man_sections(tool).get("EXAMPLES", []):
        if line.startswith(".B "):
            cmd = line[3:].strip()
            if cmd.split()[:1] == [tool]:
                out.append(cmd)
    return out


def example_file(tool: str) -> str | None:
    """The installed example file (Debian puts them under examples/doc/)."""
    for pattern in EXAMPLES:
        if os.path.exists(pattern.format(tool)):
            return pattern.format(tool)
    return None


def file_examples(tool: str) -> list[str]:
    """The example file's command lines, with the comment after them cut: a
    prompt's (`# ./<tool>[.py] args`, `# <tool> args`, `$ ...`) and those of
    the -h text it shows (`    ./<tool> args   # what it does`)."""
    path = example_file(tool)
    if path is None:
        return []
    prompt = re.compile(rf"^[#$] (?:\./)?{tool}(?:\.py)?(?=\s|$)(.*)$")
    bare = re.compile(rf"^\s*\./{tool}(?:\.py)?(?=\s|$)(.*)$")
    out = []
    with open(path, errors="replace") as fh:
        for line in fh:
            m = prompt.match(line.rstrip("\n")) or bare.match(line.rstrip("\n"))
            if m:
                args = re.sub(r"\s+#(\s.*)?$", "", m.group(1)).strip()
                out.append(f"{tool} {args}".strip())
    return out


def command_lines() -> list:
    params, seen = [], set()
    for tool in SUITE:
        for where, lines in (("man", man_examples(tool)), ("example", file_examples(tool))):
            for cmd in lines:
                if (tool, cmd) in seen:
                    continue
                seen.add((tool, cmd))
                params.append(pytest.param(tool, cmd, id=f"{tool}[{where}]:{cmd[len(tool):].strip() or '-'}"))
    return params


def flag_params() -> list:
    params = []
    for tool in SUITE:
        flags, positionals = man_flags(tool)
        params += [pytest.param(tool, f, id=f"{tool}:{f}") for f in sorted(flags | positionals)]
    return params


def test_every_page_and_file_of_the_suite_is_read():
    """The parametrized tests below cover the whole suite: each tool's man page
    gives flags and EXAMPLES command lines, and each example file command lines
    (a parser that silently found none would leave a tool untested)."""
    for tool in SUITE:
        assert os.path.exists(MAN.format(tool)), MAN.format(tool)
        assert example_file(tool), f"no example file for {tool}: {EXAMPLES}"
        flags, positionals = man_flags(tool)
        assert flags | positionals, f"{tool}: no flag read from its man page"
        assert man_examples(tool), f"{tool}: no command line read from its man page's EXAMPLES"
        assert file_examples(tool), f"{tool}: no command line read from {example_file(tool)}"
    ids = {p.values[:2] for p in command_lines()}
    for tool in SUITE:
        assert {(tool, c) for c in man_examples(tool) + file_examples(tool)} <= ids, tool


# -- pytrace's side ------------------------------------------------------------------------------

# Tools of the suite written on another branch: skipped while their module is
# not in this tree, and tested as soon as it is merged.
ELSEWHERE = {"sofdsnoop"}


def have(tool: str) -> None:
    """Skip a tool of another branch until it is merged; any other tool of the suite must be here."""
    if tool in ELSEWHERE:
        import importlib
        try:
            importlib.import_module(f"pytrace.tools.{tool}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pytrace.tools.{tool}":
                raise
            pytest.skip(f"{tool} not in this tree")
    assert registry.exists(tool), f"pytrace has no {tool}"


def parser_of(tool: str) -> ArgParser:
    p = ArgParser(prog=f"pytrace {tool}")
    registry.command(tool).add_arguments(p)
    return p


@pytest.fixture(scope="module")
def live_pid():
    """A process of the test's standing in for the PIDs of BCC's examples."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def traffic() -> None:
    """What makes the suite print: loopback TCP both families (connects, accepts,
    data, closes, name lookups), a socket's drop, and a retransmission."""
    pair = LoopbackPair(nodelay=True)
    try:
        pair.exchange(10, 2048)
    finally:
        pair.close()
    tcp_roundtrip("127.0.0.1")
    tcp_roundtrip("::1")
    socket.getaddrinfo("localhost", 80)
    socket_drop()


def run(tool: str, args: list[str], wait: float = 0.1, limit: float = 30,
        env: dict | None = None) -> tuple[int, str, str, bool]:
    """pytrace <tool> <args>: (status, stdout, stderr, stopped by us).  Exits by
    itself, or is stopped by SIGINT once attached and after traffic."""
    proc = subprocess.Popen([*PYTRACE, tool, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    stopped = False
    try:
        wait_until(lambda: proc.poll() is not None or has_bpf_link(proc.pid), 20)
        if proc.poll() is None:
            time.sleep(0.2)                     # every program of the variant attached
            traffic()
            time.sleep(wait)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                stopped = True
        out, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err, stopped


# -- the man pages' flags --------------------------------------------------------------------

@pytest.mark.parametrize("tool,flag", flag_params())
def test_every_man_page_flag_is_accepted(tool, flag):
    have(tool)
    p = parser_of(tool)
    if flag.startswith("-"):
        assert flag in p._option_string_actions, f"pytrace {tool} does not take {flag}"
    else:
        assert flag in [a.dest for a in p._actions if not a.option_strings], \
            f"pytrace {tool} has no positional {flag}"


# -- the man pages' and example files' command lines -------------------------------------------

# BCC's -h examples that leave out a flag's value (tcprtt_example.txt:
# `./tcprtt -p   # filter for local port`): BCC refuses them as they are
# ("expected one argument"), and so does pytrace (checked); they run with a value.
NO_VALUE = {"tcprtt": {"-p": "80", "-P": "80", "-a": "127.0.0.1", "-A": "127.0.0.1"}}


@pytest.fixture(scope="module")
def bcc_sets():
    """BCC's --cgroupmap and --mntnsmap sets (special_filtering.md: hash maps
    pinned under /sys/fs/bpf, u64 keys) holding this process's cgroup and
    mount namespace, so that its traffic passes."""
    from pytrace.core.containers import cgroup_of_pid
    if not shutil.which("bpftool"):
        pytest.fail("bpftool is not installed (scripts/setup.sh installs it)")
    made = {}
    for flag, key, value_size in (("--cgroupmap", cgroup_of_pid(os.getpid()).id, 8),
                                  ("--mntnsmap", os.stat("/proc/self/ns/mnt").st_ino, 4)):
        path = f"/sys/fs/bpf/pytrace-parity-{flag[2:]}-{os.getpid()}"
        subprocess.run(["bpftool", "map", "create", path, "type", "hash", "key", "8", "value", str(value_size),
                        "entries", "16", "name", f"pt_p_{flag[2:]}"[:15]], check=True, capture_output=True)
        hexes = lambda raw: [f"0x{b:02x}" for b in raw]     # noqa: E731
        subprocess.run(["bpftool", "map", "update", "pinned", path, "key", *hexes(key.to_bytes(8, "little")),
                        "value", *hexes(b"\x01" + b"\0" * (value_size - 1))], check=True, capture_output=True)
        made[flag] = path
    yield made
    for path in made.values():
        os.unlink(path)


def _substituted(cmd: str, pid: int, sets: dict[str, str]) -> list[str]:
    cmd = cmd.replace("$(pidof parprimes)", str(pid))
    args = [str(pid) if a in BCC_PIDS else a for a in shlex.split(cmd)[1:]]
    tool = cmd.split()[0]
    netns = str(os.stat("/proc/self/ns/net").st_ino)
    for i, a in enumerate(args[:-1]):
        if a in sets:
            args[i + 1] = sets[a]
        elif a in NETNS_FLAGS.get(tool, ()) and args[i + 1].isdigit():
            args[i + 1] = netns
    if len(args) == 1 and args[0] in NO_VALUE.get(tool, {}):
        args.append(NO_VALUE[tool][args[0]])
    return args


def _refusal(tool: str, args: list[str]) -> str | None:
    """Why a command line cannot run with pytrace here (None: it must run)."""
    if tool == "stackcount":
        pattern = [a for a in args if not a.startswith("-") and not a.isdigit()]
        if pattern and not (pattern[-1].startswith("t:") or re.fullmatch(r"\w+:\w[\w*]*", pattern[-1]) and
                            pattern[-1].split(":")[0] not in ("c", "p", "u")):
            return (f"{pattern[-1]}: a kernel/user function or USDT probe: kprobes/uprobes, which pytrace's "
                    "precompiled stackcount does not attach (its -h says so)")
        events = "/sys/kernel/tracing/events"
        if pattern and pattern[-1].startswith("t:") and os.path.isdir(events) and \
                not os.path.isdir(os.path.join(events, *pattern[-1][2:].split(":"))):
            # sched:sched_fork: BCC's -h example names a tracepoint that kernels renamed long
            # ago (sched_process_fork); BCC fails on it as well
            return f"{pattern[-1]}: this kernel has no such tracepoint"
    return None


@pytest.mark.parametrize("tool,cmd", command_lines())
def test_every_documented_command_line_runs(tool, cmd, live_pid, bcc_sets, tmp_path):
    have(tool)
    args = _substituted(cmd, live_pid, bcc_sets)
    why = _refusal(tool, args)
    if why is not None:
        r = run_cli(tool, *args)
        assert r.returncode != 0 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
        pytest.skip(f"{cmd}: {why}")
    if len(args) == 2 and args[0] in NO_VALUE.get(tool, {}):
        r = run_cli(tool, args[0])
        assert r.returncode == 2 and "expected one argument" in r.stderr, r.stderr
    env = {}
    if "-Y" in args and not os.path.exists("/run/systemd/journal/socket"):
        # no journald here: a socket of the test's takes its entries (test_tcpstates reads them)
        journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        journal.bind(str(tmp_path / "journal.sock"))
        journal.settimeout(0.2)
        entries: list[bytes] = []

        def drain() -> None:       # journald reads all along: a full queue would block the sender
            while journal.fileno() >= 0:
                try:
                    entries.append(journal.recv(65536))
                except (TimeoutError, OSError):
                    continue
        import threading
        threading.Thread(target=drain, daemon=True).start()
        env["PYTRACE_JOURNAL_SOCKET"] = str(tmp_path / "journal.sock")
    rc, out, err, stopped = run(tool, args, env=env)
    if env:
        journal.close()
        assert entries, "-Y sent nothing to the journal"
    assert rc == 0, f"pytrace {tool} {' '.join(args)}: status {rc}: {err[-2000:]}"
    assert "Traceback" not in err, err
    if "-h" in args:
        assert out.rstrip().splitlines()[-1].strip().startswith(f"pytrace {tool}")   # -h ends with examples


# -- the man pages' columns ----------------------------------------------------------------------

# The runs whose output, together, shows every documented column of a tool
# (a column that needs a flag, or a mode: tcpconnect -c's CONNECTS).
HEADER_RUNS: dict[str, list[list[str]]] = {
    "tcpaccept": [["-T", "-t"]],
    "tcpconnect": [["-t", "-U", "-L", "-d"], ["-c"]],
    "tcpconnlat": [["-t", "-L"]],
    "tcpdrop": [[]],
    "tcplife": [["-T", "-t", "-w"]],
    "tcpretrans": [["-s"], ["-c"]],
    "tcpstates": [["-T", "-t", "-w"]],
    "tcptop": [["-C"]],
    "tcptracer": [["-v", "-t"]],
    "softirqs": [[], ["-N"], ["-d"], ["-d", "-N"]],
    "gethostlatency": [[]],
}
# Tools whose FIELDS are not column names to find
NO_COLUMNS = {"tcpsubnet": "its FIELDS describe BCC's two unlabelled columns (test_tcpsubnet checks that layout)"}


def _tokens(text: str) -> set[str]:
    out = set()
    for t in text.split():
        out |= {t, t.rstrip(":"), t.strip("()"), *t.split(":")}
    return out


@pytest.mark.parametrize("tool", SUITE)
def test_documented_columns_are_printed(tool):
    have(tool)
    if tool in NO_COLUMNS:
        pytest.skip(f"{tool}: {NO_COLUMNS[tool]}")
    fields = man_fields(tool)
    if not fields:
        pytest.skip(f"{tool}'s man page documents no columns (no FIELDS section)")
    seen: set[str] = set()
    outs: list[str] = []
    # a second, slower round where the first missed a column: what prints
    # depends on traffic reaching the tool in time (tcptop's interval)
    for wait in (1.2 if tool == "tcptop" else 0.4, 2.5):
        for args in HEADER_RUNS[tool]:
            rc, out, err, _ = run(tool, args, wait=wait)
            assert rc == 0, err
            seen |= _tokens(out)
            outs.append(out)
        if all(f in seen for f in fields):
            break
    assert [f for f in fields if f not in seen] == [], f"{tool}: documented columns not printed in {outs}"


# -- behaviour that spans tools (issue 20) ---------------------------------------------------------

MAPPED = "::ffff:127.0.0.1"


def test_ipv4_mapped_addresses_print_one_way():
    """Issue 20: IPv4-mapped addresses printed as ::ffff:7f00:1 in tcptop and tcprtt text and in the
    JSON of tcplife, tcpaccept, tcpstates and tcptop.  Now ::ffff:127.0.0.1 everywhere, as inet_ntop
    (and BCC) print it, on a real connection whose both ends are AF_INET6 sockets with IPv4-mapped
    addresses: a dual-stack listener on :: and a client connecting to ::ffff:127.0.0.1."""
    srv = socket.socket(socket.AF_INET6)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)     # dual-stack, whatever the sysctl says
    srv.bind(("::", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    me = str(os.getpid())
    runs = {"tcptop": ["-C", "-p", me], "tcptop --json": ["--json", "-p", me],
            "tcprtt": ["-b", "-B", "-p", str(port)],
            "tcplife": ["-L", str(port)], "tcplife --json": ["--json", "-L", str(port)],
            "tcpaccept": ["-P", str(port)], "tcpaccept --json": ["--json", "-P", str(port)],
            "tcpstates": ["-L", str(port)], "tcpstates --json": ["--json", "-L", str(port)]}
    procs = {k: subprocess.Popen([*PYTRACE, k.split()[0], *v], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for k, v in runs.items()}
    try:
        assert wait_until(lambda: all(has_bpf_link(p.pid) for p in procs.values()), 20)
        time.sleep(0.3)
        cli = socket.socket(socket.AF_INET6)
        cli.settimeout(5)
        cli.connect((MAPPED, port))
        acc, peer = srv.accept()
        assert peer[0] == MAPPED and cli.getsockname()[0] == MAPPED       # both ends mapped
        client_port = cli.getsockname()[1]
        for _ in range(20):
            cli.sendall(b"x" * 1500)
            acc.recv(65536)
            acc.sendall(b"y" * 100)
            cli.recv(65536)
        time.sleep(1.2)            # tcptop's interval, with both sockets open
        acc.close()
        cli.close()
        time.sleep(0.5)
        for p in procs.values():
            p.send_signal(signal.SIGINT)
        outs = {k: p.communicate(timeout=20) for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
        srv.close()
    for k, (out, err) in outs.items():
        assert procs[k].returncode == 0, (k, err)
        assert "7f00:1" not in out, (k, out)
        assert MAPPED in out, (k, out)
    # the text: both ends of the flow (tcptop), both address keys (tcprtt)
    top = [l for l in outs["tcptop"][0].splitlines() if f":{port}" in l and f":{client_port}" in l]
    assert top and all(l.count(MAPPED) == 2 for l in top), outs["tcptop"][0]
    assert f"Local Address = {MAPPED}" in outs["tcprtt"][0] and f"Remote Address = {MAPPED}" in outs["tcprtt"][0]
    for k in ("tcplife", "tcpaccept", "tcpstates"):
        mine = [l for l in outs[k][0].splitlines() if str(port) in l.split()]
        assert mine and all(MAPPED in l for l in mine), (k, outs[k][0])
    # the JSON: every record of the connection, both addresses
    for k in ("tcptop --json", "tcplife --json", "tcpaccept --json", "tcpstates --json"):
        recs = [json.loads(l) for l in outs[k][0].splitlines()]
        recs = [r for r in recs if port in (r.get("lport"), r.get("rport"))]
        assert recs and all(r["laddr"] == r["raddr"] == MAPPED for r in recs), (k, recs)


def test_v_is_the_namesakes_and_libbpf_log_is_one_flag():
    """One rule (spec/options.py): -v means what the BCC namesake's -v means
    (tcptracer: verbose lines; tcpconnlat: the program; stackcount: raw
    addresses; tcpsubnet: subnets and program); --libbpf-log is libbpf's log on
    every tool, and -v its alias where the namesake has no -v."""
    for tool in ("tcptracer", "tcpconnlat", "stackcount", "tcpsubnet"):
        help_text = run_cli(tool, "-h").stdout
        assert "--libbpf-log" in help_text and "--libbpf-log, -v" not in help_text, tool
    for tool in ("tcpaccept", "tcplife", "tcpstates", "tcptop"):
        assert "--libbpf-log, -v, --verbose" in run_cli(tool, "-h").stdout, tool
    r = run_cli("tcpaccept", "--libbpf-log", "--ebpf")
    assert r.returncode == 0
    # tcptracer's -h said both "-v is BCC's verbose output" and "-v, --verbose  show libbpf's log"
    lines = run_cli("tcptracer", "-h").stdout.splitlines()
    v = [l for l in lines if re.match(r"\s+-v[, ]", l)]
    assert len(v) == 1 and "libbpf" not in v[0] and "verbose" in v[0], v
    log = [l for l in lines if l.strip().startswith("--libbpf-log")]
    assert len(log) == 1 and "-v" not in log[0], log


@pytest.mark.parametrize("tool", SUITE)
def test_help_ends_with_examples_as_bcc(tool):
    """Issue 20: no tool's -h had BCC's examples section."""
    have(tool)
    lines = run_cli(tool, "-h").stdout.rstrip().splitlines()
    i = lines.index("examples:")
    assert i < len(lines) - 1 and all(l.strip().startswith(f"pytrace {tool}") for l in lines[i + 1:])


def _bpf_fd_open(pid: int) -> bool:
    """The process holds a BPF object (a map or program): pytrace's main() has
    long since installed its stop handlers (core/stops), and the tool is loading."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("anon_inode:bpf"):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


@pytest.mark.parametrize("tool", ["tcpdrop", "tcplife", "tcpretrans"])
def test_ctrl_c_gives_one_status(tool):
    """Issue 20: Ctrl-C exited 130 or 0 for the same command.  cli.main installs
    core/stops' handlers first thing, and from then on every stop of a tool is
    status 0, as BCC's tools end on Ctrl-C (130, the shell's 128 + SIGINT, is
    only for the other commands: list, replay...): while it loads (the stop is
    held until its loop), attached and idle, while it prints, and twice in a
    row.  (Before the interpreter runs pytrace's first line, a few ms after
    exec, Python's own default applies: no program of Python's can change that.)"""
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            tcp_roundtrip("127.0.0.1")
            socket_drop()
            if tool == "tcpretrans":
                syn_retransmit()
    statuses: list[tuple[str, int]] = []
    for when in ("loading", "loading", "idle", "idle", "printing", "printing", "twice", "twice"):
        proc = subprocess.Popen([*PYTRACE, tool], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        feeder = None
        try:
            if when == "loading":
                assert wait_until(lambda: _bpf_fd_open(proc.pid) or proc.poll() is not None, 20, 0.001)
            else:
                assert wait_until(lambda: has_bpf_link(proc.pid) or proc.poll() is not None, 20)
                time.sleep(0.2)
            if when in ("printing", "twice"):
                stop.clear()
                feeder = threading.Thread(target=load, daemon=True)
                feeder.start()
                time.sleep(1.5 if tool == "tcpretrans" else 0.5)
            proc.send_signal(signal.SIGINT)
            if when == "twice":
                time.sleep(0.01)
                proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            stop.set()
            if feeder is not None:
                feeder.join(10)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert "Traceback" not in err, (when, err)
        if when in ("printing", "twice"):
            assert out.count("\n") > 1, (when, out)        # its header, and what the traffic made it print
        statuses.append((when, proc.returncode))
    assert {rc for _, rc in statuses} == {0}, statuses
