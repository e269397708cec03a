"""Text lines formatted by a BPF program that the reader runs itself.

Under a connection storm the CLI reader's CPU time is what tracing costs the
traced workload (the CPU it takes is the workload's), and formatting a line
in CPython costs ~4x what the same line costs in BPF (bench/README.md, items
27-29).  A tool can ship a <tool>_text.bpf.c (src/bpf/textfmt.h): one
SEC("syscall") program that takes the address of a run of ring records in
our memory, formats them into an mmapable array, and says how many it did.
KernelLines wraps a tool's CPython renderer with it:

- the object is loaded by a second thread once the reading loop runs: at its
  first batch, or at its first quiet tick if that comes first (not at
  start-up, which would pay its ~25 ms; and a tracer started before the
  traffic pays it while nothing happens, not in the middle of the first
  burst), while CPython formats what comes meanwhile;
  the verifier's work runs outside the GIL, and at the thread's own
  priority (the reader's is raised while it falls behind, see
  cliutil.CatchUp; a load in the reader itself would stall it mid-storm);
- then the ring hands over its bytes undecoded (ringbuf.RawBatch), and each
  run of records is one bpf_prog_test_run_opts() call per 1024 records;
- spare-ring records (already decoded) and any record the program refuses
  (a command name that is not plain ASCII) go through CPython;
- where the object does not load (no syscall programs or bpf_loop before
  5.17, or a verifier that refuses it), CPython formats everything, as before.

The lines are byte for byte those of the CPython renderer
(tests/test_kerneltext.py), so which path formatted a batch never shows.
"""

from __future__ import annotations

import _thread
import ctypes
import mmap
import sys

