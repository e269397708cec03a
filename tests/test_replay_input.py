"""pytrace replay of recordings that are damaged, crafted or not ours to read.

A recording is input: replay runs only pytrace's own tracer class for the
recorded tool (a recording naming os:abort or code:interact is refused, and
nothing it names is imported), and whatever else the file holds ends in one
line on stderr and a non-zero status, never a traceback.  Another user's
recording gets the real reason (permission), not "not a recording".
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sqlite3
import stat
import subprocess
import tempfile

import pytest

from helpers import Cli, free_port, run_cli, tcp_roundtrip
from pytrace.sinks import Session
from pytrace.sinks.record import Recorder
from pytrace.sinks.snapshot import Series, Snapshot
from pytrace.core.hist import Log2Histogram

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """An event recording (tcpstates, one connection) and a snapshot one (tcprtt)."""
    d = tmp_path_factory.mktemp("recordings")
    events = d / "events.db"
    port = free_port()
    cli = Cli("tcpstates", "-L", str(port), "--record", str(events))
    tcp_roundtrip("127.0.0.1", port)
    assert cli.read_until(lambda line: "LAST_ACK" in line)
    assert cli.stop()[0] == 0
    snapshots = d / "snapshots.db"
    rec = Recorder(str(snapshots), Session.current("tcprtt", ["-i", "1"]))
    hist = Log2Histogram((0, 2, 1), "usecs", 3, 10)
    rec.snapshot(Snapshot.now("tcprtt", [Series.of({}, hist=hist)], 1.0))
    rec.close()
    return {"events": str(events), "snapshots": str(snapshots)}


def replay_of(tmp_path, source: str, *sql: str, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """pytrace replay of a copy of source changed by sql."""
    path = tmp_path / "crafted.db"
    shutil.copy(source, path)
    db = sqlite3.connect(path)
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()
    return run_cli("replay", str(path), *args)


def one_line(r: subprocess.CompletedProcess, status: int) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    assert (r.returncode, len(r.stderr.strip().splitlines())) == (status, 1), r.stderr
    return r.stderr


@pytest.mark.parametrize("cls", ["os:abort", "code:interact", "pytrace.tools.tcprtt:TcpRtt",
                                 "pytrace.tools.tcpstates:EventTracer", "pytrace.tools.tcpstates:__class__",
                                 "pytrace.tools.tcpstates:TcpStates.__init__", "pytrace.cli:main", ""])
def test_only_the_tools_own_tracer_class_is_used(tmp_path, recordings, cls):
    r = replay_of(tmp_path, recordings["events"], f"UPDATE header SET tracer_class='{cls}'")
    assert f"its tracer class {cls!r} is not pytrace's tcpstates tracer; refused" in one_line(r, 2)
    assert r.stdout == ""


EVENT_DAMAGE = {
    "format_version": "UPDATE header SET format_version='x'",
    "argv is not JSON": "UPDATE header SET argv='not json'",
    "argv holds numbers": "UPDATE header SET argv='[1, 2]'",
    "fields are not JSON": "UPDATE header SET fields='x'",
    "fewer fields than the format": """UPDATE header SET fields='["a"]'""",
    "a bad struct format": "UPDATE header SET record_format='zz'",
    "events without a format": "UPDATE header SET record_format=NULL",
    "a short record": "UPDATE events SET rec=x'00'",
    "a record as text": "UPDATE events SET rec='abc'",
    "an unknown kind": "UPDATE header SET kind='weird'",
    "a clock offset as text": "UPDATE header SET clock_offset_ns='abc'",
    "a time zone that is a path": "UPDATE header SET tz='/etc/shadow'",
    "no events table": "DROP TABLE events",
    "lost counts as text": "INSERT INTO lost (batch, t_ns, count, total) VALUES (1, 1, 'x', 'y')",
    "a header column missing": "ALTER TABLE header DROP COLUMN end_ns",
}


@pytest.mark.parametrize("what", EVENT_DAMAGE)
def test_a_damaged_event_recording_is_one_line(tmp_path, recordings, what):
    r = replay_of(tmp_path, recordings["events"], EVENT_DAMAGE[what])
    assert "a damaged or foreign recording" in one_line(r, 2)


SNAPSHOT_DAMAGE = {
    "not JSON": "UPDATE snapshots SET data='{'",
    "no time": """UPDATE snapshots SET data='{"tool": 1}'""",
    "a list": "UPDATE snapshots SET data='[1, 2]'",
    "labels that are a number": """UPDATE snapshots SET data='{"tool":"tcprtt","time_ns":1,"series":[{"labels":5}]}'""",
    "slots that are a number": """UPDATE snapshots SET data='{"tool":"tcprtt","time_ns":1,"series":[{"labels":{},
                                  "hist":{"slots":5,"unit":"usecs","total":1,"sum":1}}]}'""",
}


