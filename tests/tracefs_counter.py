"""Count a classic tracepoint's hits independently of pytrace: a private
tracefs instance with a filter, read back as text.  Used to check in-kernel
aggregates against the kernel's own record of the same events."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")


class TraceCounter:
    def __init__(self, event: str, filter_expr: str, name: str = "pytrace_test"):
        self.event, self.filter, self.name = event, filter_expr, name
        self.mounted = False
        self.inst: Path | None = None

    def __enter__(self) -> "TraceCounter":
        if not (TRACEFS / "events").exists():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
            self.mounted = True
        self.inst = TRACEFS / "instances" / self.name
        if self.inst.exists():
            os.rmdir(self.inst)
        os.mkdir(self.inst)
        (self.inst / "buffer_size_kb").write_text("8192")
        ev = self.inst / "events" / self.event
        (ev / "filter").write_text(self.filter)
        (ev / "enable").write_text("1")
        return self

    def stop(self) -> list[str]:
        ev = self.inst / "events" / self.event
        (ev / "enable").write_text("0")
        text = (self.inst / "trace").read_text()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def __exit__(self, *exc) -> None:
        try:
            os.rmdir(self.inst)
        finally:
            if self.mounted:
                subprocess.run(["umount", str(TRACEFS)], check=False)


def field(line: str, name: str) -> int:
    m = re.search(rf"\b{name}=(\d+)", line)
    if not m:
        raise ValueError(f"no {name}= in {line!r}")
    return int(m.group(1))


