"""Where vnet records are kept, and how the report reads them back.

SQLite (the default, one file per agent or shared): the records table holds
one row per packet per point (ROW_FIELDS), the points table when each point
was added and removed, the agents table each recording run (host label,
injected clock offset, selector, lost count).  Each batch is one transaction
in WAL mode, so `pytrace vnet report` can read a store while it is written.

InfluxDB 1.x (several hosts): records are written by the session's sinks
(pytrace.sinks.influx: batching, retry, bounded buffer) as points of the
measurement "vnet": tags host, point and cpu; fields the rest of
PacketRecord.to_dict(), with the record's time as the point's time.  Reading
them back is one chunked /query (read_influx below).
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import sqlite3
import time
import urllib.parse
from typing import Any, Iterable

from ..core.errors import PytraceError, UsageError
from .config import PROTOCOLS
from .tracer import ROW_FIELDS

MEASUREMENT = "vnet"
INFLUX_TAGS = ("host", "point", "cpu")

Row = collections.namedtuple("Row", ROW_FIELDS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    host TEXT NOT NULL, ts_ns INTEGER NOT NULL, point TEXT NOT NULL, pkt_id INTEGER NOT NULL,
    proto INTEGER NOT NULL, saddr TEXT NOT NULL, sport INTEGER NOT NULL, daddr TEXT NOT NULL,
    dport INTEGER NOT NULL, length INTEGER NOT NULL, ip_len INTEGER NOT NULL, netns INTEGER NOT NULL,
    ifindex INTEGER NOT NULL, cpu INTEGER NOT NULL, encap INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    host TEXT NOT NULL, label TEXT NOT NULL, point_id INTEGER, device TEXT, netns TEXT,
    netns_inode INTEGER, ifindex INTEGER, direction TEXT, method TEXT, hook TEXT,
    added_ns INTEGER, removed_ns INTEGER);
CREATE TABLE IF NOT EXISTS agents (
    host TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER, clock_offset_ns INTEGER,
    selector TEXT, lost INTEGER, argv TEXT);
"""

_SIGN = 1 << 63


def _signed(v: int) -> int:
    """SQLite integers are signed 64-bit; packet IDs are unsigned."""
    return v - (1 << 64) if v >= _SIGN else v


def _unsigned(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


class SqliteStore:
    """Append records to a SQLite file (created if missing)."""

    def __init__(self, path: str):
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"{path}: directory {parent} does not exist")
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise PytraceError(f"{path}: not a usable SQLite store ({exc})") from None
        self.written = 0
        self._agent: int | None = None

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def begin_agent(self, host: str, clock_offset_ns: int, selector: str, argv: Iterable[str] = (),
                    start_ns: int | None = None) -> None:
        """start_ns: when the agent started tracing (wall clock; default now)."""
        start = time.time_ns() if start_ns is None else start_ns
        cur = self.db.execute("INSERT INTO agents (host, start_ns, clock_offset_ns, selector, argv) "
                              "VALUES (?, ?, ?, ?, ?)",
                              (host, start + clock_offset_ns, clock_offset_ns, selector, json.dumps(list(argv))))
        self._agent = cur.lastrowid

    def end_agent(self, lost: int, end_ns: int) -> None:
        if self._agent is not None:
            self.db.execute("UPDATE agents SET end_ns = ?, lost = ? WHERE rowid = ?", (end_ns, lost, self._agent))

    def write(self, rows: list[tuple]) -> None:
        """Rows in ROW_FIELDS order (VnetTracer.rows), one transaction."""
        if not rows:
            return
        db = self.db
        db.execute("BEGIN")
        db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       [r[:3] + (_signed(r[3]),) + r[4:] for r in rows])
        db.execute("COMMIT")
        self.written += len(rows)

    def point_added(self, host: str, info: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO points (host, label, point_id, device, netns, netns_inode, ifindex, "
                        "direction, method, hook, added_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (host, info["label"], info["id"], info["device"], info["netns"], info["netns_inode"],
                         info["ifindex"], info["direction"], info["method"], info["hook"], info["added_ns"]))

    def point_removed(self, host: str, label: str, point_id: int, ts_ns: int) -> None:
        self.db.execute("UPDATE points SET removed_ns = ? WHERE host = ? AND label = ? AND point_id = ? "
                        "AND removed_ns IS NULL", (ts_ns, host, label, point_id))


