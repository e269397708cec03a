"""The per-tool contract, checked the same way for every tool in the registry.

Each tool with a SPEC (pytrace.spec) must:
  - answer --help with status 0, its help ending with its examples, and
    every example a command line its parser accepts;
  - print its BPF source for --ebpf;
  - refuse bad input with one line on stderr and status 2;
  - with --json, print one JSON object per line, whose names are the
    spec's: "time" (RFC 3339 with zone), the kernel's monotonic "ts_ns",
    then the fields of its event type (a histogram: its label and the
    histogram's);
  - stop on SIGINT and on SIGTERM with status 0, leaving nothing in the
    kernel (tests/kernelstate.py): here the tools take the two in turn,
    and test_stop_matrix stops every tool with each (and SIGHUP, SIGKILL);
  - replay a recording (--record) byte for byte as it printed live, text
    and JSON (the JSON case records while its stop is checked);
  - run with each hook variant this kernel allows forced (--hook), on that
    variant's programs (a kernel matrix case: tests/matrix.py).
Tools without a SPEC are skipped, naming what is missing: converting a tool
turns its cases on.  The traffic is loopback TCP made by this process
(TRAFFIC says otherwise for a tool that needs another kind to print; SETUP
makes what a tool needs to run at all: vnet's config file, tunnelmon's
namespace).

A tool with subcommands (spec/commands.CommandSpec: vnet record|report|demo|
ctl, tunnelmon [simulate]) has each command checked too: its -h ends with
its examples, it refuses bad input with one line and status 2, it prints
the BPF source for --ebpf if it has the shared options (and refuses --ebpf
otherwise).  The running cases (--json, signals, replay, a forced --hook)
run the command its spec declares streams=True (vnet record; tunnelmon
itself); every other command is a skip that quotes what the spec says it
does instead (vnet report reads stores: there is no record stream to replay).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime

import pytest

import kernelstate
from helpers import (PYTRACE, LoopbackPair, bpf_prog_ids, bpf_progs, has_bpf_link, run_cli, socket_drop,
                     syn_retransmit, tcp_roundtrip, wait_until)
from matrix import cli_hook_or_skip, variants
from pytrace import spec as specs
from pytrace import tools as registry
from pytrace.core import loader, objects
from pytrace.cli import cliutil
from pytrace.cli.argparser import ArgParser

TOOLS = registry.names()


def spec_of(name: str):
    """The tool's SPEC, or a skip naming what is missing."""
    declared = registry.spec(name)
    if declared is None:
        pytest.skip(f"{name}: pytrace/tools/{name}.py declares no SPEC (pytrace.spec.ToolSpec) yet")
    return declared


def tcp_traffic() -> None:
    """A few loopback TCP connections of this process, with data both ways."""
    pair = LoopbackPair(nodelay=True)
    try:
        pair.exchange(20, 2048)
    finally:
        pair.close()
    tcp_roundtrip("127.0.0.1")
    tcp_roundtrip("::1")


def udp_connects() -> None:
    """connect() on UDP sockets, v4 and v6."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u4, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u6:
        u4.connect(("127.0.0.1", 7777))
        u6.connect(("::1", 7778))


def loopback_pings() -> None:
    """ICMP echo to 127.0.0.1 and ::1 from raw sockets of this process."""
    from netlab import ping
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
        with socket.socket(family, socket.SOCK_RAW, proto) as s:
            ping(s, host, 4242, 1)


def ce_marked_udp() -> None:
    """UDP datagrams on loopback with the ECN field CE (3), v4 and v6."""
    for family, host, level, opt in ((socket.AF_INET, "127.0.0.1", socket.IPPROTO_IP, socket.IP_TOS),
                                     (socket.AF_INET6, "::1", socket.IPPROTO_IPV6, socket.IPV6_TCLASS)):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setsockopt(level, opt, 3)
            s.sendto(b"ce", (host, 9))


def queued_udp() -> None:
    """UDP through a token bucket (tbf) on a test host's veth: packets wait in the qdisc."""
    from netlab import QuietHosts
    with QuietHosts("ctq", ipv6=False) as net:
        net.qdisc_a("handle", "10:", "tbf", "rate", "1mbit", "burst", "3000", "latency", "2s")
        s = net.udp_socket(net.ns_a)
        for _ in range(6):
            s.sendto(b"q" * 1000, (net.V4[1], 9))
        s.close()
        time.sleep(0.1)


