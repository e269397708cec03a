"""soconnlat: IP connect() latency histograms, per calling user stack and process.

Library:

    from pytrace.tools.soconnlat import SoConnLat
    with SoConnLat() as t:
        time.sleep(10)
        for k, h in t.histograms().items():      # ConnLatKey: Log2Histogram
            print(k.comm, k.pid, k.ustack, h.count, h.average)
            print(h.render())

A blocking connect is timed to its return; a non-blocking one (EINPROGRESS)
to the thread's next poll/select/epoll wait that returns ready descriptors.
User stacks go past the first frame only in code built with frame pointers.
The kernel keeps each frame as its ELF file's build id and offset, so the
stack is named even when the process exited long before it is printed
(core/usyms.py); only frames in code without a file (JIT) need the process.
"""

from __future__ import annotations

import errno

from ..cli.aggregate import timestamp_line
from ..core.bpfobject import BpfObject
from ..core.loader import Variant
from ..core.socklayer import keyed_histograms
from ..core.tracer import TASK_SCOPE, Tracer
from ..core.usyms import read_build_id_stack, stack_names
from ..spec import HISTOGRAM, EventType, Option, ToolSpec, interval_flags, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WAITS = ("poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2")
OPTIONAL = {"soconnlat_epoll_pwait2"}   # Linux 5.11+

# The hists map's key (struct soconnlat_key): the raw ustack is a stack id,
# which histograms() resolves to the frames' names
CONNLAT_KEY = EventType("ConnLatKey", struct="soconnlat_key", doc="The process and user stack a histogram is for.",
                        fields="""
    pid
    comm: text
    ustack: frames              # the connect()'s user stack, innermost first (None: stacks off)
""")


class SoConnLat(Tracer):
    OBJECT = "soconnlat"
    SCOPE = TASK_SCOPE
    VARIANTS = (Variant("tracepoint", ("soconnlat_enter", "soconnlat_exit",
                                       *(f"soconnlat_{w}" for w in WAITS))),)

    def __init__(self, *, pid: int = 0, stacks: bool = True, ms: bool = False, hook: str | None = None, **scope: Any):
        super().__init__(hook=hook, **scope)
        self.pid, self.stacks, self.ms = pid, stacks, ms

    def rodata(self) -> dict[str, Any]:
        return {"targ_tgid": self.pid, "user_stacks": self.stacks, "targ_ms": self.ms}

    def map_sizes(self) -> dict[str, int] | None:
        return None if self.stacks else {"stacks": 1}

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        for name in variant.programs:
            try:
                obj.attach(name)
            except OSError as exc:
                if name not in OPTIONAL or exc.errno != errno.ENOENT:
                    raise

    def setup(self) -> None:
        self._hists = self.obj.map("hists")
        self._stacks = self.obj.map("stacks")

    def _frames(self, sid: int, pid: int) -> tuple[str, ...] | None:
        frames, err = read_build_id_stack(self._stacks, sid)
        if frames is None:
            return None
        if not frames:
            return (f"[missed user stack: {errno.errorcode.get(err, err)}]",)
        return tuple(stack_names(pid, frames))

    def histograms(self, clear: bool = False) -> dict:
        """{ConnLatKey: latency histogram}, one per (user stack, process), most connects last."""
        make = CONNLAT_KEY.cls
        out: dict = {}
        by_id = keyed_histograms(self._hists, "msecs" if self.ms else "usecs", make, clear)
        for k, h in by_id.items():       # k.ustack: the stack id, as the map holds it
            key = make(k.pid, k.comm, self._frames(k.ustack, k.pid))
            out[key] = out[key] + h if key in out else h
        return dict(sorted(out.items(), key=lambda kh: (kh[1].count, kh[0].pid)))


__getattr__ = public_classes(__name__, ConnLatKey=CONNLAT_KEY)


def text(snap: Any, args: Any) -> str:
    parts = ["".join(f"  {f}\n" for f in k.ustack or ()) + f"  {k.comm} [{k.pid}]\n{h.render()}"
             for k, h in SPEC.histograms(snap)]
    return timestamp_line(snap, args) + "\n".join(parts) + ("\n" if parts else "")


SPEC = ToolSpec(
    "soconnlat", "IP connect() latency histograms with the caller's user stack", SoConnLat, HISTOGRAM,
    description=("Summarize IP connect() latency as histograms per calling user stack and "
                 "process; printed at Ctrl-C or every interval."),
    event=CONNLAT_KEY,
    options=(
        pid("only this process"),
        Option("-m", "--milliseconds", action="store_true", kw="ms", help="histograms in milliseconds"),
        Option("-S", "--no-stacks", action="store_true", kw="stacks", value=lambda args: not args.no_stacks,
               help="do not key by user stack"),
        *interval_flags(),
        timestamp(),
    ),
    read=lambda tracer, args: tracer.histograms(clear=bool(args.interval)),
    text=text,
    intro="Tracing IP connect() latency with ustacks. Ctrl-C to end.\n",
    examples=(
        ("pytrace soconnlat", "a histogram per user stack and process, at Ctrl-C"),
        ("pytrace soconnlat -S -m", "per process only, in milliseconds"),
        ("pytrace soconnlat -p 181 -i 10", "process 181, every 10 seconds"),
        ("pytrace soconnlat --json", "one JSON object per histogram, the stack as a list"),
    ),
)
