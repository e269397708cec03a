"""--influx URL: events and snapshots as InfluxDB 1.x points (HTTP /write, line protocol).

InfluxWriter is the reusable part (pytrace vnet sends its records through it
too): points are queued by the caller's thread and POSTed in batches by a
background thread.  While the server is unreachable the points wait in a
bounded buffer and the batch is retried with backoff; when the buffer is full
the oldest points are dropped, and every dropped point is counted and
reported.  Credentials come from the environment (INFLUX_USERNAME,
INFLUX_PASSWORD), never from the command line.

URL:  http[s]://HOST[:PORT][/PREFIX]/DATABASE[?rp=POLICY&batch=N&buffer=N&flush=SEC]
      (DATABASE defaults to "pytrace"; it is created if missing and the
      credentials allow it)

How events become points (InfluxSink): measurement = the tool's name; from
the event's to_dict(), strings become tags (or the names in the event class's
optional INFLUX_TAGS), numbers and booleans fields; the time is the event's
own kernel timestamp (ts_ns) turned into wall-clock time, else the time it
was read.  A snapshot (aggregating tools) becomes one point per series at the
interval's time: its labels as tags, its values as fields, and a histogram as
count, sum and one field per log2 bucket named bucket_<low>_<high>.  Lost
events are points of the measurement pytrace_lost (tag tool; count, total).
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..core.errors import UsageError, shown
from . import EventSource, Session, Sink, notice
from .snapshot import Snapshot

DEFAULT_DB = "pytrace"


# -- line protocol ---------------------------------------------------------------

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": " "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " "})
_STR = str.maketrans({'"': r'\"', "\\": r"\\", "\n": r"\n"})


def _field(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, default=str)
    return '"' + value.translate(_STR) + '"'


def line(measurement: str, tags: Mapping[str, Any], fields: Mapping[str, Any], time_ns: int) -> str | None:
    """One point in line protocol (None if it has no field, which Influx rejects)."""
    fs = []
    for k, v in fields.items():
        text = _field(v)
        if text is not None:
            fs.append(f"{k.translate(_KEY)}={text}")
    if not fs:
        return None
    ts = "".join(f",{k.translate(_KEY)}={str(v).translate(_KEY)}" for k, v in sorted(tags.items())
                 if v is not None and str(v) != "")
    return f"{measurement.translate(_MEAS)}{ts} {','.join(fs)} {time_ns}"


def split_event(d: Mapping[str, Any], tag_names: Iterable[str] | None = None) -> tuple[dict, dict]:
    """An event's dict -> (tags, fields): strings are tags unless tag_names says otherwise."""
    if tag_names is not None:
        names = set(tag_names)
        return ({k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names})
    tags, fields = {}, {}
    for k, v in d.items():
        (tags if isinstance(v, str) else fields)[k] = v
    return tags, fields


# -- URL -------------------------------------------------------------------------

@dataclass(frozen=True)
class InfluxURL:
    scheme: str
    host: str
    port: int
    prefix: str               # path before /write
    database: str
    retention_policy: str | None
    batch: int
    buffer: int
    flush: float

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}/{self.database}"


