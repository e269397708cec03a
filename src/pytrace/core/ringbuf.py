"""BPF ring buffer consumer: mapped directly, drained in batches.

No ctypes callback per record: the ring's pages are mmap'ed into Python (the
consumer position page read-write, the producer page and the data area
read-only) and a whole batch of fixed-size records is decoded by one
struct.iter_unpack call.  The kernel offers the data area twice in a row so a
wrapping record looks contiguous, but every mapped page is resident: we map
it once (half the memory) and join the two pieces of a batch that wraps.

Wakeups are batched (see src/bpf/events.h): the kernel side submits without
waking us, except after an idle gap or when the ring fills past a threshold.
We sleep in an edge-triggered epoll, so a wakeup always ends the sleep but
records that arrive without one do not: those are drained at the next tick of
the poll interval.  That bounds the delay from event to line by the interval
(plus the time to format the batch) and costs the traced workload nothing per
event.

Memory ordering.  The ring is memory shared with the kernel, which
publishes with release semantics (kernel/bpf/ringbuf.c: a record's header is
written busy before smp_store_release() of the producer position, and
committed by an xchg() of the header, a full barrier, after the record) and
reads our consumer position with smp_load_acquire() before it reuses space.
libbpf's consumer pairs these with smp_load_acquire() of the producer
position and of each header, and smp_store_release() of the consumer
position.  Python has no atomics, so drain() puts fences between its steps
instead, three per batch, none per record:

    producer position, ACQUIRE, headers, ACQUIRE, records, RELEASE, consumer position

(the headers are read after the position that covers them, the records
after the headers that say they are committed, and the space is given back
only after the records are read).  See acquire_fence below for what a
fence is on each kind of CPU.
"""

from __future__ import annotations

import mmap
import os
import select
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR = 8
# byte 3 of a record header holds the busy and discard bits: translate it to
# 1 where either is set, so bytes.find() locates the first record not ready.
_NOT_READY = bytes(1 if b & 0xC0 else 0 for b in range(256))

DEFAULT_INTERVAL_MS = 20
SPARE_RING_BYTES = 64 << 10  # events_spare in src/bpf/events.h (for owners that create their rings)
MAX_BATCH_BYTES = 256 << 10   # per drain: bounds the memory a batch takes in Python

# CPUs whose memory model is TSO: loads are not reordered with other loads,
# nor stores with earlier loads, so every load is an acquire and every store
# a release, and the kernel's own smp_load_acquire()/smp_store_release() on
# them (arch/x86/include/asm/barrier.h) are plain moves plus a compiler
# barrier.  Between two steps of drain() the interpreter's opaque calls are
# compiler barriers already: the fences need no instruction there.
_TSO_MACHINES = ("x86_64", "i386", "i686")
_C11_ACQUIRE, _C11_RELEASE = 2, 3     # memory_order_acquire, memory_order_release


def _no_fence() -> None:
    pass


# The fences drain() calls; _bind_fences() replaces them on other CPUs.
acquire_fence = release_fence = _no_fence
_fences_bound = os.uname().machine in _TSO_MACHINES


def hardware_fences() -> tuple:
    """(acquire, release) fences for a weakly ordered CPU (arm64, ppc64le, riscv64).

    The one fence CPython can reach without compiling anything at run time:
    glibc exports none (__sync_synchronize and atomic_thread_fence are
    compiler builtins, inlined), CPython exposes none, and a system call is
    no barrier by contract (kernel/sched/membarrier.c: "system call entry is
    not a mb").  GCC's libatomic exports C11's atomic_thread_fence(order)
    as a function (symbol version LIBATOMIC_1.2), for compilers that do not
    inline it: dmb ishld / dmb ish on arm64, lwsync on POWER.  Cost, three
    per batch: ~140 ns a call through ctypes (measured on x86, where only
    the call is paid), so ~0.4 us a batch, against ~25 ns a call to
    _no_fence on x86; a drain of one record takes ~2 us, of 100 ~12 us.
    """
    import ctypes
    import functools

    from .errors import PytraceError

    try:
        fence = ctypes.CDLL("libatomic.so.1").atomic_thread_fence
    except (OSError, AttributeError):
        raise PytraceError(f"reading ring buffers on {os.uname().machine} needs the memory fences of "
                           "libatomic.so.1 (GCC's libatomic): install it (apt-get install "
                           "libatomic1)") from None
    # No argtypes: a Python int goes as a C int (memory_order is an int-sized
    # enum) by default, and argtypes' conversion doubles the cost of a call.
    fence.restype = None
    return functools.partial(fence, _C11_ACQUIRE), functools.partial(fence, _C11_RELEASE)


