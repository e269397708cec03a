"""--record FILE: every event and lost count of a run, in a SQLite file.

Layout (format_version 1):

    header     one row: tool, argv (JSON list), host, kernel, start_ns, tz,
               pytrace version, kind ('events' or 'snapshots'), and for
               events the record's C struct, field names (JSON), struct
               format, hook, tracer class and the clock epoch
    events     id, batch, t_ns (wall clock of the event), rec (the raw record,
               packed with the struct format: exact, and decodable without
               the BPF object)
    lost       id, batch, t_ns, count (new losses), total (cumulative)
    snapshots  id, t_ns, data (Snapshot JSON)
    labels     cgroup_id, netns, data (core/containers.Labels JSON): whose
               the recorded events were, one row per (cgroup, netns) pair
               met, when labels were asked for (--show-container); replay
               labels the events from it (a recording without the table:
               none were)

A tool that streams events and also prints interval snapshots (sockrmem)
makes kind 'mixed': each snapshot's JSON then also holds "events_before",
how many records were recorded before it, so replay interleaves them as
they were printed (Recording.mixed).

Each batch is one transaction in WAL mode, committed before the batch is
printed: a SIGKILL loses at most the batch being written, and the file
stays readable (SQLite replays its WAL on the next open).  The writing runs
on the sink's own thread (sinks/worker.py, Recorder.durable): the reader
renders the batch meanwhile instead of waiting, and prints it once it is
committed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import time
import urllib.parse
from typing import Any, Iterator

from ..core.errors import PytraceError, UsageError, shown
from . import EventSource, Session, Sink, notice
from .snapshot import Snapshot

FORMAT_VERSION = 1

# The index on events' time (replay --since/--until) is made when the
# recording closes: kept up to date through a storm, it made every insert
# three times as costly.  A recording cut short by a kill has none, and is
# read by a scan.
TIME_INDEX = "CREATE INDEX IF NOT EXISTS events_t ON events (t_ns)"

SCHEMA = """
CREATE TABLE header (
    format_version INTEGER NOT NULL,
    tool TEXT NOT NULL,
    argv TEXT NOT NULL,
    host TEXT NOT NULL,
    kernel TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    tz TEXT NOT NULL,
    pytrace TEXT NOT NULL,
    kind TEXT,
    event TEXT,
    fields TEXT,
    record_format TEXT,
    hook TEXT,
    tracer_class TEXT,
    clock_offset_ns INTEGER,
    clock_start_ns INTEGER,
    end_ns INTEGER
);
CREATE TABLE events (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, t_ns INTEGER NOT NULL,
                     rec BLOB NOT NULL);
CREATE TABLE lost (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, t_ns INTEGER NOT NULL,
                   count INTEGER NOT NULL, total INTEGER NOT NULL);