def passed_fds() -> None:
    """A pipe's two ends passed over a Unix socketpair (SCM_RIGHTS) and received."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        socket.send_fds(a, [b"fd"], [r, w])
        _, fds, _, _ = socket.recv_fds(b, 16, 4)
        for fd in fds:
            os.close(fd)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


# tool -> what makes it print (default: tcp_traffic), for tools that need more;
# called with what the tool's SETUP made, when it made something
TRAFFIC: dict[str, object] = {
    "tcpdrop": socket_drop,             # a segment an established socket drops
    "tcpretrans": syn_retransmit,       # a SYN resent after the listener dropped it
    "sofdsnoop": passed_fds,
    "qdisclat": queued_udp,
    "udpconnect": udp_connects,
    "superping": loopback_pings,
    "ipecn": ce_marked_udp,
}
# tool -> arguments its contract runs add (e.g. a short interval)
ARGS: dict[str, list[str]] = {
    "stackcount": ["t:syscalls:sys_enter_connect"],     # the connects of tcp_traffic
    "count": ["syscalls:sys_enter_connect"],
    "nstat": ["-z", "Tcp*"],
}
# tool -> a context manager (given a fresh directory) that makes what the tool
# needs to run and yields (its arguments, what TRAFFIC gets), removing it after
SETUP: dict[str, object] = {}


@contextlib.contextmanager
def vnet_config(tmp):
    """One point: loopback's egress tracepoint in this namespace (nothing is
    attached to a device), the loopback TCP of tcp_traffic selected."""
    config = tmp / "points.toml"
    config.write_text('[select]\nprotocol = "tcp"\nnet = ["127.0.0.1/32", "::1/128"]\n\n'
                      '[[point]]\nlabel = "lo.out"\ndevice = "lo"\ndirection = "egress"\nmethod = "tracepoint"\n')
    yield ["-c", str(config), "-o", str(tmp / "vnet.db")], None


@contextlib.contextmanager
def tunnelmon_netns(tmp):
    """A namespace of the test's own, with its loopback up: tunnelmon's tc (or
    XDP) programs go on that loopback, and leave with the namespace at worst."""
    ns = f"ptc-tm{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield ["--netns", ns, "--dev", "lo"], ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


VXLAN_SENDER = """
import socket, struct
body = b"p" * 32
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(body), 1, 0, 64, 17, 0,
                 socket.inet_aton("198.51.100.1"), socket.inet_aton("198.51.100.2"))
inner = bytes.fromhex("020000000002" "020000000001" "0800") + ip + struct.pack("!HHHH", 5000, 6000, 8 + len(body), 0) + body
frame = struct.pack("!II", 0x08000000, 100 << 8) + inner       # VXLAN, VNI 100
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(frame, ("127.0.0.1", 4789))
"""


def vxlan_traffic(ns: str) -> None:
    """Three VXLAN frames (VNI 100, 198.51.100.1 -> .2 inside) over the namespace's loopback."""
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", VXLAN_SENDER], check=True)


def tunnelmon_attached(ns: str, pid: int, variant) -> bool:
    """Its tc filters (both directions) or its XDP program are on the namespace's
    loopback: netlink attachments, which leave no BPF link in the process."""
    def show(*words: str) -> str:
        return subprocess.run(["ip", "netns", "exec", ns, *words], capture_output=True, text=True).stdout
    if variant.hook == "xdp":
        return "xdp" in show("ip", "link", "show", "lo")
    return all("tunnelmon_tc" in show("tc", "filter", "show", "dev", "lo", way) for way in ("ingress", "egress"))


SETUP.update(vnet=vnet_config, tunnelmon=tunnelmon_netns)
TRAFFIC.update(tunnelmon=vxlan_traffic)
# tool -> ready(what SETUP made, pid, variant): every program of the variant is
# attached (default: as many BPF links, or perf events, as it has programs)
READY: dict[str, object] = {"tunnelmon": tunnelmon_attached}


def attached(name: str, made, pid: int, variant) -> bool:
    ready = READY.get(name)
    if ready is not None:
        return ready(made, pid, variant)
    return has_bpf_link(pid) and attached_count(pid) >= len(variant.programs)


@pytest.fixture
def setups(tmp_path):
    """setups(tool) -> (its arguments, what its TRAFFIC gets), made when first
    asked and removed at the end of the test (which checks the kernel as it found it)."""
    made: dict[str, tuple[list[str], object]] = {}
    with contextlib.ExitStack() as stack:
        def get(name: str) -> tuple[list[str], object]:
            if name not in made:
                make = SETUP.get(name)
                where = tmp_path / f"setup-{name}"
                where.mkdir(exist_ok=True)
                made[name] = stack.enter_context(make(where)) if make else ([], None)
            return made[name]
        yield get