def _open_ro(path: str) -> sqlite3.Connection:
    """For reading.  A writable store is opened normally, so that closing it
    checkpoints the WAL (a read-only connection would leave -wal/-shm files)."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such store")
    if os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        return sqlite3.connect(path)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_sqlite(path: str, since_ns: int | None = None, until_ns: int | None = None) -> list[Row]:
    try:
        db = _open_ro(path)
        try:
            sql, args = "SELECT * FROM records", []
            conds = []
            if since_ns is not None:
                conds.append("ts_ns >= ?")
                args.append(since_ns)
            if until_ns is not None:
                conds.append("ts_ns <= ?")
                args.append(until_ns)
            if conds:
                sql += " WHERE " + " AND ".join(conds)
            return [Row(*r[:3], _unsigned(r[3]), *r[4:]) for r in db.execute(sql, args)]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: not a vnet store ({exc})") from None


def read_points(path: str) -> list[dict[str, Any]]:
    """The points table: when each point was added and removed."""
    db = _open_ro(path)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM points ORDER BY added_ns")]
    finally:
        db.close()


def read_agents(path: str) -> list[dict[str, Any]]:
    db = _open_ro(path)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM agents ORDER BY start_ns")]
    finally:
        db.close()


# -- InfluxDB: reading back what the sinks wrote ----------------------------------------

def read_influx(url: str, since_ns: int | None = None, until_ns: int | None = None,
                timeout: float = 30.0) -> list[Row]:
    """Every vnet point in the database of url (http[s]://HOST[:PORT]/DB), as Rows."""
    from ..sinks.influx import parse_url
    u = parse_url(url)
    conds = []
    if since_ns is not None:
        conds.append(f"time >= {int(since_ns)}")
    if until_ns is not None:
        conds.append(f"time <= {int(until_ns)}")
    q = f'SELECT * FROM "{MEASUREMENT}"' + (" WHERE " + " AND ".join(conds) if conds else "")
    params = {"db": u.database, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": "20000"}
    if u.retention_policy:
        params["rp"] = u.retention_policy
    headers = {}
    user, password = os.environ.get("INFLUX_USERNAME"), os.environ.get("INFLUX_PASSWORD")
    if user is not None or password is not None:
        import base64
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
    kind = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = kind(u.host, u.port, timeout=timeout)
    try:
        conn.request("GET", f"{u.prefix}/query?{urllib.parse.urlencode(params)}", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise PytraceError(f"influx {u.display}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise PytraceError(f"influx {u.display}: HTTP {resp.status}: {body[:200].decode(errors='replace')}")
    rows: list[Row] = []
    for chunk in body.splitlines():
        if not chunk.strip():
            continue
        doc = json.loads(chunk)
        for result in doc.get("results", []):
            if "error" in result:
                raise PytraceError(f"influx {u.display}: {result['error']}")
            for series in result.get("series", []):
                cols = series["columns"]
                for values in series["values"]:
                    rows.append(_row_of(dict(zip(cols, values))))
    return rows


def _row_of(p: dict[str, Any]) -> Row:
    proto = p.get("proto")
    proto = PROTOCOLS.get(proto, 0) if isinstance(proto, str) and not proto.isdigit() else int(proto or 0)
    return Row(p["host"], int(p["time"]), p["point"], int(p["pkt_id"], 16), proto, p["saddr"], int(p["sport"]),
               p["daddr"], int(p["dport"]), int(p["length"]), int(p["ip_len"]), int(p["netns"]),
               int(p["ifindex"]), int(p["cpu"]), int(bool(p["encap"])))