def parse_url(text: str, flag: str = "--influx") -> InfluxURL:
    """flag: the option the URL came from, which a bad one's message names."""
    u = urllib.parse.urlsplit(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UsageError(f"{flag} {shown(text)}: expected http[s]://HOST[:PORT]/DATABASE")
    if u.username or u.password:
        raise UsageError(f"{flag}: no credentials in the URL; set INFLUX_USERNAME and INFLUX_PASSWORD")
    try:
        port = u.port or (443 if u.scheme == "https" else 8086)
    except ValueError:
        raise UsageError(f"{flag} {text}: bad port") from None
    parts = [p for p in u.path.split("/") if p]
    db = urllib.parse.unquote(parts[-1]) if parts else DEFAULT_DB
    prefix = "".join("/" + p for p in parts[:-1])
    q = urllib.parse.parse_qs(u.query)
    unknown = set(q) - {"db", "rp", "batch", "buffer", "flush"}
    if unknown:
        raise UsageError(f"{flag} {text}: unknown parameter {sorted(unknown)[0]}")

    def number(name: str, default: float, kind: type = int) -> Any:
        if name not in q:
            return default
        try:
            v = kind(q[name][-1])
        except ValueError:
            v = 0
        if v <= 0:
            raise UsageError(f"{flag} {text}: {name} must be a positive number")
        return v
    if "db" in q:
        db = q["db"][-1]
    return InfluxURL(u.scheme, u.hostname, port, prefix, db, q["rp"][-1] if "rp" in q else None,
                     number("batch", 5000), number("buffer", 100_000), number("flush", 1.0, float))


# -- the writer ------------------------------------------------------------------

class InfluxWriter:
    """Batched, buffered, retrying writer of line-protocol points.

        w = InfluxWriter("http://127.0.0.1:8086/mydb", username=..., password=...)
        w.write([line("cpu", {"host": "a"}, {"v": 1.5}, time.time_ns())])
        ...
        w.close()          # flushes while the server takes points, then counts the rest as dropped
        w.sent, w.dropped, w.rejected

    write() never blocks on the network.  At most `buffer` points wait (plus
    one batch in flight); beyond that the oldest are dropped and counted.

    At a stop (stopping(), then close()) the writer sends what is left as
    long as the server takes it, and waits for the server only so long: it
    gives up once close_timeout seconds (0.5) pass while the server cannot be
    reached (refused, no route, a connect that hangs), or answer_timeout
    seconds (0.9) while a request waits for an answer from a server that
    accepted it (a slow one, or one that never answers), counted from the
    stop, or from the request if it was made later.  A request still waiting
    then is cut short (its socket shut down), and one made while stopping
    has its socket timeout lowered to what remains.  So an unreachable or
    silent server never delays a stop by more than a second, and one that
    answers each batch within that is given every point.  Outside a stop a
    request may take `timeout` seconds (10: a busy influxd, taking a storm's
    points, can be that slow).
    """

    def __init__(self, url: str | InfluxURL, *, username: str | None = None, password: str | None = None,
                 batch: int | None = None, buffer: int | None = None, flush: float | None = None,
                 timeout: float = 10.0, retry_max: float = 5.0, close_timeout: float = 0.5,
                 answer_timeout: float = 0.9, create_database: bool = True,
                 report: Callable[[str], None] | None = None):
        self.url = parse_url(url) if isinstance(url, str) else url
        self.batch = batch or self.url.batch
        self.max_buffer = buffer or self.url.buffer
        self.flush_interval = flush or self.url.flush
        self.timeout, self.retry_max, self.close_timeout = timeout, retry_max, close_timeout
        self.answer_timeout = answer_timeout
        self.create_database = create_database
        self.report = report or (lambda text: notice(text))
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username is not None or password is not None:
            token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        params = {"db": self.url.database, "precision": "ns"}
        if self.url.retention_policy:
            params["rp"] = self.url.retention_policy
        self._write_path = f"{self.url.prefix}/write?{urllib.parse.urlencode(params)}"
        self._buf: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._stop_at: float | None = None      # when the stop began (stopping(), or close())
        self._waiting: float | None = None      # since when the server owes an answer (a batch unanswered)
        self._given_up = False                  # closing: the rest is not sent
        self._silent = False                    # closing: a request was left unanswered
        self._flushing = False
        self._outage = False
        self._outage_dropped = 0
        self._full_dropped = 0     # of dropped: for want of room in the buffer
        self._conn: http.client.HTTPConnection | None = None
        self.sent = 0          # points the server accepted
        self.dropped = 0       # points discarded because the buffer was full (or left at close)
        self.rejected = 0      # points the server refused (bad type, partial write)
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, url: str | InfluxURL, **kw: Any) -> "InfluxWriter":
        """Credentials from INFLUX_USERNAME / INFLUX_PASSWORD (the CLI's way)."""
        return cls(url, username=os.environ.get("INFLUX_USERNAME"),
                   password=os.environ.get("INFLUX_PASSWORD"), **kw)

    # -- caller's side ------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buf)

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        with self._cond:
            buf = self._buf
            was_empty = not buf
            buf.extend(lines)
            over = len(buf) - self.max_buffer
            if over > 0:
                self._drop(over)
            if was_empty or len(buf) >= self.batch:
                self._cond.notify_all()

    @property
    def outage(self) -> bool:
        """The last write failed: the server is unreachable (or refuses) for now."""
        return self._outage

    def wait_room(self, n: int) -> None:
        """Until n more points fit in the buffer, while the server takes
        points (in an outage write() drops the oldest instead: waiting would
        only stall the caller)."""
        with self._cond:
            while (len(self._buf) + n > self.max_buffer and self._buf and not self._outage
                   and not self._closing and not (self._stop_at and self._give_up_in() <= 0)):
                self._cond.wait(0.1)

    def point(self, measurement: str, tags: Mapping[str, Any], fields: Mapping[str, Any], time_ns: int) -> None:
        text = line(measurement, tags, fields, time_ns)
        if text is not None:
            self.write([text])

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is queued now; True once the buffer is empty (within timeout)."""
        end = time.monotonic() + timeout
        with self._cond:
            self._flushing = True
            self._cond.notify_all()
            while (self._buf or self._inflight) and time.monotonic() < end:
                self._cond.wait(0.05)
            self._flushing = False
            return not self._buf and not self._inflight

    def stopping(self) -> None:
        """The command is stopping: from now on the server is waited for only
        so long (see the class).  close() says it too; a caller with more to
        write first (InfluxSink, through give_up) says it at the stop."""
        with self._cond:
            if self._stop_at is None:
                self._stop_at = time.monotonic()

    def stalled(self) -> bool:
        """Stopping: the server cannot be reached, or has not answered for as
        long as a stop waits for it (points still to write are not worth making)."""
        self.stopping()
        with self._cond:
            return self._outage or self._give_up_in() <= 0

    def close(self, dropped: int = 0) -> None:
        """Send what is left while the server takes it; once it has been
        unreachable or silent for as long as a stop waits (see the class),
        count the rest as dropped.  dropped: points the caller could not even
        queue (reported with these)."""
        self.stopping()
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self.dropped += dropped
            self._cond.notify_all()
        try:
            # The thread ends by itself once it gives up, unless it is stuck in a
            # request: that one is cut short below.
            while self._thread.is_alive():
                with self._cond:
                    left = self._give_up_in()
                if left <= 0:
                    break
                self._thread.join(min(left, 0.05))
        finally:
            with self._cond:
                self._given_up = True               # the thread stops at its next look
                stuck = self._thread.is_alive() and self._inflight and not self._connecting
                if stuck:
                    self._silent = True
            if stuck:
                # A server that took the request and does not answer: shut the socket
                # down, and the request ends now (its batch goes back to the buffer,
                # counted below).  A connect() that hangs has no socket to shut
                # down yet: the thread is left to it, and its batch counted as not sent.
                self._cut_request()
                self._thread.join(0.2)
            with self._cond:
                if self._thread.is_alive():
                    self._buf.extendleft([""] * self._inflight)   # the batch in flight counts as not sent
            self._finish_report()

    def _cut_request(self) -> None:
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _finish_report(self) -> None:
        with self._cond:
            left = len(self._buf)
            if left:
                self._buf.clear()
                self.dropped += left
            full = self._full_dropped
        if self._conn is not None:
            self._conn.close()
        if self.dropped or self.rejected:
            why = []
            if self.dropped:
                parts = []
                if full:
                    parts.append(f"{full} while the server could not take them and the buffer of "
                                 f"{self.max_buffer} was full")
                if self.dropped - full:
                    why_not = (" (server unreachable)" if self._outage else
                               " (server did not answer)" if self._silent else "")
                    parts.append(f"{self.dropped - full} not written when the command ended{why_not}")
                why.append(f"{self.dropped} points dropped ({', '.join(parts)})")
            if self.rejected:
                why.append(f"{self.rejected} points rejected by the server")
            self.report(f"influx {self.url.display}: {'; '.join(why)}; {self.sent} points written")

    # -- writer thread ------------------------------------------------------------
    _inflight = 0

    def _drop(self, n: int) -> None:
        """Discard the n oldest queued points (lock held)."""
        for _ in range(n):
            self._buf.popleft()
        self.dropped += n
        self._full_dropped += n
        self._outage_dropped += n

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._wait(backoff)
                else:
                    # send when a batch is full, or flush_interval after the first queued point
                    end = time.monotonic() + self.flush_interval
                    while not (self._closing or self._flushing or len(self._buf) >= self.batch):
                        if not self._buf:
                            self._cond.wait()       # write() wakes us when the buffer stops being empty
                            end = time.monotonic() + self.flush_interval
                            continue
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                if not self._buf:
                    if self._closing:
                        return
                    backoff = 0.0
                    continue
                if self._closing and self._give_up_in() <= 0:
                    return
                n = min(self.batch, len(self._buf))
                chunk = [self._buf.popleft() for _ in range(n)]
                self._inflight = n
                if self._waiting is None:
                    self._waiting = time.monotonic()
            status, detail = self._send(chunk)
            with self._cond:
                self._inflight = 0
                if status != "retry":
                    self._waiting = None        # the server answered
                if status == "ok":
                    self.sent += n - detail_count(detail)
                    self.rejected += detail_count(detail)
                    backoff = 0.0
                    if self._outage:
                        self._outage = False
                        self.report(f"influx {self.url.display}: reachable again"
                                    f"{f' ({self._outage_dropped} points dropped meanwhile)' if self._outage_dropped else ''}")
                        self._outage_dropped = 0
                elif status == "reject":
                    self.rejected += n
                    self.last_error = detail
                    self.report(f"influx {self.url.display}: {n} points rejected: {detail}")
                else:  # retry: put the batch back in front, oldest first out if full
                    self._buf.extendleft(reversed(chunk))
                    over = len(self._buf) - self.max_buffer
                    if over > 0 and not self._given_up:     # given up: all of it is "not written", at close
                        self._drop(over)
                    self.last_error = detail
                    if not self._outage and not self._silent:
                        self._outage = True
                        if not self._closing:       # closing, the report at the end says it
                            self.report(f"influx {self.url.display}: cannot write ({detail}); holding up to "
                                        f"{self.max_buffer} points and retrying")
                    backoff = min(self.retry_max, max(0.25, backoff * 2))
                self._cond.notify_all()

    def _wait(self, seconds: float) -> None:
        """Sleep between retries (lock held); close() wakes it to retry at once."""
        end = time.monotonic() + seconds
        while not self._closing and time.monotonic() < end:
            self._cond.wait(end - time.monotonic())
        if self._closing and not self._given_up:
            # retry during the close grace period, but not in a hot loop
            self._cond.wait(min(0.1, max(0.0, self._give_up_in())))

    def _give_up_in(self) -> float:
        """Stopping: seconds left before the rest is given up (lock held).  The
        patience runs while the server owes an answer (a batch in flight or
        failed), from the stop at the earliest."""
        if self._given_up:
            return 0.0
        if self._stop_at is None or self._waiting is None:
            return self.answer_timeout          # the server owes nothing: not waiting for it
        answering = self._inflight and not self._outage and not self._connecting
        patience = self.answer_timeout if answering else self.close_timeout
        return max(self._waiting, self._stop_at) + patience - time.monotonic()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            self._conn = kind(self.url.host, self.url.port, timeout=self.timeout)
        return self._conn

    _connecting = False     # a connect() under way: the server is not known to be there

    def _request(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        conn = self._connection()
        if self._closing:
            # what remains of the stop's patience, not the 10 s of a busy server
            with self._cond:
                limit = max(0.01, self._give_up_in())
            conn.timeout = limit
            if conn.sock is not None:
                conn.sock.settimeout(limit)
        connected = False
        try:
            if conn.sock is None:
                self._connecting = True
                try:
                    conn.connect()
                finally:
                    self._connecting = False
            connected = True
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            if connected and self._closing:
                self._silent = True     # it took the request, and no answer came in time
            conn.close()
            self._conn = None
            raise

    def _send(self, chunk: list[str]) -> tuple[str, str]:
        """POST one batch: ("ok", partial-write detail), ("retry", why) or ("reject", why)."""
        body = ("\n".join(chunk) + "\n").encode()
        try:
            status, data = self._request(self._write_path, body, self._headers)
            if status == 404 and b"database not found" in data and self.create_database:
                self._create_database()
                status, data = self._request(self._write_path, body, self._headers)
        except (OSError, http.client.HTTPException) as exc:
            return "retry", getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if status in (200, 204):
            return "ok", ""
        msg = _error_text(data) or f"HTTP {status}"
        if status == 400 and "partial write" in msg:
            return "ok", msg
        if status in (400, 413):
            return "reject", msg
        return "retry", f"HTTP {status}: {msg}"

    def _create_database(self) -> None:
        q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{self.url.database}"'})
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
        self._request(f"{self.url.prefix}/query", q.encode(), headers)


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", "")).strip()
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()[:200]


def detail_count(detail: str) -> int:
    """Points a partial write dropped ("... dropped=3"), 0 for a full success."""
    if "dropped=" not in detail:
        return 0
    digits = detail.split("dropped=", 1)[1]
    n = ""
    for ch in digits:
        if not ch.isdigit():
            break
        n += ch
    return int(n) if n else 0


# -- the sink --------------------------------------------------------------------

class InfluxSink(Sink):
    """Events and snapshots as points.  Called on the sink's own thread
    (sinks/worker.py): the conversion to line protocol (~20 us an event) is
    kept out of the reader's thread."""

    def __init__(self, url: str, session: Session, writer: InfluxWriter | None = None):
        self.session = session
        self.writer = writer or InfluxWriter.from_env(url)
        self.name = f"influx {self.writer.url.display}"
        self.reported_lost = 0
        self._src: EventSource | None = None

    def begin(self, source: EventSource) -> None:
        self._src = source

    def events(self, batch: list[tuple]) -> None:
        src = self._src
        make, ti, off = src.make_event, src.time_index, src.epoch[0]
        meas = src.tool
        now = time.time_ns()
        writer = self.writer
        for start in range(0, len(batch), writer.batch):
            out = []
            for n, raw in enumerate(batch[start:start + writer.batch], start):
                ev = make(raw)
                d, tag_names = ev.to_dict(), getattr(type(ev), "INFLUX_TAGS", None)
                labels = getattr(ev, "labels", None)
                if labels is not None:      # whose the event was (--show-container, labels=True): tags
                    d.update(labels.to_dict())
                    tag_names = (*tag_names, *labels.TAGS) if tag_names is not None else None
                tags, fields = split_event(d, tag_names)
                # the kernel's timestamp when the record has one; else the read time, kept
                # distinct per record so two equal points of a batch do not overwrite each other
                t = raw[ti] + off if ti is not None else now + n
                text = line(meas, tags, fields, t)
                if text is not None:
                    out.append(text)
            # The server takes points more slowly than a storm makes them: wait for
            # room rather than have the writer drop the oldest (the queue in front
            # of this thread holds the backlog, packed)
            writer.wait_room(len(out))
            writer.write(out)

    def lost(self, total: int) -> None:
        new = total - self.reported_lost
        if new > 0:
            self.reported_lost = total
            self.writer.point("pytrace_lost", {"tool": self.session.tool}, {"count": new, "total": total},
                              time.time_ns())

    def snapshot(self, snap: Snapshot) -> None:
        self.writer.write(snapshot_lines(snap))

    def give_up(self) -> bool:
        """At close: the server is unreachable, or has not answered since the
        stop for as long as a stop waits for it, so converting the events
        still queued would only fill a buffer that is dropped a moment later."""
        return self.writer.stalled()

    def close(self, failed: bool = False, dropped: int = 0) -> None:
        self.writer.close(dropped)


def snapshot_lines(snap: Snapshot) -> list[str]:
    out = []
    if snap.values:           # the interval's own numbers: one point without tags
        text = line(snap.tool, {}, dict(snap.values), snap.time_ns)
        if text is not None:
            out.append(text)
    for s in snap.series:
        tags = dict(s.labels)
        fields: dict[str, Any] = dict(s.values)
        if s.hist is not None:
            h = s.hist
            tags["unit"] = h.unit
            fields["count"] = h.count
            if h.sum is not None:
                fields["sum"] = h.sum
            for low, high, c in h.buckets():
                fields[f"bucket_{low}_{high}"] = c
        text = line(snap.tool, tags, fields, snap.time_ns)
        if text is not None:
            out.append(text)
    return out