def command_words(name: str) -> list[tuple[str, ...]]:
    """The commands of a tool as the words that name them: [()] for a tool
    without subcommands, else (), ('record',), ('ctl', 'add')..."""
    declared = registry.spec(name)
    return declared.command_words() if declared is not None and declared.commands else [()]


def command_id(name: str, words: tuple[str, ...]) -> str:
    return "-".join((name, *words))


# (tool, command words) of every command of every tool; of those that take
# flags of their own; of those the running cases run or say why not (a tool,
# a command, not ctl's own commands)
COMMANDS = [pytest.param(name, words, id=command_id(name, words)) for name in TOOLS for words in command_words(name)]
SUBCOMMANDS = [p for p in COMMANDS if p.values[1]]
RUNNABLE = [p for p in COMMANDS if len(p.values[1]) == 1 or
            (not p.values[1] and getattr(registry.spec(p.values[0]), "streams", True))]


def streaming_or_skip(name: str, words: tuple[str, ...] = ()):
    """The SPEC, if the command streams the tool's records until stopped (the
    running cases apply); else a skip that says what the spec declares the
    command does instead."""
    declared = spec_of(name)
    if words:
        command = declared.command(words)
        if not command.streams:
            pytest.skip(f"pytrace {name} {' '.join(words)} streams no records (its spec: it {command.instead}): "
                        "no --json stream, stop by signal or replay to check")
    return declared


def spec_variants() -> list:
    """(tool, hook) of every variant --hook may force of every tool.  Not kernel
    matrix cases: each tool's own tests attach and check every variant in
    every guest (test_matrix checks they cover all), and starting the CLI
    under TCG costs ~20 s a case; the host runs these."""
    params = []
    for name in TOOLS:
        declared = registry.spec(name)
        params += [pytest.param(name, p.values[0], id=f"{name}-{p.values[0]}")
                   for p in variants(declared.tracer, tool=name, hooks=declared.hooks, matrix=False)]
    return params


def run_words(declared, setups) -> tuple[list[str], object]:
    """The command line (after `pytrace`) of the tool's streaming command with
    what its SETUP and ARGS add, and what its TRAFFIC gets."""
    extra, made = setups(declared.name)
    words = list(declared.streaming()) if declared.commands else []
    return [declared.name, *words, *extra, *ARGS.get(declared.name, [])], made


# -- what needs no BPF --------------------------------------------------------------------

