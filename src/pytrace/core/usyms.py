"""Stacks: read from a BPF stack-trace map, and user-space symbols: a
process's code addresses to `function+0xoff` (or `library+0xoff` where the
ELF file has no symbol for it).  Kernel symbols are in ksyms.py.

The process's mappings are read from /proc/PID/maps when first asked (so a
process that has exited by then gets hex addresses only); each ELF file's
function symbols (.symtab, else .dynsym) are parsed once with pyelftools and
kept for the life of the process.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct
from functools import lru_cache


class _ElfSymbols:
    """Function symbols of one ELF file, and its file-offset -> address map."""

    def __init__(self, path: str):
        from elftools.elf.elffile import ELFFile  # heavy import: only when stacks are shown

        self.loads: list[tuple[int, int, int]] = []   # (file offset, vaddr, size)
        syms: dict[int, str] = {}
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    self.loads.append((seg["p_offset"], seg["p_vaddr"], seg["p_filesz"]))
            for secname in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(secname)
                if sec is None:
                    continue
                for sym in sec.iter_symbols():
                    if sym["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC") and sym["st_value"]:
                        syms.setdefault(sym["st_value"], sym.name)
        self.addrs = sorted(syms)
        self.names = [syms[a] for a in self.addrs]

    def lookup(self, file_off: int) -> tuple[str, int] | None:
        for off, vaddr, size in self.loads:
            if off <= file_off < off + size:
                addr = file_off - off + vaddr
                break
        else:
            return None
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        return self.names[i], addr - self.addrs[i]


@lru_cache(maxsize=64)
def _elf(path: str) -> _ElfSymbols | None:
    try:
        return _ElfSymbols(path)
    except Exception:  # not ELF, unreadable, deleted: fall back to file+offset
        return None


class ProcessSymbols:
    def __init__(self, pid: int):
        self.pid = pid
        self.maps: list[tuple[int, int, int, str]] = []   # start, end, file offset, path
        try:
            with open(f"/proc/{pid}/maps") as fh:
                for line in fh:
                    parts = line.split(maxsplit=5)
                    if len(parts) < 6 or "x" not in parts[1]:
                        continue
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    self.maps.append((lo, hi, int(parts[2], 16), parts[5].strip()))
        except OSError:
            pass
        self.maps.sort()
        self._starts = [m[0] for m in self.maps]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0 or addr >= self.maps[i][1]:
            return f"0x{addr:x}"
        lo, _hi, off, path = self.maps[i]
        file_off = addr - lo + off
        if path.startswith("/"):
            elf = _elf(f"/proc/{self.pid}/root{path}") or _elf(path)
            hit = elf.lookup(file_off) if elf else None
            if hit:
                fn, delta = hit
                return f"{fn}+0x{delta:x}" if delta else fn
            return f"{os.path.basename(path)}+0x{file_off:x}"
        return f"{path or '[anon]'}+0x{addr - lo:x}"

    def stack(self, addrs) -> list[str]:
        out = []
        for a in addrs:
            if not a:
                break
            out.append(self.name(a))
        return out


_procs: dict[int, ProcessSymbols] = {}


def process_symbols(pid: int) -> ProcessSymbols:
    """Symbols of a process, read once per pid (and forgotten past 256 processes)."""
    ps = _procs.get(pid)
    if ps is None:
        if len(_procs) >= 256:
            _procs.clear()
        ps = _procs[pid] = ProcessSymbols(pid)
    return ps


def remember(pids) -> None:
    """Read the mappings of these processes now, while they still exist, so
    their stacks can be symbolized later (stacks are printed at the end)."""
    for pid in pids:
        process_symbols(pid)


def read_stack(stacks, sid: int, depth: int = 127) -> tuple[tuple[int, ...] | None, int]:
    """A stack id as bpf_get_stackid() returned it -> (return addresses, 0).

    -1 means "not collected": (None, 0).  Another negative id is -errno from
    the kernel (e.g. EEXIST, a hash collision in a full table): ((), errno).
    `stacks` is the BPF_MAP_TYPE_STACK_TRACE map (core.bpfobject.Map).
    """
    if sid == -1:
        return None, 0
    if sid < 0:
        return (), -sid
    raw = stacks.lookup(struct.pack("<I", sid))
    if raw is None:
        return (), errno.ENOENT
    addrs = struct.unpack(f"<{depth}Q", raw[:8 * depth])
    n = addrs.index(0) if 0 in addrs else depth
    return addrs[:n], 0
