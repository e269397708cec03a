"""Log2 histograms as the kernel side keeps them, and their usual rendering."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Log2Histogram:
    """slots[i] counts values v with floor(log2(v)) == i (0 and 1 share slot 0)."""
    slots: tuple[int, ...]
    unit: str = "usecs"
    total: int | None = None      # number of values, when the kernel keeps it
    sum: int | None = None        # sum of values, when the kernel keeps it

    @property
    def count(self) -> int:
        return self.total if self.total is not None else sum(self.slots)

    @property
    def average(self) -> float | None:
        if self.sum is None or not self.count:
            return None
        return self.sum / self.count

    @staticmethod
    def bounds(i: int) -> tuple[int, int]:
        """Inclusive value range of slot i."""
        return (0, 1) if i == 0 else (1 << i, (1 << (i + 1)) - 1)

    def buckets(self) -> list[tuple[int, int, int]]:
        """(low, high, count) for every slot up to the last non-empty one."""
        last = max((i for i, c in enumerate(self.slots) if c), default=-1)
        return [(*self.bounds(i), self.slots[i]) for i in range(last + 1)]

    def __add__(self, other: "Log2Histogram") -> "Log2Histogram":
        n = max(len(self.slots), len(other.slots))
        a = self.slots + (0,) * (n - len(self.slots))
        b = other.slots + (0,) * (n - len(other.slots))
        add = lambda x, y: None if x is None or y is None else x + y  # noqa: E731
        return Log2Histogram(tuple(x + y for x, y in zip(a, b)), self.unit,
                             add(self.total, other.total), add(self.sum, other.sum))

    def render(self) -> str:
        """The BCC/libbpf-tools text: '     usecs : count distribution' with stars."""
        rows = self.buckets()
        if not rows:
            return ""
        wide = len(rows) > 32
        width, stars = (20, 20) if wide else (10, 40)
        peak = max(c for _, _, c in rows) or 1
        lines = [f"{'':{15 if wide else 5}}{self.unit:<{29 if wide else 19}} : count    distribution"]
        for low, high, count in rows:
            n = min(count, peak) * stars // peak
            bar = "*" * n + " " * (stars - n) + ("+" if count > peak else "")
            lines.append(f"{low:>{width}} -> {high:<{width}} : {count:<8} |{bar}|")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"unit": self.unit, "count": self.count, "sum": self.sum, "average": self.average,
                "buckets": [{"low": lo, "high": hi, "count": c} for lo, hi, c in self.buckets()]}
