"""--record FILE and `pytrace replay`: real loopback connections recorded by the
CLI, checked field by field against the live --json stream, and replayed byte
for byte."""

from __future__ import annotations

import io
import json
import platform
import signal
import socket
import sqlite3
import struct
import subprocess
import time

import pytest

from helpers import Cli, free_port, run_cli, tcp_roundtrip
from pytrace.cli import cliutil
from pytrace.core.net import STATE_NAMES
from pytrace.sinks import Session, SinkSet
from pytrace.sinks.record import Recorder
from pytrace.tools import tcpstates
from pytrace.tools.tcpstates import TcpStates

PER_CONNECTION = 7     # -L port: listener CLOSE->LISTEN->CLOSE + 5 changes of the accepted socket


def record_run(tmp_path, *flags: str, connections: int = 3, port: int | None = None, pause: float = 0.0):
    """Run tcpstates -L port --record FILE with the flags; make the connections; stop it."""
    port = port or free_port()
    path = str(tmp_path / "run.db")
    cli = Cli("tcpstates", "-L", str(port), "--record", path, *flags)
    for i in range(connections):
        if i and pause:
            time.sleep(pause)
        tcp_roundtrip("127.0.0.1", port)
    want = connections * PER_CONNECTION
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(1 for l in cli.seen if _is_event(l)) < want:
        cli.read_until(lambda l: True, 0.2)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    return port, path, lines, err


def _is_event(line: str) -> bool:
    return ("->" in line and "SKADDR" not in line) or line.startswith('{"time"')


