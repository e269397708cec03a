"""A sink's own thread: the reader hands a batch over and goes on reading.

The CLI's reader (cli/cliutil.stream_events) must drain the ring as fast as
the kernel fills it.  A sink that stores or converts each record in the
reader's thread slows it down, and under a storm the ring overflows: with
the SQLite insert (~5 us a record) or the InfluxDB line protocol (~20 us)
done there, --record lost 1 event in 6 of the bench's storm and --influx 3
in 4, where the plain output lost none.  So every sink of the session gets
a SinkWorker: a thread and a queue.

The queue is bounded in bytes (QUEUE_BYTES): a batch goes in packed with
the record's own struct format (tcpstates: 80 bytes a record, where its
tuple of Python objects takes ~400), and is unpacked by the thread.  A
batch that does not fit is not queued: it is counted (dropped) and the sink
reports it when it closes; nothing is lost silently.

A durable sink (--record: Sink.durable) acknowledges each batch: the CLI
prints a batch only once the recording holds it (a SIGKILL then loses
nothing that was printed), but it renders the batch meanwhile, and the
database works with the GIL released, so the two overlap.  The queue of a
durable sink is therefore never more than a batch or two long.

Priorities.  The reader raises its nice value while it falls behind a storm
(cliutil.CatchUp), and on Linux a nice value is a thread's own.  A durable
sink's thread follows the reader's (the reader waits for it: left at nice 0
among the storm's processes, it held the reader back like a lock).  Any
other sink's thread stays where it is and, while the reader is raised,
pauses between chunks of CHUNK records: pure-Python work such as the line
protocol takes the interpreter lock, which the reader needs, and the queue
holds the backlog until the storm passes.

Failures: an exception of the sink (a full disk under the recording) is
kept and raised in the caller's thread at its next put or wait: the command
then ends with that one line, as before.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

QUEUE_BYTES = 64 << 20      # packed records waiting for one sink (~800k tcpstates records)
CHUNK = 256                 # records a non-durable sink takes between looks at the reader
PAUSE = 0.002               # seconds such a sink waits while the reader is raised


class SinkWorker:
    def __init__(self, sink: Any, name: str):
        """Made in the reader's thread (its priority is the one looked at)."""
        self.sink = sink
        self.name = name
        self.durable = bool(getattr(sink, "durable", False))
        self._reader = threading.get_native_id()
        self._base = self._nice = os.getpriority(os.PRIO_PROCESS, 0)
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._bytes = 0                 # packed bytes queued
        self.queued = 0                 # sequence number of the last item put
        self.done = 0                   # ... and of the last one the sink has taken
        self.dropped = 0                # records not queued (queue full) or abandoned at close
        self.failure: BaseException | None = None
        self._unpack = None
        self._closing = False
        self._abandoned = False
        self._thread: threading.Thread | None = None

    # -- the caller's side ----------------------------------------------------------
    def begin(self, source: Any) -> None:
        """Before any batch, in the caller's thread (a recording writes its header)."""
        import struct
        self._unpack = struct.Struct(source.record_format).iter_unpack
        self.sink.begin(source)

    def events(self, packed: bytes, n: int) -> int:
        """Queue n records (packed); the ticket to wait() for, 0 if dropped."""
        with self._cond:
            self._check()
            if self._bytes + len(packed) > QUEUE_BYTES and self._items:
                self.dropped += n       # passed to the sink's close, which reports it
                return 0
            self._bytes += len(packed)
            return self._put(("events", packed, n))

    def lost(self, total: int) -> int:
        with self._cond:
            self._check()
            return self._put(("lost", total))

    def snapshot(self, snap: Any) -> int:
        with self._cond:
            self._check()
            return self._put(("snapshot", snap))

    def wait(self, ticket: int) -> None:
        """Until the sink has taken item `ticket` (returns at once for 0)."""
        if not ticket:
            return
        with self._cond:
            while self.done < ticket and self.failure is None:
                self._cond.wait()
            self._check()

    def holds(self, ticket: int) -> bool:
        """Whether the sink has taken item `ticket` (never waits)."""
        if self.done >= ticket:
            return True
        with self._cond:
            self._check()
            return self.done >= ticket

    def _put(self, item: tuple) -> int:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
            self._thread.start()
        self.queued += 1
        self._items.append(item)
        self._cond.notify_all()
        return self.queued

    def _check(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            self._items.clear()
            self.done = self.queued     # nothing waits for what will never be taken
            raise failure

    @property
    def backlog(self) -> int:
        """Records queued and not yet taken by the sink."""
        with self._cond:
            return sum(item[2] for item in self._items if item[0] == "events")

    # -- closing --------------------------------------------------------------------
    def finish(self, give_up: Any = None) -> None:
        """Let the thread take what is queued, then end it.  give_up():
        polled while waiting; when it says True, what is still queued is
        abandoned (counted as dropped).  Interrupted (a stop that insists),
        the queue is abandoned too, and the stop goes on."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return
        try:
            while thread.is_alive():
                thread.join(0.05)
                if give_up is not None and give_up():
                    self.abandon()
                    thread.join(0.5)
                    return
        except BaseException:
            self.abandon()
            raise
        with self._cond:
            self._check()

    def abandon(self) -> None:
        """Drop what is still queued, counting its records."""
        with self._cond:
            while self._items:
                item = self._items.popleft()
                if item[0] == "events":
                    self.dropped += item[2]
            self._bytes = 0
            self._closing = self._abandoned = True
            self.done = self.queued
            self._cond.notify_all()

    # -- the thread ---------------------------------------------------------------
    def _run(self) -> None:
        sink = self.sink
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    return
                item = self._items.popleft()
                if item[0] == "events":
                    self._bytes -= len(item[1])
            try:
                kind = item[0]
                if kind == "events":
                    if self.durable:
                        self._follow_reader()
                    packed = getattr(sink, "events_packed", None)
                    if packed is not None:      # a sink that stores the bytes as they are
                        packed(item[1], item[2])
                    elif self.durable:
                        sink.events(list(self._unpack(item[1])))
                    else:
                        records = list(self._unpack(item[1]))
                        for start in range(0, len(records), CHUNK):
                            self._make_way()
                            if self._abandoned:     # close gave up on the rest
                                with self._cond:
                                    self.dropped += len(records) - start
                                break
                            sink.events(records[start:start + CHUNK])
                elif kind == "lost":
                    sink.lost(item[1])
                else:
                    sink.snapshot(item[1])
            except BaseException as exc:    # the caller raises it (a thread has nobody to raise to)
                with self._cond:
                    self.failure = exc
                    self._items.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self.done += 1
                self._cond.notify_all()

    def _reader_nice(self) -> int:
        try:
            return os.getpriority(os.PRIO_PROCESS, self._reader)
        except OSError:             # the reader's thread is gone: nothing to follow
            return self._base

    def _follow_reader(self) -> None:
        """A durable sink's thread: at the reader's priority (it waits for us)."""
        nice = self._reader_nice()
        if nice != self._nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
                self._nice = nice
            except OSError:         # not permitted to raise it: stay
                pass

    def _make_way(self) -> None:
        """Any other sink's thread: wait while the reader is behind (raised)."""
        while self._reader_nice() < self._base and not self._closing:
            time.sleep(PAUSE)
