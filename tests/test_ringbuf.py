"""core/ringbuf.RingBuffer on a ring laid out as the kernel lays it out, in a
memfd instead of a BPF map: needs neither root nor a kernel.

Page 0 holds the consumer position, page 1 the producer position, the data
area follows; each record is an 8-byte header (length, busy and discard bits)
and the record, padded to 8.  The test plays the kernel's part: it writes
records and moves the producer position.  Only epoll is a stand-in (a memfd
cannot be polled); drain() never sleeps.
"""

from __future__ import annotations

import mmap
import os
import select
import struct

import pytest

from pytrace.core import ringbuf
from pytrace.core.errors import PytraceError
from pytrace.core.ringbuf import BUSY_BIT, DISCARD_BIT, RingBuffer

PAGE = mmap.PAGESIZE
FMT = "<QI"           # 12 bytes: a stride of 24 with the header
SIZE = 4096


class NoEpoll:
    def register(self, *args):
        pass

    def poll(self, *args):
        return []

    def close(self):
        pass


class Kernel:
    """The producer side of one ring."""

    def __init__(self, size: int = SIZE):
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE + size)
        self.mm = mmap.mmap(self.fd, 2 * PAGE + size)
        self.size, self.prod = size, 0

    def put(self, *values, busy: bool = False, discard: bool = False, publish: bool = True) -> int:
        """Reserve a record (and commit it unless busy); returns its position."""
        body = struct.pack(FMT, *values)
        hdr = len(body) | (BUSY_BIT if busy else 0) | (DISCARD_BIT if discard else 0)
        pos = self.prod
        self._write(pos, struct.pack("<II", hdr, 0) + body)
        self.prod += (8 + len(body) + 7) & ~7
        if publish:
            struct.pack_into("Q", self.mm, PAGE, self.prod)
        return pos

    def commit(self, pos: int) -> None:
        hdr = struct.unpack_from("<I", self._bytes(pos, 4))[0]
        self._write(pos, struct.pack("<I", hdr & ~BUSY_BIT))

    def consumer(self) -> int:
        return struct.unpack_from("Q", self.mm, 0)[0]

    def _write(self, pos: int, data: bytes) -> None:
        for i, b in enumerate(data):       # byte by byte: a record may wrap
            self.mm[2 * PAGE + (pos + i) % self.size] = b

    def _bytes(self, pos: int, n: int) -> bytes:
        return bytes(self.mm[2 * PAGE + (pos + i) % self.size] for i in range(n))


@pytest.fixture
def ring(monkeypatch):
    monkeypatch.setattr(select, "epoll", NoEpoll)
    kernel = Kernel()
    rb = RingBuffer(kernel.fd, SIZE, FMT)
    yield kernel, rb
    rb.close()
    kernel.mm.close()
    os.close(kernel.fd)


def test_records_in_order_and_their_space_released(ring):
    kernel, rb = ring
    for i in range(5):
        kernel.put(i, 100 + i)
    assert rb.drain() == [(i, 100 + i) for i in range(5)]
    assert kernel.consumer() == kernel.prod == 5 * 24 and rb.records == 5
    assert rb.drain() == []


def test_a_busy_record_holds_back_itself_and_the_ones_after_it(ring):
    kernel, rb = ring
    kernel.put(1, 1)
    busy = kernel.put(2, 2, busy=True)
    kernel.put(3, 3)
    assert rb.drain() == [(1, 1)]
    assert kernel.consumer() == busy
    assert rb.drain() == []                      # the head is busy: nothing moves
    assert kernel.consumer() == busy
    kernel.commit(busy)
    assert rb.drain() == [(2, 2), (3, 3)]
    assert kernel.consumer() == kernel.prod


def test_discarded_records_are_skipped(ring):
    kernel, rb = ring
    kernel.put(1, 1, discard=True)
    kernel.put(2, 2)
    kernel.put(3, 3, discard=True)
    kernel.put(4, 4)
    assert rb.drain() == [(2, 2), (4, 4)]
    assert kernel.consumer() == kernel.prod


def test_a_batch_that_wraps_the_data_area(ring):
    kernel, rb = ring
    per_lap = SIZE // 24
    for lap in range(3):                         # positions run on past the size; offsets wrap
        values = [(lap * 1000 + i, i) for i in range(per_lap - 1)]
        for v in values:
            kernel.put(*v)
        assert rb.drain() == values
    assert kernel.consumer() == kernel.prod == 3 * (per_lap - 1) * 24


class Recorded(mmap.mmap):
    """The data area, noting each copy out of it (slicing: what _read does)."""
    log: list

    def __getitem__(self, key):
        self.log.append("copy")
        return super().__getitem__(key)