def rows(path: str) -> tuple[dict, list[dict]]:
    """The header and every event, decoded straight from SQLite with the stored format."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    header = dict(db.execute("SELECT * FROM header").fetchone())
    fields = json.loads(header["fields"])
    unpack = struct.Struct(header["record_format"]).unpack
    events = [dict(zip(fields, unpack(r["rec"])), _t=r["t_ns"], _batch=r["batch"])
              for r in db.execute("SELECT * FROM events ORDER BY id")]
    db.close()
    return header, events


def addr(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def replay(*args: str) -> subprocess.CompletedProcess:
    r = run_cli("replay", *args)
    assert r.returncode == 0, r.stderr
    return r


def test_sqlite_events_equal_the_live_json_and_replay_is_byte_identical(tmp_path):
    port, path, lines, _ = record_run(tmp_path, "--json")
    live = [json.loads(l) for l in lines]
    assert len(live) == 3 * PER_CONNECTION
    header, events = rows(path)
    assert header["tool"] == "tcpstates" and header["kind"] == "events"
    assert json.loads(header["argv"]) == ["-L", str(port), "--record", path, "--json"]
    assert header["host"] == socket.gethostname() and header["kernel"] == platform.release()
    assert abs(header["start_ns"] - time.time_ns()) < 120e9 and header["end_ns"] >= header["start_ns"]
    assert header["event"] == "tcpstates_event" and header["hook"] == "tp_btf"
    # every event, field by field, as the live stream printed it
    assert len(events) == len(live)
    for raw, ev in zip(events, live):
        assert raw["ts_ns"] == ev["ts_ns"] and f"{raw['skaddr']:x}" == ev["skaddr"]
        assert raw["pid"] == ev["pid"] and raw["comm"].rstrip(b"\0").decode() == ev["comm"]
        assert (raw["sport"], raw["dport"]) == (ev["lport"], ev["rport"]) and raw["sport"] == port
        assert addr(raw["family"], raw["saddr"]) == ev["laddr"] == "127.0.0.1"
        assert addr(raw["family"], raw["daddr"]) == ev["raddr"]
        assert (STATE_NAMES[raw["oldstate"]], STATE_NAMES[raw["newstate"]]) == (ev["oldstate"], ev["newstate"])
        assert round(raw["delta_us"] / 1000, 3) == ev["ms"]
        assert raw["_t"] == raw["ts_ns"] + header["clock_offset_ns"]
    assert replay(path).stdout == "".join(l + "\n" for l in lines)


def test_text_replay_is_byte_identical_with_time_columns(tmp_path):
    _, path, lines, _ = record_run(tmp_path, "-T", "-t", "-w", connections=2)
    assert lines[0].split()[:3] == ["TIME", "TIME(s)", "SKADDR"]
    assert sum(1 for l in lines if _is_event(l)) == 2 * PER_CONNECTION
    assert replay(path).stdout == "".join(l + "\n" for l in lines)
    # filtered: the header and exactly the live lines that match
    new = lines[0].split().index("NEWSTATE")       # (-w adds BCC's IP column)
    assert replay(path, "--where", "newstate=ESTABLISHED").stdout == \
        "".join(l + "\n" for l in lines if l is lines[0] or l.split()[new] == "ESTABLISHED")
    # and the same run as the tool's JSON, decoded from the same records
    recs = [json.loads(l) for l in replay(path, "--json").stdout.splitlines()]
    text_rows = [l.split() for l in lines[1:]]
    at = [lines[0].split().index(h) for h in ("SKADDR", "C-PID", "OLDSTATE", "NEWSTATE")]
    assert [(r["skaddr"], str(r["pid"]), r["oldstate"], r["newstate"]) for r in recs] == \
        [tuple(c[i] for i in at) for c in text_rows]


def test_sigkill_loses_nothing_that_was_printed(tmp_path):
    """Batches are committed before they are printed: kill -9 after the lines
    appeared, and every one of them is in the file, which stays readable."""
    port = free_port()
    path = str(tmp_path / "killed.db")
    cli = Cli("tcpstates", "--json", "-L", str(port), "--record", path)
    for _ in range(3):
        tcp_roundtrip("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(cli.seen) < 3 * PER_CONNECTION:
        cli.read_until(lambda l: True, 0.2)
    printed = [json.loads(l) for l in cli.seen]
    assert len(printed) == 3 * PER_CONNECTION
    cli.stop(signal.SIGKILL)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    _, events = rows(path)
    assert {(e["ts_ns"], f"{e['skaddr']:x}") for e in events} >= {(p["ts_ns"], p["skaddr"]) for p in printed}
    assert replay(path, "--json").stdout == "".join(json.dumps(p, separators=(",", ":")) + "\n"
                                                   for p in printed)


def test_replay_filters_by_field_and_time(tmp_path):
    port, path, lines, _ = record_run(tmp_path, "--json", connections=2, pause=0.5)
    live = [json.loads(l) for l in lines]
    header, _ = rows(path)
    off = header["clock_offset_ns"]
    first, second = live[:PER_CONNECTION], live[PER_CONNECTION:]
    # both connections' listeners and children are distinct sockets; split on time
    assert max(e["ts_ns"] for e in first) < min(e["ts_ns"] for e in second)
    mid = (max(e["ts_ns"] for e in first) + min(e["ts_ns"] for e in second)) // 2 + off

    def replayed(*args: str) -> list[dict]:
        return [json.loads(l) for l in replay(path, "--json", *args).stdout.splitlines()]
    assert replayed("--until", f"{mid / 1e9:.6f}") == first
    assert replayed("--since", f"{mid / 1e9:.6f}") == second
    assert replayed("--since", f"+{(mid - header['start_ns']) / 1e9:.6f}") == second
    assert replayed("--where", "newstate=CLOSE") == [e for e in live if e["newstate"] == "CLOSE"]
    rport = second[1]["rport"]
    assert rport and replayed("--where", f"rport={rport}", "--where", "oldstate!=LISTEN") == \
        [e for e in second if e["rport"] == rport and e["oldstate"] != "LISTEN"]


@pytest.mark.parametrize("args,needle", [
    (["--where", "nosuchfield=1"], "nosuchfield"),
    (["--where", "justtext"], "FIELD=VALUE"),
    (["--since", "yesterday-ish"], "--since"),
])
def test_replay_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    _, path, _, _ = record_run(tmp_path, "--json", connections=1)
    r = run_cli("replay", path, *args)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr


def test_replay_of_something_else_is_exit_2(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all\n" * 100)
    for target in (str(junk), str(tmp_path / "missing.db")):
        r = run_cli("replay", target)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_record_never_overwrites(tmp_path):
    existing = tmp_path / "old.db"
    existing.write_bytes(b"keep me")
    r = run_cli("tcpstates", "--record", str(existing))
    assert r.returncode == 2 and "exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert existing.read_bytes() == b"keep me"


def test_no_file_left_when_the_tool_cannot_start(tmp_path):
    from pytrace.core import features
    usable, _ = features.probe("kprobe")
    if usable:
        pytest.skip("kprobes work here: tcprtt --hook kprobe would start")
    path = tmp_path / "never.db"
    r = run_cli("tcprtt", "--hook", "kprobe", "-d", "1", "--record", str(path))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not path.exists()


def test_lost_counts_are_recorded_and_replayed_in_place(tmp_path):
    """A one-page ring left unread while 150 connections happen loses records
    (more than the ring and its spare hold):
    the recording keeps every delivered record and every lost count, and
    replay prints the lost reports where the live stream did."""
    port = free_port()
    path = str(tmp_path / "lossy.db")
    live = io.StringIO()
    sinks = SinkSet(Session.current("tcpstates", ["-L", str(port), "--json"]),
                    [Recorder(path, Session.current("tcpstates", ["-L", str(port), "--json"]))])
    cliutil.share_epoch()
    cliutil.set_sinks(sinks)
    try:
        with TcpStates(lports=[port], ring_bytes=4096) as tracer:
            for _ in range(150):
                tcp_roundtrip("127.0.0.1", port)
            out = cliutil.Output(True, live)
            cliutil.stream_events(tracer, out, tcpstates.SPEC.event_renderer(tracer, _args(json=True), out),
                                      duration=0.3)
            lost = tracer.lost
    finally:
        cliutil.set_sinks(None)
        sinks.close()
        cliutil._epoch = None
    assert lost > 0
    recs = [json.loads(l) for l in live.getvalue().splitlines()]
    losses = [r for r in recs if r.get("type") == "lost"]
    assert sum(r["count"] for r in losses) == lost
    db = sqlite3.connect(path)
    assert db.execute("SELECT COALESCE(SUM(count), 0), COUNT(*) FROM lost").fetchone() == (lost, len(losses))
    n_events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    db.close()
    assert n_events + lost == 150 * PER_CONNECTION
    assert replay(path).stdout == live.getvalue()


def _args(**kw):
    import argparse
    p = argparse.ArgumentParser()
    tcpstates.SPEC.add_arguments(p)
    ns = p.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_tcprtt_intervals_are_recorded_and_replayed(tmp_path):
    """An aggregating tool hands each interval to the sinks: the recording
    holds the histograms and replay prints them as tcprtt did."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    path = str(tmp_path / "rtt.db")
    cli = Cli("tcprtt", "-i", "1", "-T", "-e", "-p", str(port), "--record", path)
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    for _ in range(50):
        c.sendall(b"q")
        a.recv(1)
        a.sendall(b"a")
        c.recv(1)
    assert cli.read_until(lambda l: l.startswith("All Addresses"), 5)
    rc, lines, err = cli.stop()
    for s in (c, a, srv):
        s.close()
    assert rc == 0, err
    assert replay(path).stdout == "".join(l + "\n" for l in lines)
    db = sqlite3.connect(path)
    snaps = [json.loads(d) for (d,) in db.execute("SELECT data FROM snapshots ORDER BY id")]
    db.close()
    counts = [int(l.split(":")[1].split("|")[0]) for l in lines if "->" in l]
    assert sum(s["hist"]["total"] for snap in snaps for s in snap["series"]) == sum(counts) >= 50
    js = [json.loads(l) for l in replay(path, "--json").stdout.splitlines()]
    assert sum(r["count"] for r in js) == sum(counts)