@pytest.mark.parametrize("what", SNAPSHOT_DAMAGE)
def test_a_damaged_snapshot_recording_is_one_line(tmp_path, recordings, what):
    r = replay_of(tmp_path, recordings["snapshots"], SNAPSHOT_DAMAGE[what])
    assert "a damaged or foreign recording" in one_line(r, 2)


def test_flags_that_do_not_parse_are_replays_one_line(tmp_path, recordings):
    for argv, needle in (('["-h"]', "(-h)"), ('["--bogus"]', "unrecognized arguments: --bogus")):
        r = replay_of(tmp_path, recordings["events"], f"UPDATE header SET argv='{argv}'")
        assert needle in one_line(r, 1)
        assert r.stdout == ""           # not the tool's help or usage


TOO_LATE = ["99999999999999999999", "+99999999999999999999", "+" + "9" * 400, "9223372037", "+9223372037",
            "+2562047789h", "9999-12-31T23:59:59", "0001-01-01"]


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_a_time_past_what_a_recording_holds_is_the_flags_fault(recordings, flag):
    """A recording's times are int64 nanoseconds (up to 2262-04-11): a time
    beyond them is refused where the flag is parsed, naming the flag and its
    bounds, not taken for a damaged recording when SQLite cannot bind it."""
    for value in TOO_LATE:
        r = run_cli("replay", recordings["events"], f"{flag}={value}")
        shown = value if len(value) <= 40 else value[:40] + "..."
        assert one_line(r, 2) == (f"pytrace replay: error: argument {flag}: '{shown}' is out of range: "
                                  "+SECONDS and Unix SECONDS 0-9223372036, a date-time from 1970-01-01 to "
                                  "2262-04-11\n"), value
        assert r.stdout == ""


@pytest.mark.parametrize("kind", ["events", "snapshots"])
def test_the_latest_times_a_recording_holds_are_taken(recordings, kind):
    """At the bound, +SECONDS (added to the start) is held at the last time a
    recording can hold: --until there is everything, --since nothing."""
    everything = run_cli("replay", recordings[kind])
    assert everything.returncode == 0 and everything.stderr == "", everything.stderr
    nothing = run_cli("replay", recordings[kind], "--since", "+0", "--until", "+0")   # no event at the start
    assert nothing.returncode == 0 and nothing.stdout != everything.stdout
    for args, expected in ((["--until", "+9223372036"], everything.stdout),
                           (["--until", "9223372036"], everything.stdout),
                           (["--since", "+9223372036"], nothing.stdout),
                           (["--since", "2262-04-11T23:47:16+00:00"], nothing.stdout)):
        r = run_cli("replay", recordings[kind], *args)
        assert (r.returncode, r.stderr, r.stdout) == (0, "", expected), args


def test_not_a_recording(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not sqlite\n" * 10)
    assert "not a SQLite file" in one_line(run_cli("replay", str(garbage)), 2)
    assert "not a file" in one_line(run_cli("replay", str(tmp_path)), 2)
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    assert "no such table: header" in one_line(run_cli("replay", str(empty)), 2)


@pytest.fixture
def open_dir(tmp_path):
    """A directory of root's that nobody can reach (pytest's own are 0700 all the way)."""
    d = tempfile.mkdtemp(prefix="pt-replay-", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def test_another_users_recording_gets_the_real_reason(tmp_path, open_dir, recordings):
    closed = tmp_path / "closed.db"
    shutil.copy(recordings["events"], closed)
    r = run_cli("replay", str(closed), prefix=NOBODY)
    assert f"{closed}: permission denied: uid 65534 may not reach it" in one_line(r, 1)

    tmp_path = open_dir
    mine = tmp_path / "mine.db"
    shutil.copy(recordings["events"], mine)
    os.chmod(mine, 0o600)
    r = run_cli("replay", str(mine), prefix=NOBODY)
    assert f"{mine}: permission denied: uid 65534 may not read it (owner uid 0, mode 600)" in one_line(r, 1)

    # readable, in a directory nobody may write (SQLite cannot make its -shm
    # file there): replayed all the same, as root replays it
    os.chmod(mine, 0o644)
    as_nobody = run_cli("replay", str(mine), prefix=NOBODY)
    assert sorted(os.listdir(tmp_path)) == ["mine.db"]
    as_root = run_cli("replay", str(mine))
    assert as_root.returncode == 0 and as_root.stdout.count("\n") > 2, as_root.stderr
    assert (as_nobody.returncode, as_nobody.stdout) == (0, as_root.stdout), as_nobody.stderr
    for name in ("mine.db-wal", "mine.db-shm"):     # what root's read-only open left
        (tmp_path / name).unlink(missing_ok=True)

    # a recording cut short (its WAL never folded in) that nobody may fold in
    wal = tmp_path / "mine.db-wal"
    wal.write_bytes(b"")
    os.chmod(wal, 0o644)
    r = run_cli("replay", str(mine), prefix=NOBODY)
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o644
    assert "only a user who may write the recording can do it (uid 65534 may not)" in one_line(r, 1)