CREATE TABLE snapshots (id INTEGER PRIMARY KEY, t_ns INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE labels (cgroup_id INTEGER NOT NULL, netns INTEGER NOT NULL, data TEXT NOT NULL,
                     PRIMARY KEY (cgroup_id, netns));
"""


class Recorder(Sink):
    durable = True      # a batch is printed once it is committed

    def __init__(self, path: str, session: Session):
        self.path = path
        self.name = f"--record {path}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # never overwrite
            os.close(fd)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript("BEGIN;" + SCHEMA + "COMMIT;")
        except FileExistsError:
            raise UsageError(f"--record {path}: exists; a recording is never overwritten") from None
        except (OSError, sqlite3.Error) as exc:
            raise PytraceError(f"--record {path}: {getattr(exc, 'strerror', None) or exc}") from None
        self.db.execute(
            "INSERT INTO header (format_version, tool, argv, host, kernel, start_ns, tz, pytrace) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (FORMAT_VERSION, session.tool, json.dumps(list(session.argv)), session.host, session.kernel,
             session.start_ns, session.tz, session.version))
        self.batch = 0
        self.reported_lost = 0
        self.used = False
        self._pack = None
        self._ti: int | None = None
        self._offset = 0
        self.header_kind = ""
        self.n_events = 0          # records written: where a mixed recording's snapshots fall
        self._labeler = None       # with labels: core/containers.Labeler, and where a record's ids are
        self._label_at: tuple[int, int | None] = (0, None)
        self._labelled: set[tuple[int, int]] = set()

    def _write(self, sql: str, rows: list[tuple]) -> None:
        try:
            self.db.execute("BEGIN")
            self.db.executemany(sql, rows)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise PytraceError(f"--record {self.path}: {exc}") from None
        except BaseException:
            # interrupted mid-batch: end the transaction, so what follows can still be recorded
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def begin(self, source: EventSource) -> None:
        layout = struct.Struct(source.record_format)
        self._pack, self._iter_unpack = layout.pack, layout.iter_unpack
        self._ti = source.time_index
        self._offset = source.epoch[0]
        self.used = True
        if source.labeler is not None and "cgroup_id" in source.fields:
            self._labeler = source.labeler
            self._label_at = (source.fields.index("cgroup_id"),
                              source.fields.index("netns") if "netns" in source.fields else None)
        self.db.execute(
            "UPDATE header SET kind='events', event=?, fields=?, record_format=?, hook=?, tracer_class=?, "
            "clock_offset_ns=?, clock_start_ns=?",
            (source.event, json.dumps(list(source.fields)), source.record_format, source.hook,
             source.tracer_class, source.epoch[0], source.epoch[1]))

    def events_packed(self, data: bytes, n: int) -> None:
        """events() of n records already packed with the record format (the
        sink's worker queues them so): each record's bytes are its blob."""
        self.batch += 1
        size, ti, off, b = len(data) // n, self._ti, self._offset, self.batch
        blobs = [data[i:i + size] for i in range(0, len(data), size)]
        if self._labeler is not None:
            self._record_labels(self._iter_unpack(data))
        if ti is None:
            now = time.time_ns()
            rows = [(b, now, blob) for blob in blobs]
        else:
            rows = [(b, r[ti] + off, blob) for r, blob in zip(self._iter_unpack(data), blobs)]
        self._write("INSERT INTO events (batch, t_ns, rec) VALUES (?, ?, ?)", rows)
        self.n_events += n

    def events(self, batch: list[tuple]) -> None:
        self.batch += 1
        pack, ti, off, b = self._pack, self._ti, self._offset, self.batch
        if self._labeler is not None:
            self._record_labels(batch)
        if ti is None:
            now = time.time_ns()
            rows = [(b, now, pack(*r)) for r in batch]
        else:
            rows = [(b, r[ti] + off, pack(*r)) for r in batch]
        self._write("INSERT INTO events (batch, t_ns, rec) VALUES (?, ?, ?)", rows)
        self.n_events += len(rows)

    def _record_labels(self, records: Any) -> None:
        """The labels of the (cgroup, netns) pairs these records are the first of."""
        cg_at, ns_at = self._label_at
        seen, new = self._labelled, {}
        for r in records:
            pair = (r[cg_at], r[ns_at] if ns_at is not None else 0)
            if pair[0] and pair not in seen and pair not in new:
                new[pair] = self._labeler.labels(*pair)
        if new:
            seen.update(new)
            self._write("INSERT OR REPLACE INTO labels (cgroup_id, netns, data) VALUES (?, ?, ?)",
                        [(cg, ns, json.dumps(lab.to_dict(), separators=(",", ":")))
                         for (cg, ns), lab in new.items()])

    def lost(self, total: int) -> None:
        new = total - self.reported_lost
        if new <= 0:
            return
        self.reported_lost = total
        self._write("INSERT INTO lost (batch, t_ns, count, total) VALUES (?, ?, ?, ?)",
                    [(self.batch, time.time_ns(), new, total)])

    def snapshot(self, snap: Snapshot) -> None:
        data = snap.to_json()
        if self._pack is not None:      # an event tool's interval: keep its place among the events
            if self.header_kind != "mixed":
                self.header_kind = "mixed"
                self.db.execute("UPDATE header SET kind='mixed'")
            data["events_before"] = self.n_events
        elif not self.used:
            self.used = True
            self.db.execute("UPDATE header SET kind='snapshots'")
        self._write("INSERT INTO snapshots (t_ns, data) VALUES (?, ?)",
                    [(snap.time_ns, json.dumps(data, separators=(",", ":")))])

    def close(self, failed: bool = False, dropped: int = 0) -> None:
        if self.db is None:
            return
        if dropped:
            notice(f"--record {self.path}: {dropped} events not recorded (the recording fell behind, "
                   "or the command was stopped before they were written)")
        try:
            self.db.execute("UPDATE header SET end_ns=?", (time.time_ns(),))
            if self.used:
                self.db.execute(TIME_INDEX)
            self.db.close()
        except sqlite3.Error:
            pass
        self.db = None
        if failed and not self.used:
            # the tool never started (no privilege, bad hook...): leave no empty recording
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except OSError:
                    pass


class Recording:
    """A recording opened for reading (what `pytrace replay` uses).

    A recording is input like any other: whatever the file holds, opening it
    either gives a header whose every value has the type and shape replay
    relies on, or raises a one-line error (UsageError for a file that is not
    a recording, or a damaged one; PytraceError when this user may not read it)."""

    def __init__(self, path: str):
        self.path = path
        self._check_readable()
        row, error = None, None
        # read-only first (replay needs no privilege); a recording cut short by a
        # kill still has its WAL, which only a writable open can fold back in.
        # Without a WAL file the recording is complete: immutable then reads it
        # even where SQLite could not make its shared-memory file (another
        # user's recording, in a directory this user may not write).
        modes = ["ro", "rw"] if os.path.exists(path + "-wal") else ["ro", "ro&immutable=1", "rw"]
        for mode in modes:
            try:
                self.db = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}",
                                          uri=True)
                self.db.row_factory = sqlite3.Row
                row = self.db.execute("SELECT * FROM header").fetchone()
                break
            except sqlite3.Error as exc:
                error = exc
        else:
            if os.path.exists(path + "-wal") and not os.access(path, os.W_OK):
                raise PytraceError(f"{path}: its write-ahead log ({path}-wal) was never folded in, and only a "
                                   f"user who may write the recording can do it (uid {os.geteuid()} may not)") \
                    from None
            raise UsageError(f"{path}: not a pytrace recording ({error})") from None
        if row is None:
            raise UsageError(f"{path}: not a pytrace recording (empty header)")
        self.header = self._checked(dict(row))
        self.tool: str = self.header["tool"]
        self.argv: list[str] = self._json_strings("argv")
        self.kind: str | None = self.header["kind"]
        self.start_ns: int = self.header["start_ns"]
        self.tz: str = self.header["tz"]
        self.fields: tuple[str, ...] = tuple(self._json_strings("fields")) if self.header["fields"] else ()
        self.epoch = (self.header["clock_offset_ns"], self.header["clock_start_ns"]) \
            if self.header["clock_offset_ns"] is not None else None
        if self.header["record_format"] is not None:
            try:
                layout = struct.Struct(self.header["record_format"])
            except struct.error as exc:
                raise self._damaged(f"record_format: {exc}") from None
            if len(layout.unpack(bytes(layout.size))) != len(self.fields):
                raise self._damaged("record_format and fields disagree")
        if self.kind in ("events", "mixed") and self.header["record_format"] is None:
            raise self._damaged("events without a record_format")

    def _check_readable(self) -> None:
        """The real reason a file cannot be replayed, before SQLite's guess."""
        import stat
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise UsageError(f"{shown(path)}: no such file") from None
        except PermissionError:
            raise PytraceError(f"{path}: permission denied: uid {os.geteuid()} may not reach it "
                               "(a directory on its path is closed to it)") from None
        except OSError as exc:
            raise PytraceError(f"{path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: not a file")
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except PermissionError:
            raise PytraceError(f"{path}: permission denied: uid {os.geteuid()} may not read it "
                               f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})") from None
        except OSError as exc:
            raise PytraceError(f"{path}: {exc.strerror}") from None
        if head != b"SQLite format 3\x00":
            raise UsageError(f"{path}: not a pytrace recording (not a SQLite file)")

    # header column: (the types it may have, whether it may be NULL)
    _COLUMNS = {
        "format_version": (int, False), "tool": (str, False), "argv": (str, False), "host": (str, False),
        "kernel": (str, False), "start_ns": (int, False), "tz": (str, False), "pytrace": (str, False),
        "kind": (str, True), "event": (str, True), "fields": (str, True), "record_format": (str, True),
        "hook": (str, True), "tracer_class": (str, True), "clock_offset_ns": (int, True),
        "clock_start_ns": (int, True), "end_ns": (int, True),
    }

    def _checked(self, header: dict) -> dict:
        for name, (kind, nullable) in self._COLUMNS.items():
            if name not in header:
                raise self._damaged(f"no {name} in its header")
            value = header[name]
            if (value is None and not nullable) or (value is not None and type(value) is not kind):
                raise self._damaged(f"header {name} = {value!r:.40}")
        if header["format_version"] > FORMAT_VERSION:
            raise UsageError(f"{self.path}: recording format {header['format_version']} is newer than this pytrace")
        if header["kind"] not in (None, "events", "snapshots", "mixed"):
            raise self._damaged(f"kind {header['kind']!r:.40}")
        # TZ is handed to the C library: a zone name, never a path out of the zone database
        tz = header["tz"]
        if ".." in tz or tz.lstrip(":").startswith("/") or not all(c.isalnum() or c in "_+-/:.,<>" for c in tz):
            raise self._damaged(f"time zone {tz!r:.40}")
        return header

    def _json_strings(self, column: str) -> list[str]:
        try:
            value = json.loads(self.header[column])
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._damaged(f"{column} is not a list of strings")
        return value

    def _damaged(self, what: str) -> UsageError:
        return UsageError(f"{self.path}: a damaged or foreign recording ({what})")

    def close(self) -> None:
        self.db.close()

    def _range(self, since_ns: int | None, until_ns: int | None) -> tuple[str, list[int]]:
        cond, params = [], []
        if since_ns is not None:
            cond.append("t_ns >= ?")
            params.append(since_ns)
        if until_ns is not None:
            cond.append("t_ns <= ?")
            params.append(until_ns)
        return (" WHERE " + " AND ".join(cond)) if cond else "", params

    def batches(self, since_ns: int | None = None, until_ns: int | None = None,
                chunk: int = 4096) -> Iterator[tuple[list[tuple], list[tuple[int, int]]]]:
        """(records, [(lost count, lost total)...]) in recording order, the
        records decoded back into the raw tuples the live tool had."""
        unpack = struct.Struct(self.header["record_format"]).unpack
        where, params = self._range(since_ns, until_ns)
        losts = self.db.execute(f"SELECT batch, count, total FROM lost{where} ORDER BY id", params).fetchall()
        li = 0
        cur = self.db.execute(f"SELECT batch, rec FROM events{where} ORDER BY id", params)
        pending: list[tuple] = []
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                break
            for batch, rec in rows:
                # lost counts reported after an earlier batch go out before this one's records
                if li < len(losts) and losts[li][0] < batch:
                    if pending:
                        yield pending, []
                        pending = []
                    out = []
                    while li < len(losts) and losts[li][0] < batch:
                        out.append((losts[li][1], losts[li][2]))
                        li += 1
                    yield [], out
                pending.append(unpack(rec))
            if len(pending) >= chunk:
                yield pending, []
                pending = []
        rest = [(c, t) for _, c, t in losts[li:]]
        if pending or rest:
            yield pending, rest

    def snapshots(self, since_ns: int | None = None, until_ns: int | None = None) -> Iterator[Snapshot]:
        where, params = self._range(since_ns, until_ns)
        for (data,) in self.db.execute(f"SELECT data FROM snapshots{where} ORDER BY id", params):
            yield Snapshot.from_json(json.loads(data))

    def mixed(self, since_ns: int | None = None, until_ns: int | None = None
              ) -> Iterator[tuple[list[tuple], list[tuple[int, int]], Snapshot | None]]:
        """A 'mixed' recording in the order it was printed: (records, losts,
        None) as batches() yields them, and ([], [], snapshot) where each
        snapshot came (after the lost counts reported with the batch before it)."""
        where, params = self._range(since_ns, until_ns)
        snaps = []
        for (data,) in self.db.execute(f"SELECT data FROM snapshots{where} ORDER BY id", params):
            d = json.loads(data)
            snaps.append((d.get("events_before", 0), Snapshot.from_json(d)))
        losts = self.db.execute(f"SELECT batch, count, total FROM lost{where} ORDER BY id", params).fetchall()
        unpack = struct.Struct(self.header["record_format"]).unpack
        si = li = 0
        pending: list[tuple] = []
        for rid, batch, rec in self.db.execute(f"SELECT id, batch, rec FROM events{where} ORDER BY id", params):
            due_lost = li < len(losts) and losts[li][0] < batch
            due_snap = si < len(snaps) and snaps[si][0] < rid
            if due_lost or due_snap:
                if pending:
                    yield pending, [], None
                    pending = []
                out = []
                while li < len(losts) and losts[li][0] < batch:
                    out.append((losts[li][1], losts[li][2]))
                    li += 1
                if out:
                    yield [], out, None
                while si < len(snaps) and snaps[si][0] < rid:
                    yield [], [], snaps[si][1]
                    si += 1
            pending.append(unpack(rec))
            if len(pending) >= 4096:
                yield pending, [], None
                pending = []
        rest = [(c, t) for _, c, t in losts[li:]]
        if pending or rest:
            yield pending, rest, None
        for _, snap in snaps[si:]:
            yield [], [], snap

    def tracer_class(self) -> type:
        """The recorded tracer class, if it is one of pytrace's own for the
        recorded tool: a class with make_event() defined in pytrace.tools.TOOL,
        or in the tool's own package (pytrace.vnet.tracer for vnet).  A
        recording names it as text; anything else it names (os:abort,
        code:interact...) is refused, never imported nor called."""
        from .. import tools as registry
        name = self.header["tracer_class"] or ""
        mod_name, _, qual = name.partition(":")
        own = mod_name == f"pytrace.tools.{self.tool}" or mod_name.startswith(f"pytrace.{self.tool}.")
        refused = UsageError(f"{self.path}: its tracer class {name!r:.60} is not pytrace's {self.tool} "
                             "tracer; refused")
        if not (registry.exists(self.tool) and own and qual.isidentifier()
                and all(part.isidentifier() for part in mod_name.split("."))):
            raise refused
        import importlib
        try:
            module = importlib.import_module(mod_name)
        except ImportError:
            raise PytraceError(f"{self.path}: this pytrace has no {name} to decode the records") from None
        kind = getattr(module, qual, None)
        if not isinstance(kind, type) or kind.__module__ != mod_name or not callable(getattr(kind, "make_event", None)):
            raise refused
        return kind

    def source(self) -> Any:
        """An unopened instance of the recorded tracer class, set up to decode
        these records: it stands in for the live tracer in the tool's renderer."""
        kind = self.tracer_class()
        try:
            src = kind()
        except TypeError:  # the constructor wants arguments: the defaults will do for decoding
            src = kind.__new__(kind)
        src.raw_fields = self.fields
        src.idx = {n: i for i, n in enumerate(self.fields)}
        labels = self.labels()
        # recorded with labels: the events get them back (Tracer.labeler reads scope)
        src.scope = _RecordedScope(labels) if labels else None
        prepare = getattr(src, "prepare_replay", None)
        if prepare is not None:   # a tool whose make_event needs kernel tables loads them here
            prepare()
        return src

    def first_event_ns(self) -> int | None:
        """The kernel monotonic time of the first event recorded, if it has one."""
        if "ts_ns" not in self.fields or self.header["record_format"] is None:
            return None
        row = self.db.execute("SELECT rec FROM events ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return struct.Struct(self.header["record_format"]).unpack(row[0])[self.fields.index("ts_ns")]

    def labels(self) -> dict[tuple[int, int], Any]:
        """(cgroup id, netns) -> core/containers.Labels, as recorded (none
        without labels, or in a recording older than the table)."""
        from ..core.containers import Labels
        try:
            rows = self.db.execute("SELECT cgroup_id, netns, data FROM labels").fetchall()
        except sqlite3.Error:
            return {}
        out = {}
        for cg, ns, data in rows:
            try:
                d = json.loads(data)
                out[(int(cg), int(ns))] = Labels(**{k: d.get(k) for k in Labels.__dataclass_fields__})
            except (TypeError, ValueError, AttributeError):     # not JSON, not an object, not Labels'
                raise self._damaged("labels") from None
        return out


class _RecordedScope:
    """What replay's stand-in tracer has for a live tracer's core/containers.Scope:
    only its labeler, which answers from the recording."""

    def __init__(self, labels: dict[tuple[int, int], Any]):
        self.labeler = self
        self._labels = labels

    def labels(self, cgroup_id: int, netns: int) -> Any:
        from ..core.containers import Labels
        found = self._labels.get((cgroup_id, netns))
        return found if found is not None else Labels(cgroup_id, None, netns)