from . import libbpf
from .bpfobject import BpfObject
from .ringbuf import RawBatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def _debug(message: str) -> None:
    """For -v: logging costs ~8 ms of start-up to import, so only if the
    CLI has imported it already."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger("pytrace.kerneltext").debug(message)


class TextArgs(ctypes.Structure):
    """struct text_args (textfmt.h)."""
    _fields_ = [("src", ctypes.c_uint64), ("n", ctypes.c_uint32), ("stride", ctypes.c_uint32),
                ("done", ctypes.c_uint32), ("len", ctypes.c_uint32)]


def ipv6_plan() -> list[int]:
    """textfmt.h's ipv6_plan: for each pattern of zero groups (bit i: group
    i is zero), how inet_ntop() prints the address.  The zero run it
    compresses is the longest of two or more groups, the first of equally
    long ones; ::a.b.c.d (groups 0-5 zero) and ::ffff:a.b.c.d end in IPv4."""
    skip, run = 1, 2                                  # and 0: print the group
    trailing, v4, v4_if_ffff = 1 << 16, 1 << 17, 1 << 18
    plans = []
    for zeros in range(256):
        best = (0, -1)                               # (length, -start): max() finds the first longest
        i = 0
        while i < 8:
            if zeros >> i & 1:
                j = i
                while j < 8 and zeros >> j & 1:
                    j += 1
                best = max(best, (j - i, -i))
                i = j
            else:
                i += 1
        length, start = best[0], -best[1]
        plan = 0
        if length >= 2:
            for g in range(start, start + length):
                plan |= (run if g == start else skip) << (2 * g)
            if start + length == 8:
                plan |= trailing
            if start == 0 and length == 6:
                plan |= v4
            elif start == 0 and length == 5:
                plan |= v4_if_ffff
        plans.append(plan)
    return plans


class KernelText:
    """A loaded <name> object (textfmt.h's TEXT_PROGRAM) and its text array."""

    def __init__(self, name: str, rodata: dict[str, Any] | None = None):
        self.obj = BpfObject(name, rodata={"ipv6_plan": ipv6_plan(), **(rodata or {})})
        try:
            self.obj.load()
            self.prog_fd = self.obj.program_fd(name)
            out = self.obj.map("text")      # one value of TEXT_BYTES (textfmt.h)
            self.text = mmap.mmap(out.fd, out.value_size, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            self.obj.close()
            raise
        self.args = TextArgs()
        self.opts = libbpf.TestRunOpts(sz=ctypes.sizeof(libbpf.TestRunOpts),
                                       ctx_in=ctypes.addressof(self.args),
                                       ctx_size_in=ctypes.sizeof(TextArgs))
        self._opts_addr = ctypes.addressof(self.opts)
        self._run = libbpf.lib().bpf_prog_test_run_opts

    def close(self) -> None:
        self.text.close()
        self.obj.close()

    def lines(self, buf: bytes, stride: int, refused: Callable[[int], bytes]) -> list[bytes]:
        """The text of the records in buf (each `stride` bytes from its ring
        header to the next); refused(i) gives the line of record i where the
        program declined it."""
        n = len(buf) // stride
        base = ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value   # buf outlives the calls
        args, text, run, opts = self.args, self.text, self._run, self._opts_addr
        args.stride = stride
        out = []
        i = 0
        while i < n:
            # the program takes what it can of the rest (its own caps on
            # records and text per run) and says how many it did
            args.src, args.n = base + i * stride, n - i
            rc = run(self.prog_fd, opts)
            if rc < 0:                      # libbpf 1.x: -errno
                raise OSError(-rc, f"{self.obj.name}: bpf_prog_test_run_opts failed")
            out.append(text[:args.len])
            if args.done:
                i += args.done
            else:       # the first record of a run, into an empty array: refused
                out.append(refused(i))
                i += 1
        return out


class KernelLines:
    """A renderer (batch -> bytes) that formats in BPF once its text object
    is loaded, and with `rows` (the tool's CPython rows: list of records ->
    list of lines) until then, where it does not load, and for what BPF
    does not take.

    source: the live tracer (its ring and object), or what stands in for it
    in `pytrace replay` (no ring: CPython only).  name, rodata: the tool's
    text object and its settings.  Sinks (--record, --influx) keep CPython:
    they decode every record anyway.
    """

    def __init__(self, source: Any, name: str, rodata: dict[str, Any],
                 rows: Callable[[list[tuple]], list[bytes]]):
        from .cliutil import active_sinks
        self.ring, self.owner = getattr(source, "ring", None), getattr(source, "obj", None)
        self.name, self.rodata, self.rows = name, rodata, rows
        self.kernel: KernelText | None = None
        # True once settled (loaded, refused, or not to be tried at all)
        self.tried = self.ring is None or self.owner is None or active_sinks() is not None
        self.kernel_lines = 0      # records formatted in BPF (for tests)
        self.refused = 0           # of those offered to BPF, formatted by CPython
        # the loading thread's result (a KernelText, or the exception), under
        # _lock with _closed: a tracer closed while its text object loads
        # leaves the thread to close that object
        self._loading = False
        self._result: Any = None
        self._closed = False
        self._lock = _thread.allocate_lock()
        if not self.tried:
            self.owner.on_close(self.close)       # with the tracer's own object

    def __call__(self, batch: Any) -> bytes:
        if type(batch) is RawBatch:
            return b"".join(self._kernel_lines(batch))
        self.idle()
        return b"".join(self.rows(batch))

    def idle(self) -> None:
        """Start loading the text object, or switch to it once loaded (from
        the next batch on).  Called with each CPython batch, and by
        cliutil.stream_events on a tick without records: a tracer started
        before the traffic it watches then pays the verifier's ~20 ms of CPU
        while nothing happens, not in the middle of the first burst."""
        if not self.tried:
            if not self._loading:
                self._loading = True
                _thread.start_new_thread(self._load, ())
            elif self._result is not None:
                self._switch()

    def start(self) -> bool:
        """Load the text object now, in this thread, and switch to it; False
        (and CPython from now on) where the kernel refuses it."""
        self._loading = True
        self._load()
        self._switch()
        return self.kernel is not None

    def _load(self) -> None:
        try:
            result: Any = KernelText(self.name, self.rodata)
        except Exception as exc:       # a thread has no caller to raise to: CPython, and say why
            result = exc
        with self._lock:
            if self._closed:
                if isinstance(result, KernelText):
                    result.close()
                return
            self._result = result

    def _switch(self) -> None:
        self.tried = True
        if isinstance(self._result, KernelText):
            self.kernel = self._result
            self.ring.raw_batches = True
            _debug(f"{self.name}: formatting in BPF")
        else:
            _debug(f"{self.name}: formatting in CPython ({self._result})")

    def _kernel_lines(self, batch: RawBatch) -> list[bytes]:
        rows, stride, unpack = self.rows, batch.stride, batch.unpack
        out: list[bytes] = []
        for part in batch.parts:
            if isinstance(part, bytes):
                def refused(i: int, part: bytes = part) -> bytes:
                    self.refused += 1
                    return rows([unpack(part, i * stride)])[0]
                before = self.refused
                out += self.kernel.lines(part, stride, refused)
                self.kernel_lines += len(part) // stride - (self.refused - before)
            else:
                out += rows(part)
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if isinstance(self._result, KernelText):
                self._result.close()
            self._result = self.kernel = None