class RecordedWords:
    """rb._u64 / rb._u32 noting each position or header load and each store."""

    def __init__(self, real: struct.Struct, rb: RingBuffer, log: list):
        self.real, self.rb, self.log = real, rb, log

    def unpack_from(self, buf, offset=0):
        if buf is self.rb._cons_mm:
            self.log.append("load consumer")
        elif buf is self.rb._data_mm:
            self.log.append("load producer" if offset == 0 else "load header")
        return self.real.unpack_from(buf, offset)

    def pack_into(self, buf, offset, value):
        assert buf is self.rb._cons_mm
        self.log.append("store consumer")
        self.real.pack_into(buf, offset, value)


def recorded(kernel: Kernel, rb: RingBuffer, monkeypatch) -> list:
    log: list = []
    data = Recorded(kernel.fd, PAGE + SIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
    data.log = log
    rb._data_mm.close()
    rb._data_mm = data
    rb._u64 = RecordedWords(rb._u64, rb, log)
    rb._u32 = RecordedWords(rb._u32, rb, log)
    monkeypatch.setattr(ringbuf, "acquire_fence", lambda: log.append("ACQUIRE"))
    monkeypatch.setattr(ringbuf, "release_fence", lambda: log.append("RELEASE"))
    return log


def test_fences_order_a_batch(ring, monkeypatch):
    """Producer position, acquire, headers, acquire, records, release, and
    only then the consumer position: the kernel may reuse the space at once."""
    kernel, rb = ring
    for i in range(3):
        kernel.put(i, i)
    log = recorded(kernel, rb, monkeypatch)
    assert rb.drain() == [(0, 0), (1, 1), (2, 2)]
    assert log == ["load consumer", "load producer", "ACQUIRE", "copy",     # the headers
                   "ACQUIRE", "copy",                                        # the records
                   "RELEASE", "store consumer"]


def test_fences_order_a_batch_that_skips_discarded_records(ring, monkeypatch):
    kernel, rb = ring
    kernel.put(0, 0, discard=True)
    kernel.put(1, 1)
    kernel.put(2, 2, busy=True)
    log = recorded(kernel, rb, monkeypatch)
    assert rb.drain() == [(1, 1)]
    assert log == ["load consumer", "load producer", "ACQUIRE", "copy",     # the fast path's look
                   "load header", "load header", "load header",             # discarded, ours, busy
                   "ACQUIRE", "copy", "RELEASE", "store consumer"]


def test_an_empty_ring_reads_no_data_and_stores_nothing(ring, monkeypatch):
    kernel, rb = ring
    log = recorded(kernel, rb, monkeypatch)
    assert rb.drain() == []
    assert log == ["load consumer", "load producer"]


def test_a_weakly_ordered_cpu_drains_with_libatomics_fences(ring, monkeypatch):
    """As on arm64: the first ring binds the fences, and drain() calls them."""
    kernel, _ = ring
    for name in ("acquire_fence", "release_fence", "_fences_bound"):    # restored afterwards
        monkeypatch.setattr(ringbuf, name, getattr(ringbuf, name))
    monkeypatch.setattr(ringbuf, "_fences_bound", False)
    try:
        rb = RingBuffer(kernel.fd, SIZE, FMT)
    except PytraceError as exc:                  # no libatomic here
        pytest.skip(str(exc))
    assert ringbuf.acquire_fence.args == (2,) and ringbuf.release_fence.args == (3,)
    assert ringbuf.acquire_fence.func.__name__ == "atomic_thread_fence"
    kernel.put(7, 7)
    assert rb.drain() == [(7, 7)] and kernel.consumer() == kernel.prod
    rb.close()


def test_no_libatomic_on_a_weakly_ordered_cpu_is_one_line(monkeypatch):
    import ctypes

    def missing(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    with pytest.raises(PytraceError, match=r"needs the memory fences of libatomic.so.1 .*apt-get install libatomic1"):
        ringbuf.hardware_fences()


def test_the_fences_of_weakly_ordered_cpus_can_be_called():
    """What arm64 and the like bind (x86 needs none): libatomic's
    atomic_thread_fence, through ctypes, with C11's memory orders."""
    try:
        acquire, release = ringbuf.hardware_fences()
    except PytraceError as exc:                  # no libatomic here: only a weak CPU would need it
        pytest.skip(str(exc))
    acquire()
    release()
    if os.uname().machine in ("x86_64", "i386", "i686"):
        assert ringbuf.acquire_fence is ringbuf.release_fence is ringbuf._no_fence
