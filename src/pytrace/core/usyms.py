"""Stacks: read from a BPF stack-trace map, and user-space symbols: a
process's code addresses to `function+0xoff` (or `library+0xoff` where the
ELF file has no symbol for it).  Kernel symbols are in ksyms.py.

Two kinds of user stack:

  - return addresses (a stack map without flags): named through the
    process's mappings, read from /proc/PID/maps when first asked, so a
    process that has exited by then gets hex addresses only, unless its
    mappings were read while it lived (remember());
  - build ids (a stack map created with BPF_F_STACK_BUILD_ID): the kernel
    records, at collection time, each frame as the ELF file's build id and
    the file offset, which name the frame without the process: the short-
    lived client that connected and exited long before the tool printed is
    named as well as a daemon (read_build_id_stack(), stack_names()).  A
    build id is found among the files mapped by this process and by every
    process whose mappings were read, then in the system's library and
    program directories (read once, on the first miss), then in
    /usr/lib/debug/.build-id.  A frame the kernel could not resolve that way
    (JIT code, an anonymous mapping) comes as an address, named through the
    process's mappings if they were read.

Each ELF file's function symbols (.symtab, else .dynsym) are parsed once
with pyelftools and kept for the life of the process.
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


def elf_build_id(path: str) -> bytes | None:
    """The GNU build id of an ELF file (its NT_GNU_BUILD_ID note), read from the
    headers alone (no pyelftools: the search reads hundreds of files)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return None
            is64, order = head[4] == 2, "<" if head[5] == 1 else ">"
            if is64:
                phoff, = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            if not phnum or phnum > 256:
                return None
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
            for i in range(phnum):
                ph = table[i * phentsize:(i + 1) * phentsize]
                if len(ph) < phentsize or struct.unpack_from(order + "I", ph, 0)[0] != 4:     # PT_NOTE
                    continue
                if is64:
                    off, size = struct.unpack_from(order + "Q", ph, 8)[0], struct.unpack_from(order + "Q", ph, 32)[0]
                else:
                    off, size = struct.unpack_from(order + "I", ph, 4)[0], struct.unpack_from(order + "I", ph, 16)[0]
                if size > 1 << 16:
                    continue
                fh.seek(off)
                found = _gnu_build_id(fh.read(size), order)
                if found:
                    return found
    except OSError:
        return None
    return None


def _gnu_build_id(notes: bytes, order: str) -> bytes | None:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from(order + "III", notes, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        if kind == 3 and notes[name_at:name_at + namesz] == b"GNU\0":      # NT_GNU_BUILD_ID
            return notes[desc_at:desc_at + descsz]
        pos = desc_at + (descsz + 3) // 4 * 4
    return None


class BuildIds:
    """build id -> an ELF file that has it (see the module docstring)."""

    SEARCH = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
              "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib",
              "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/libexec")

    def __init__(self) -> None:
        self.paths: dict[bytes, str] = {}
        self._seen: set[str] = set()
        self._dirs: set[str] = set()
        self._searched = False

    def add(self, path: str) -> None:
        """A file mapped by some process (its build id is read once)."""
        if path in self._seen or not path.startswith("/"):
            return
        self._seen.add(path)
        self._dirs.add(os.path.dirname(path))
        bid = elf_build_id(path)
        if bid:
            self.paths.setdefault(bid, path)

    def find(self, bid: bytes) -> str | None:
        path = self.paths.get(bid)
        if path is not None:
            return path
        if not self._searched:
            self._searched = True
            self._search()
            path = self.paths.get(bid)
            if path is not None:
                return path
        hexid = bid.hex()
        debug = f"/usr/lib/debug/.build-id/{hexid[:2]}/{hexid[2:]}.debug"
        if os.path.exists(debug):
            self.paths[bid] = debug
            return debug
        return None

    def _search(self) -> None:
        dirs = [*sorted(self._dirs), *self.SEARCH, *os.environ.get("PATH", "").split(":")]
        for d in dict.fromkeys(dirs):
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.is_file() and (e.name.endswith(".so") or ".so." in e.name or os.access(e.path, os.X_OK)):
                        self.add(e.path)
                except OSError:
                    continue


_build_ids: BuildIds | None = None


def build_ids() -> BuildIds:
    """The process-wide index, seeded with the files this process maps."""
    global _build_ids
    if _build_ids is None:
        _build_ids = BuildIds()
        for _lo, _hi, _off, path in ProcessSymbols(os.getpid()).maps:
            _build_ids.add(path)
    return _build_ids


def build_id_frame_name(bid: bytes, file_off: int) -> str:
    """A frame known by its file's build id and offset, named without its process."""
    path = build_ids().find(bid)
    if path is None:
        return f"[build id {bid.hex()[:16]}]+0x{file_off:x}"
    elf = _elf(path)
    hit = elf.lookup(file_off) if elf else None
    if hit:
        fn, delta = hit
        return f"{fn}+0x{delta:x}" if delta else fn
    try:
        beyond = file_off >= os.path.getsize(path)
    except OSError:
        beyond = False
    if beyond:      # no place in the file: a return address the frame-pointer walk made up
        return "[unknown]"
    return f"{os.path.basename(path)}+0x{file_off:x}"


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
        if _build_ids is not None:      # its files' build ids name build-id frames later
            for m in self.maps:
                _build_ids.add(m[3])
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
        """Names of return addresses, or of read_build_id_stack()'s frames."""
        out = []
        for a in addrs:
            if isinstance(a, tuple):
                out += stack_names(self.pid, (a,))
                continue
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


def stack_names(pid: int | None, frames) -> list[str]:
    """The names of a user stack's frames, innermost first: frames as
    read_build_id_stack() gives them ((build id, file offset), or (None,
    address) where the kernel had no build id) or plain addresses."""
    out = []
    for f in frames:
        if isinstance(f, int):
            bid, value = None, f
        else:
            bid, value = f
        if bid is not None:
            out.append(build_id_frame_name(bid, value))
        elif not value:
            break
        elif pid is not None:
            out.append(process_symbols(pid).name(value))
        else:
            out.append(f"0x{value:x}")
    return out


def remember(pids) -> None:
    """Read the mappings of these processes now, while they still exist, so
    their stacks can be symbolized later (stacks are printed at the end)."""
    for pid in pids:
        process_symbols(pid)


BUILD_ID_FRAME = struct.Struct("<i20sQ")      # struct bpf_stack_build_id
BPF_STACK_BUILD_ID_VALID, BPF_STACK_BUILD_ID_IP = 1, 2


def read_build_id_stack(stacks, sid: int, depth: int = 127) -> tuple[tuple | None, int]:
    """read_stack() for a stack map made with BPF_F_STACK_BUILD_ID: the frames
    as (build id, file offset), or (None, address) where the kernel kept an
    address (JIT code, anonymous memory).  -1: (None, 0); another negative id
    or a missing one: ((), errno)."""
    if sid == -1:
        return None, 0
    if sid < 0:
        return (), -sid
    raw = stacks.lookup(struct.pack("<I", sid))
    if raw is None:
        return (), errno.ENOENT
    frames = []
    for i in range(min(depth, len(raw) // BUILD_ID_FRAME.size)):
        status, bid, value = BUILD_ID_FRAME.unpack_from(raw, i * BUILD_ID_FRAME.size)
        if status == BPF_STACK_BUILD_ID_VALID:
            frames.append((bytes(bid), value))
        elif status == BPF_STACK_BUILD_ID_IP and value:
            frames.append((None, value))
        else:
            break
    return tuple(frames), 0


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
