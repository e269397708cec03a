"""Kernel symbols from /proc/kallsyms: addresses to `function+0xoff` and back.

Loaded on first use (parsing takes ~0.1 s) and kept for the process.
"""

from __future__ import annotations

import bisect
from functools import lru_cache

from .errors import PytraceError


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms"):
        addrs: list[int] = []
        names: list[str] = []
        by_name: dict[str, int] = {}
        try:
            with open(path) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) < 3 or parts[1] not in "tTwW":
                        continue
                    addr = int(parts[0], 16)
                    if addr == 0:
                        continue
                    addrs.append(addr)
                    names.append(parts[2])
                    by_name.setdefault(parts[2], addr)
        except OSError as exc:
            raise PytraceError(f"cannot read {path}: {exc.strerror}") from None
        if not addrs:
            raise PytraceError(f"{path} shows no addresses (kptr_restrict? run as root)")
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self._addrs = [addrs[i] for i in order]
        self._names = [names[i] for i in order]
        self._by_name = by_name

    def resolve(self, addr: int) -> tuple[str, int] | None:
        """(function, offset) of a kernel text address, or None."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        return self._names[i], addr - self._addrs[i]

    def name(self, addr: int) -> str:
        """'function+0x1a' (or the hex address when unknown)."""
        hit = self.resolve(addr)
        if hit is None:
            return f"0x{addr:x}"
        fn, off = hit
        return f"{fn}+0x{off:x}" if off else fn

    def function(self, addr: int) -> str:
        hit = self.resolve(addr)
        return hit[0] if hit else f"0x{addr:x}"

    def address(self, name: str) -> int | None:
        return self._by_name.get(name)

    def span(self, name: str) -> tuple[int, int] | None:
        """[start, end) of a function's text: up to the next higher symbol."""
        start = self._by_name.get(name)
        if start is None:
            return None
        i = bisect.bisect_right(self._addrs, start)
        return start, (self._addrs[i] if i < len(self._addrs) else start + 1)

    def stack(self, addrs: tuple[int, ...] | list[int]) -> list[str]:
        """Symbolize a stack as bpf_get_stack() fills it (stops at the first 0)."""
        out = []
        for a in addrs:
            if not a:
                break
            out.append(self.name(a))
        return out


@lru_cache(maxsize=1)
def kernel_symbols() -> KernelSymbols:
    return KernelSymbols()