@pytest.mark.parametrize("name", TOOLS)
def test_help_ends_with_the_examples(name):
    declared = spec_of(name)
    assert declared.examples, f"{name} declares no examples"
    r = run_cli(name, "--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.rstrip("\n").splitlines()
    tail = lines[-len(declared.examples):]
    assert lines[-len(declared.examples) - 1] == "examples:"
    for line, (command, what) in zip(tail, declared.examples):
        assert line.strip().startswith(command + " ") and line.endswith(f"# {what}"), line
    assert declared.description.split()[0] in r.stdout


@pytest.mark.parametrize("name", TOOLS)
def test_every_example_parses(name, monkeypatch):
    declared = spec_of(name)
    monkeypatch.setattr(cliutil, "_check_host", False)     # an example's namespace need not exist here
    for command, _ in declared.examples:
        parser = ArgParser(prog=f"pytrace {name}")
        declared.add_arguments(parser)
        parser.parse_args(shlex.split(command)[2:])      # a usage error would exit


@pytest.mark.parametrize("name", TOOLS)
def test_ebpf_prints_the_source(name):
    declared = spec_of(name)
    if declared.object is None:
        pytest.skip(f"{name} loads no BPF")
    r = run_cli(name, "--ebpf")
    assert r.returncode == 0, r.stderr
    assert r.stdout == objects.source(declared.object) and 'SEC("' in r.stdout


def one_line_usage_error(name: str, r) -> None:
    """Status 2, nothing on stdout, one line that names the tool (or its command: argparse's prog)."""
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert re.match(rf"pytrace {name}( [a-z]+)*: error: ", r.stderr), r.stderr


@pytest.mark.parametrize("args", [["--no-such-flag"], ["--hook", "nosuchhook"], ["--json", "extra", "words", "x"]])
@pytest.mark.parametrize("name", TOOLS)
def test_bad_input_is_one_line_and_exit_2(name, args):
    declared = spec_of(name)
    words = list(declared.streaming()) if declared.commands else []
    one_line_usage_error(name, run_cli(name, *words, *args))


# -- each command of a tool with subcommands -------------------------------------------------

@pytest.mark.parametrize("name,words", SUBCOMMANDS)
def test_command_help_ends_with_its_examples(name, words, monkeypatch):
    """A command's -h ends with its examples; one that declares none is shown
    by an example of the command above it (vnet ctl's: ctl list, add...)."""
    declared = spec_of(name)
    monkeypatch.setattr(cliutil, "_check_host", False)     # an example's namespace need not exist here
    command = declared.command(words)
    r = run_cli(name, *words, "--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.rstrip("\n").splitlines()
    if not command.examples:
        above = declared.command(words[:-1]) if len(words) > 1 else declared
        assert any(words[-1] in shlex.split(e)[2:] for e, _ in above.examples), (words, above.examples)
        return
    assert lines[-len(command.examples) - 1] == "examples:"
    for line, (example, what) in zip(lines[-len(command.examples):], command.examples):
        assert line.strip().startswith(example) and line.endswith(f"# {what}"), line
        assert shlex.split(example)[2:2 + len(words)] == list(words), example
    for example, _ in command.examples:
        parser = ArgParser(prog=f"pytrace {name}")
        declared.add_arguments(parser)
        parser.parse_args(shlex.split(example)[2:])      # a usage error would exit


@pytest.mark.parametrize("name,words", SUBCOMMANDS)
def test_command_bad_input_is_one_line_and_exit_2(name, words):
    spec_of(name)
    one_line_usage_error(name, run_cli(name, *words, "--no-such-flag"))


@pytest.mark.parametrize("name,words", SUBCOMMANDS)
def test_command_ebpf_prints_the_source_or_is_refused(name, words):
    """--ebpf where the command has the shared pytrace options; a command
    without them (vnet report, ctl) loads no BPF and refuses the flag."""
    declared = spec_of(name)
    r = run_cli(name, *words, "--ebpf")
    if declared.command(words).common:
        assert r.returncode == 0, r.stderr
        assert r.stdout == objects.source(declared.object)
    else:
        one_line_usage_error(name, r)


def test_list_shows_each_spec_summary():
    out = run_cli("list").stdout.splitlines()
    for name in TOOLS:
        declared = registry.spec(name)
        if declared is not None:
            (line,) = [l for l in out if l.split()[:1] == [name]]
            assert line.endswith(declared.summary) and declared.kind


# -- running: JSON names, signals, the kernel left as found, replay --------------------------

def expected_names(declared, record: dict) -> list[str]:
    """The names a --json record of this tool has, in order."""
    fields = list(declared.event.cls.FIELDS) if declared.event is not None else []
    if declared.kind == specs.EVENTS and not (declared.mixed and "buckets" in record):
        return (["time"] if declared.event.cls.TIME else []) + fields
    if declared.kind == specs.EVENTS:       # a mixed tool's histogram (sockrmem)
        return ["time", "ts_ns", *declared.label_names(None), "unit", "count", "sum", "average", "buckets"]
    if declared.kind == specs.HISTOGRAM and "buckets" not in record:     # a count row beside the histograms
        return ["time", "ts_ns", *list(record)[2:]]
    if declared.kind == specs.HISTOGRAM:
        labels = [k for k in record if k not in ("time", "ts_ns", "unit", "count", "sum", "average", "buckets")]
        if declared.event is not None or declared.labels:       # histograms kept per key: its fields
            assert labels == list(declared.label_names(None)), labels
        else:                                                    # label(args): one at most
            assert len(labels) <= 1, labels
        return ["time", "ts_ns", *labels, "unit", "count", "sum", "average", "buckets"]
    return ["time", "ts_ns", *fields]


def attached_count(pid: int) -> int:
    """Programs the process has attached: its BPF links, plus its perf events
    that no link holds (kernels before 5.15 attach kprobes and tracepoints
    through a perf event alone; later ones hold each such event by a link of
    link_type perf, which must not count twice)."""
    links = perf_events = perf_links = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target == "anon_inode:bpf_link":
                links += 1
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    perf_links += "link_type:\tperf" in fh.read()
            elif target == "anon_inode:[perf_event]":
                perf_events += 1
        except OSError:
            continue
    return links + max(0, perf_events - perf_links)


def run_tool(name: str, setups, *args: str, sig: int = signal.SIGINT,
             hook: str | None = None) -> tuple[int, str, str]:
    """Start the tool's streaming command, wait until every program of its
    variant is attached, make its traffic, stop it with sig: (status, stdout, stderr)."""
    declared = registry.spec(name)
    words, made = run_words(declared, setups)
    proc = subprocess.Popen([*PYTRACE, *words, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not declared.variants:       # a tool without BPF: give it time to start
            ready = not wait_until(lambda: proc.poll() is not None, 1.5)
        else:
            variant = (next(v for v in declared.variants if v.hook == hook) if hook
                       else loader.planned(declared.variants)[0])
            ready = wait_until(lambda: proc.poll() is not None or attached(name, made, proc.pid, variant), 20)
        assert ready and proc.poll() is None, f"pytrace {' '.join(words)} {' '.join(args)} did not start: " \
                                              f"{proc.stderr.read()}"
        traffic = TRAFFIC.get(name, tcp_traffic)
        traffic(made) if made is not None else traffic()
        time.sleep(0.1)             # the stop drains what the ring still holds
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


# SIGINT and SIGTERM in turn over the registry (test_stop_matrix stops every
# tool with each of SIGINT, SIGTERM and SIGHUP, and by SIGKILL)
STOPS = [pytest.param(*p.values, (signal.SIGINT, signal.SIGTERM)[i % 2], id=f"{p.id}-{('SIGINT', 'SIGTERM')[i % 2]}")
         for i, p in enumerate(RUNNABLE)]


@pytest.mark.parametrize("name,words,sig", STOPS)
def test_json_records_a_clean_stop_and_a_byte_identical_replay(name, words, sig, setups, tmp_path):
    declared = streaming_or_skip(name, words)
    setups(name)                # what the tool needs (tunnelmon's namespace) is there before
    before = kernelstate.snapshot()
    path = str(tmp_path / f"{name}.db")
    rc, out, err = run_tool(name, setups, "--json", "--record", path, sig=sig)
    assert rc == 0, err
    assert kernelstate.left_since(before) == {}
    replayed = run_cli("replay", path, "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == out
    records = [json.loads(line) for line in out.splitlines()]
    records = [r for r in records if r.get("type") != "lost"]
    assert records, f"{name} --json printed nothing for the traffic"
    notes = getattr(declared.event.cls, "notes", ()) if declared.event is not None else ()
    for r in records:
        if r.get("type") in notes:      # a record besides the rows (tunnelmon's anomalies)
            assert list(r)[:3] == ["time", "ts_ns", "type"], list(r)
        else:
            assert list(r) == expected_names(declared, r)
        if "time" in r:
            assert r["time"][-6] in "+-" and r["time"][-3] == ":", r["time"]     # RFC 3339, with the zone
            datetime.fromisoformat(r["time"])
        if "ts_ns" in r:
            assert isinstance(r["ts_ns"], int) and 0 < r["ts_ns"] <= time.monotonic_ns()


@pytest.mark.parametrize("name,words", RUNNABLE)
def test_replay_is_byte_identical_text(name, words, tmp_path, setups):
    """(--json's replay: test_json_records_a_clean_stop_and_a_byte_identical_replay)"""
    streaming_or_skip(name, words)
    path = str(tmp_path / f"{name}.db")
    rc, live, err = run_tool(name, setups, "--record", path)
    assert rc == 0, err
    assert live.strip(), f"{name} printed nothing for the traffic"
    replayed = run_cli("replay", path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == live


@pytest.mark.parametrize("name,hook", spec_variants())
def test_forced_hook_runs_that_variant(name, hook, setups):
    declared = spec_of(name)
    cli_hook_or_skip(declared.tracer, hook, tool=name)
    variant = next(v for v in declared.tracer.VARIANTS if v.hook == hook)
    names: list[str] = []
    words, made = run_words(declared, setups)
    proc = subprocess.Popen([*PYTRACE, *words, "--hook", hook, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: proc.poll() is not None or
                          (READY[name](made, proc.pid, variant) if name in READY
                           else attached_count(proc.pid) >= len(variant.programs)), 20)
        assert proc.poll() is None, proc.stderr.read()
        names = held_program_names(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # the kernel keeps 15 characters of a program's name (bpftool may show more, from BTF)
    assert sorted(n[:15] for n in names) == sorted(p[:15] for p in variant.programs)


def held_program_names(pid: int) -> list[str]:
    mine = bpf_prog_ids(pid)
    return [p.get("name", "") for p in bpf_progs() if p["id"] in mine]


def test_readme_tool_table_is_current():
    """README's table of tools is generated from the registry (pytrace/spec/readme.py)."""
    from pytrace.spec import readme
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(path) as fh:
        text = fh.read()
    assert readme.replaced(text) == text, "stale: python -m pytrace.spec.readme --write README.md"