def _bind_fences() -> None:
    global acquire_fence, release_fence, _fences_bound
    acquire_fence, release_fence = hardware_fences()
    _fences_bound = True


class RawBatch:
    """A drained batch still as the ring's bytes: n records of `stride` bytes
    (header, record, padding), for a renderer that prints straight from them
    (core/rowfmt.py).  Everyone else sees the list of tuples it stands for:
    len(), iteration and tuple_at() decode with the ring's format of the
    moment it was drained (a projection included)."""

    __slots__ = ("buf", "n", "stride", "_struct")

    def __init__(self, buf: bytes, n: int, stride: int, unpacker: struct.Struct):
        self.buf, self.n, self.stride, self._struct = buf, n, stride, unpacker

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return self._struct.iter_unpack(self.buf)

    def tuple_at(self, i: int) -> tuple:
        return self._struct.unpack_from(self.buf, i * self.stride)


class RingBuffer:
    """Reader of one BPF_MAP_TYPE_RINGBUF map holding records of one fixed layout.

    raw: drain() returns a RawBatch (the records' bytes) where it would
    return a list of tuples read in one piece."""

    header = HDR

    def __init__(self, map_fd: int, size: int, record_format: str, interval_ms: int = DEFAULT_INTERVAL_MS,
                 spare: tuple[int, int] | None = None):
        """spare: (fd, size) of the object's spare ring, whose records are
        ours followed by a u64 main-ring position."""
        if not _fences_bound:
            _bind_fences()
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self._cons_mm = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data_mm = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page
        body = struct.calcsize(record_format)
        self.stride = (HDR + body + 7) & ~7
        self.record_size = body
        self.set_format(record_format)
        # Native format on purpose: with an explicit byte order, struct packs
        # 8-byte integers one byte at a time, and the kernel could then read a
        # torn consumer position (and fail reservations on a ring it thinks
        # full); native 'Q' is one aligned 8-byte load/store.
        self._u64 = struct.Struct("Q")
        self._u32 = struct.Struct("<I")
        self.interval = interval_ms / 1000.0
        # (before, after) to call around each sleep in wait(): the CLI lets a
        # Ctrl-C in there only, when the reader holds no records
        # (cliutil.stream_events); None for library use
        self.around_sleep = None
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self.records = 0
        self.raw = False
        # spare records read but not yet placed: their main-ring position is
        # beyond what was drained (the last field of each tuple)
        self._pending: list[tuple] = []
        self._spare = None
        if spare is not None:
            self._spare = RingBuffer(spare[0], spare[1], record_format + "Q", interval_ms)

    def set_format(self, record_format: str) -> None:
        """Decode records with another format of the same size (e.g. a projection)."""
        if struct.calcsize(record_format) != self.record_size:
            raise ValueError("record format size differs from the ring's records")
        fmt = record_format.lstrip("<")
        pad = self.stride - HDR - self.record_size
        self._struct = struct.Struct(f"<{HDR}x{fmt}{pad}x" if pad else f"<{HDR}x{fmt}")
        if getattr(self, "_spare", None) is not None:
            if self._pending:
                raise ValueError("cannot change the record format with spare records pending")
            self._spare.set_format(record_format + "Q")

    def close(self) -> None:
        if self._spare is not None:
            self._spare.close()
        for obj in (self._ep, self._cons_mm, self._data_mm):
            try:
                obj.close()
            except (OSError, ValueError, BufferError):
                pass

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until the kernel wakes us or the timeout (default: the interval) passes."""
        around = self.around_sleep
        if around is not None:
            around[0]()
        try:
            self._ep.poll(self.interval if timeout is None else timeout)
        except InterruptedError:
            pass
        finally:
            if around is not None:
                around[1]()

    def unread(self) -> int:
        """Bytes the kernel has written that we have not consumed yet."""
        return self._u64.unpack_from(self._data_mm, 0)[0] - self._u64.unpack_from(self._cons_mm, 0)[0]

    def _read(self, pos: int, length: int) -> bytes:
        """length bytes of the data area from ring position pos, across the wrap."""
        off = self._page + (pos & self.mask)
        end = off + length
        limit = self._page + self.size
        if end <= limit:
            return self._data_mm[off:end]
        return self._data_mm[off:limit] + self._data_mm[self._page:self._page + end - limit]

    def drain(self, max_bytes: int = MAX_BATCH_BYTES) -> list[tuple] | RawBatch:
        """Decode every committed record (up to max_bytes) and release its space."""
        cons = self._u64.unpack_from(self._cons_mm, 0)[0]     # only we write it
        prod = self._u64.unpack_from(self._data_mm, 0)[0]
        avail = prod - cons
        stride = self.stride
        if avail < stride:
            return self._with_spares([], cons, cons) if self._spare is not None else []
        acquire_fence()     # the headers below prod: read after prod (see the module's doc)
        n = min(avail, max(max_bytes, stride)) // stride
        # Which records are committed: stop at the first one still being
        # written (or discarded).  The headers come from one copy and the
        # records from a second one, after a fence, so every record read was
        # committed before it was read (a bulk copy may load out of order).
        first_bad = self._read(cons, n * stride)[3::stride].translate(_NOT_READY).find(1)
        if first_bad >= 0:
            if first_bad == 0:
                return self._drain_slow(cons, prod)
            n = first_bad
        acquire_fence()     # the records: read after the headers that say they are committed
        buf = self._read(cons, n * stride)
        # Every record must be of our fixed size; anything else means a layout bug.
        if self._u32.unpack_from(buf, 0)[0] != self.record_size:
            raise RuntimeError(f"ring record of {self._u32.unpack_from(buf, 0)[0]} bytes, "
                               f"expected {self.record_size}")
        out = RawBatch(buf, n, stride, self._struct) if self.raw else list(self._struct.iter_unpack(buf))
        release_fence()     # the records are read before the kernel may reuse their space
        self._u64.pack_into(self._cons_mm, 0, cons + n * stride)
        self.records += n
        if self._spare is not None:
            return self._with_spares(out, cons, cons + n * stride)
        return out

    def _drain_slow(self, cons: int, prod: int) -> list[tuple]:
        """Head record busy or discarded: skip discarded ones, stop at busy.

        The headers first, then one fence and the records, as in drain()."""
        positions = []
        totals = []
        start = cons
        while cons < prod:
            hdr = self._u32.unpack_from(self._data_mm, self._page + (cons & self.mask))[0]
            if hdr & BUSY_BIT:
                break
            length = hdr & ~(BUSY_BIT | DISCARD_BIT)
            total = (HDR + length + 7) & ~7
            if not hdr & DISCARD_BIT:
                positions.append(cons)
                totals.append(total)
            cons += total
        acquire_fence()
        out = [self._struct.unpack(self._read(pos, total)) for pos, total in zip(positions, totals)]
        release_fence()
        self._u64.pack_into(self._cons_mm, 0, cons)
        self.records += len(out)
        if self._spare is not None:
            return self._with_spares(out, start, cons, positions)
        return out

    def _with_spares(self, out: list[tuple] | RawBatch, start: int, end: int,
                     positions: list[int] | None = None) -> list[tuple] | RawBatch:
        """out (main records from ring position start up to end) with the spare
        records that belong among them, each before the main record at its
        position; spare records whose position lies beyond end wait."""
        spare = self._spare
        if spare.unread() >= spare.stride:
            self._pending.extend(spare.drain())
            self._pending.sort(key=_position)        # stable: equal positions keep their order
        if not self._pending or self._pending[0][-1] > end:
            return out
        cut = 0                                      # pending is short: spare records are rare
        while cut < len(self._pending) and self._pending[cut][-1] <= end:
            cut += 1
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        out = list(out)                              # a RawBatch: the tuples, to place the spares among
        stride = self.stride
        for rec in reversed(ready):                  # back to front: earlier indices stay valid
            pos = rec[-1]
            if positions is None:
                i = min(len(out), max(0, -(-(pos - start) // stride)))
            else:
                from bisect import bisect_left      # spare records are rare: not at start-up
                i = bisect_left(positions, pos)
            out.insert(i, rec[:-1])
        self.records += len(ready)
        return out


def _position(rec: tuple) -> int:
    return rec[-1]

