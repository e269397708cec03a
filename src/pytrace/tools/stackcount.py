"""stackcount: count the stacks (kernel and/or user) that reach tracepoints.

The same precompiled program as `pytrace count` (src/bpf/count.bpf.c), with
stack ids in the key: counted in the kernel, symbolized here (kernel frames
from /proc/kallsyms, user frames from the process's ELF files).

    pytrace stackcount t:net:net_dev_xmit -K          # transmit kernel stacks
    pytrace stackcount -U t:syscalls:sys_enter_connect

Library:

    from pytrace.tools.stackcount import StackCounter
    with StackCounter(["t:net:net_dev_xmit"], kernel_stack=True) as c:
        time.sleep(5)
        for row in c.rows():                    # StackCount, fewest first
            print(row.count, row.kstack[:3])

BCC's patterns are taken as BCC reads them (t:category:event, and
category:event for a tracepoint; with -r a regular expression); kernel
functions (BCC's default), user functions (lib:func) and USDT probes (u:)
are not offered: they need kprobes or uprobes, which pytrace's precompiled
program does not attach, and one line says so.  User stacks need frame
pointers in the traced code to go past the first frame.
"""

from __future__ import annotations

import errno
import re
from typing import Any

from ..core import convert
from ..cli.cliutil import bad_value, intervals, process_id, seconds, stack_storage
from ..core.errors import UsageError
from ..core.ksyms import kernel_symbols
from ..core.usyms import process_symbols, remember
from ..sinks.snapshot import Series, Snapshot
from ..spec import TABLE, EventType, Exclusive, Option, ToolSpec, print_program, public_classes
from .count import STACK_STORAGE, ProbeCount, TracepointCount
from .softirqs import cpu_number

# -- the row type ----------------------------------------------------------------------------

def pid_value(raw: int) -> int | None:
    """The process, None when hits are not counted per process."""
    return None if raw < 0 else raw


def pid_parse(v: Any) -> int | None:
    return None if v in (None, "None", "") else int(v)


def comm_value(raw: bytes, pid: int) -> str | None:
    return None if pid < 0 else convert.text_value(raw)


def comm_parse(v: Any) -> str | None:
    return None if v in (None, "None") else str(v)


def _addrs(raw: tuple, error: int) -> tuple[int, ...] | None:
    if error == -1:
        return None
    out = []
    for a in raw:
        if not a:
            break
        out.append(a)
    return tuple(out)


def kernel_frames_value(raw: tuple, error: int) -> tuple[str, ...] | None:
    """Kernel frames "function+0xoff", innermost first; None when not collected."""
    if error > 0:
        return (f"[missed kernel stack: {errno.errorcode.get(error, error)}]",)
    addrs = _addrs(raw, error)
    return None if addrs is None else tuple(kernel_symbols().stack(addrs))


def user_frames_value(raw: tuple, pid: int, error: int) -> tuple[str, ...] | None:
    if error > 0:
        return (f"[missed user stack: {errno.errorcode.get(error, error)}]",)
    addrs = _addrs(raw, error)
    return None if addrs is None else tuple(process_symbols(pid).stack(addrs))


def frames_json(v: tuple | None) -> list | None:
    return None if v is None else list(v)


def frames_parse(v: Any) -> tuple[str, ...] | None:
    """From JSON (a list) or a snapshot's label (frames a line each)."""
    if v is None or v == "None":
        return None
    if isinstance(v, str):
        return tuple(f for f in v.split("\n") if f)
    return tuple(v)


def addrs_value(raw: tuple, error: int) -> tuple[int, ...] | None:
    return None if error > 0 else _addrs(raw, error)


def addrs_json(v: tuple | None) -> list | None:
    return None if v is None else [f"{a:x}" for a in v]


def addrs_parse(v: Any) -> tuple[int, ...] | None:
    if v is None or v == "None":
        return None
    if isinstance(v, str):
        return tuple(int(a, 16) for a in v.split())
    return tuple(int(a, 16) if isinstance(a, str) else a for a in v)


convert.register(convert.Conversion("pid_or_none", pid_value, None, pid_parse, kind="int"))
convert.register(convert.Conversion("comm_if_pid", comm_value, None, comm_parse, needs=("pid",), kind="str"))
convert.register(convert.Conversion("kernel_frames", kernel_frames_value, frames_json, frames_parse,
                                    needs=("kstack_error",), kind="list"))
convert.register(convert.Conversion("user_frames", user_frames_value, frames_json, frames_parse,
                                    needs=("pid", "ustack_error"), kind="list"))
convert.register(convert.Conversion("stack_addrs", addrs_value, addrs_json, addrs_parse, kind="list"))

# struct stackcount_row of src/bpf/count.bpf.c: a counted stack as user space makes
# it (build.py generates StackCount from its BTF)
STACK_ROW = EventType("StackCount", struct="stackcount_row", object="count",
                      doc="The hits of one tracepoint with one stack (per process with -P/-U).", fields="""
    tracepoint: text            # category:name
    pid: pid_or_none            # -P, -U: the process; None otherwise
    comm: comm_if_pid(pid)
    count
    kstack: kernel_frames       # "function+0xoff", innermost first; None: not collected
    ustack: user_frames         # the same for the process's stack
    kstack_addrs <- kstack: stack_addrs(kstack_error)    # their return addresses
    ustack_addrs <- ustack: stack_addrs(ustack_error)    # the address; for a frame kept by its file's
                                # build id (core/usyms: named after the process exited), the file offset
    -kstack_error
    -ustack_error
    -pad
""")


# -- the tracer: count's, with BCC's patterns ---------------------------------------------

def tracepoint_specs(patterns: list[str], regexp: bool) -> list[str]:
    """BCC's patterns -> the tracepoints they name ('category:event', shell
    wildcards kept for core/tracepoints.resolve; with regexp, every tracepoint
    whose name the regular expression finds).  Needs tracefs mounted."""
    from ..core import tracepoints as tp
    known = tp.all_names()
    categories = {n.split(":")[0] for n in known}
    out: list[str] = []
    for pattern in patterns:
        parts = pattern.split(":")
        if len(parts) == 3 and parts[0] in ("t", "tracepoint"):
            spec = f"{parts[1]}:{parts[2]}"
        elif len(parts) == 2 and (parts[0] in categories or (regexp and any(
                re.search(parts[0], c) for c in categories))):
            spec = pattern
        elif len(parts) == 3 and parts[0] == "u":
            raise UsageError(f"{pattern}: USDT probes are not offered by pytrace stackcount "
                             "(tracepoints only: t:category:event)")
        elif len(parts) == 2 or (len(parts) == 3 and parts[0] == "p" and parts[1]):
            raise UsageError(f"{pattern}: no tracepoint category {parts[-2]}; a user function (lib:func) needs "
                             "uprobes, which pytrace stackcount does not attach (tracepoints only: "
                             "t:category:event)")
        elif len(parts) == 1 or (len(parts) == 3 and parts[0] == "p"):
            raise UsageError(f"{pattern}: kernel functions need kprobes, which pytrace stackcount does not "
                             "attach (tracepoints only: t:category:event, e.g. t:net:net_dev_xmit)")
        else:
            raise UsageError(f"{pattern}: expected t:category:event (BCC's pattern forms)")
        if regexp:
            try:
                rx = re.compile(spec)
            except re.error as exc:
                raise UsageError(f"-r {pattern}: {exc}") from None
            found = [n for n in known if rx.search(n)]
            if not found:
                raise UsageError(f"-r {pattern}: no tracepoint matches")
            out += found
        else:
            out.append(spec)
    return out


def pattern_arg(text: str) -> str:
    """An argparse type for a pattern: the forms that cannot be a tracepoint are
    refused here, naming why (lib:func is told apart from category:event once
    tracefs is read)."""
    parts = text.split(":")
    if len(parts) == 3 and parts[0] == "u":
        raise bad_value(f"'{text}': USDT probes are not offered (tracepoints only: t:category:event)")
    if len(parts) == 3 and parts[0] == "p":
        raise bad_value(f"'{text}': {'user' if parts[1] else 'kernel'} functions need "
                        f"{'uprobes' if parts[1] else 'kprobes'}, which pytrace stackcount does not attach "
                        "(tracepoints only: t:category:event)")
    if len(parts) == 1 and "/" not in text:
        raise bad_value(f"'{text}': a kernel function needs kprobes, which pytrace stackcount does not attach "
                        "(tracepoints only: t:category:event, e.g. t:net:net_dev_xmit)")
    if len(parts) > 3 or (len(parts) == 3 and parts[0] not in ("t", "tracepoint")):
        raise bad_value(f"'{text}': expected t:category:event")
    return text


class StackCounter(TracepointCount):
    """count's tracer for BCC's stackcount: patterns as BCC reads them, stacks in the key."""

    TOOL = "stackcount"

    def __init__(self, patterns: list[str], *, regexp: bool = False, stacks: str = "both", **kw: Any):
        """stacks: "both" (default), "kernel" or "user" (-K, -U), unless kernel_stack/user_stack say."""
        if not patterns:
            raise UsageError("name a pattern: a tracepoint, t:category:event (e.g. t:net:net_dev_xmit)")
        if stacks not in ("both", "kernel", "user"):
            raise ValueError("stacks is both, kernel or user")
        kw.setdefault("kernel_stack", stacks != "user")
        kw.setdefault("user_stack", stacks != "kernel")
        self.patterns, self.regexp = list(patterns), regexp
        super().__init__(list(patterns), **kw)

    def _compile(self) -> dict[str, Any]:
        self.specs = tracepoint_specs(self.patterns, self.regexp)     # tracefs is mounted by now
        return super()._compile()

    def rows(self, clear: bool = False) -> list:
        """The counted stacks as StackCount rows, fewest hits first (symbolized now)."""
        return [row_of(pc) for pc in self.counts(clear)]


def row_of(pc: ProbeCount) -> Any:
    k, u = frames(pc)
    return STACK_ROW.cls(pc.tracepoint, pc.pid, pc.comm, pc.count,
                         None if pc.kstack is None else tuple(k), None if pc.ustack is None else tuple(u),
                         None if pc.kstack is None or pc.kstack_error else tuple(pc.kstack),
                         None if pc.ustack is None or pc.ustack_error else tuple(user_addrs(pc.ustack)))


def user_addrs(frames_: tuple) -> list[int]:
    """The numbers of count's user frames: (None, address), or (build id, file offset)."""
    return [f[1] if isinstance(f, tuple) else f for f in frames_]


def frames(pc: ProbeCount) -> tuple[list[str], list[str]]:
    """(kernel frames, user frames), innermost first, symbolized."""
    k = kernel_symbols().stack(pc.kstack) if pc.kstack else []
    u = process_symbols(pc.pid).stack(pc.ustack) if pc.ustack and pc.pid is not None else []
    if pc.kstack is not None and not pc.kstack:
        k = [f"[missed kernel stack: {errno.errorcode.get(pc.kstack_error, pc.kstack_error)}]"]
    if pc.ustack is not None and not pc.ustack and pc.ustack_error:
        u = [f"[missed user stack: {errno.errorcode.get(pc.ustack_error, pc.ustack_error)}]"]
    return k, u


__getattr__ = public_classes(__name__, StackCount=STACK_ROW)


# -- the command line -------------------------------------------------------------------------

_LABELS = ("tracepoint", "pid", "comm", "kstack", "ustack", "kstack_addrs", "ustack_addrs")


def _label(name: str, v: Any) -> str:
    if v is None:
        return "None"
    if name.endswith("_addrs"):
        return " ".join(f"{a:x}" for a in v)
    if name in ("kstack", "ustack"):
        return "\n".join(v)
    return str(v)


def snapshot(tracer: StackCounter, args: Any) -> Snapshot:
    """One interval: a series per counted stack, its frames and addresses as text
    labels (replay needs neither kallsyms nor the processes)."""
    rows = tracer.rows(clear=bool(args.interval))
    series = [Series.of({n: _label(n, getattr(r, n)) for n in _LABELS}, {"count": r.count}) for r in rows]
    return Snapshot.now("stackcount", series, args.interval,
                        {"tracepoints": len(tracer.names), "missed": tracer.dropped})


def _frame(addr: int | None, frame: str, args: Any) -> str:
    """BCC's frame: the symbol (+offset with -s), its address first with -v."""
    text = frame if args.offset or frame.startswith("[") else frame.split("+0x", 1)[0]
    if args.verbose and addr is not None:
        return f"{addr:<16x} {text}"
    return text


def _stack(frames_: tuple | None, addrs: tuple | None, args: Any) -> list[str]:
    frames_ = frames_ or ()
    addrs = addrs if addrs is not None and len(addrs) == len(frames_) else (None,) * len(frames_)
    return [_frame(a, f, args) for a, f in zip(addrs, frames_)]


def text(snap: Snapshot, args: Any) -> str:
    """BCC's multi-line stacks (fewest first), or its folded lines (-f)."""
    from ..cli import aggregate
    rows = SPEC.rows(snap)
    if args.folded:
        out = []
        for r in rows:
            k, u = _stack(r.kstack, r.kstack_addrs, args), _stack(r.ustack, r.ustack_addrs, args)
            head = [r.comm] if r.comm is not None else [r.tracepoint]
            parts = head + u[::-1] + (["-"] if k and u and args.delimited else []) + k[::-1]
            out.append(f"{';'.join(parts)} {r.count}\n")
        return aggregate.timestamp_line(snap, args) + "".join(out)
    lines = []
    many = snap.value("tracepoints", 0) > 1
    for r in rows:
        k, u = _stack(r.kstack, r.kstack_addrs, args), _stack(r.ustack, r.ustack_addrs, args)
        if many:
            lines.append(f"  [{r.tracepoint}]")
        lines.extend(f"  {f}" for f in k)
        if k and u and args.delimited:
            lines.append("    --")
        lines.extend(f"  {f}" for f in u)
        if r.pid is not None:
            lines.append(f"    {r.comm} [{r.pid}]")
        lines.append(f"    {r.count}\n")
    return aggregate.timestamp_line(snap, args) + "\n".join(lines) + ("\n" if lines else "")


def header(args: Any, n: int) -> str:
    if args.json or args.folded:
        return ""
    return f"Tracing {n} tracepoint{'s' if n > 1 else ''}... Hit Ctrl-C to end.\n"


def intro(args: Any) -> str:
    """Live: how many tracepoints the patterns resolved to (replay: replay_intro)."""
    from ..cli import cliutil
    if not cliutil._check_host:         # pytrace replay: rebuilt from the first snapshot
        return ""
    from ..core import tracefs, tracepoints as tp
    mounted = tracefs.ensure()
    try:
        n = len(tp.resolve(tracepoint_specs(args.pattern, args.regexp)))
    finally:
        if mounted:
            tracefs.unmount()
    return header(args, n)


def between(tracer: StackCounter, args: Any) -> None:
    """Printing only at the end with user stacks: every second, the mappings of
    the processes seen so far are read while they still exist."""
    if tracer.user_stack:
        remember({pc.pid for pc in tracer.counts() if pc.pid})


SPEC = ToolSpec(
    "stackcount", "count kernel/user stacks reaching tracepoints, counted in the kernel", StackCounter, TABLE,
    description=("Count the kernel and user stacks that reach tracepoints; stacks are counted in the kernel "
                 "and printed (fewest first) at the end or every interval. PATTERN is BCC's: t:category:event "
                 "(also category:event, shell wildcards; -r: a regular expression); BCC's kernel functions, "
                 "lib:func and u:lib:probe need kprobes/uprobes, which pytrace's precompiled program does not "
                 "attach: one line says so."),
    event=STACK_ROW,
    labels=_LABELS, values=("count",),
    options=(
        Option("-p", "--pid", type=process_id, default=0, kw="pid", help="trace this PID only"),
        Option("-c", "--cpu", type=cpu_number, kw="cpu", help="trace this CPU only"),
        Option("-i", "--interval", type=seconds, metavar="SEC", help="summary interval, seconds"),
        Option("-D", "--duration", type=seconds, metavar="SEC", help="total duration of trace, seconds"),
        Option("-n", "--count", type=intervals, metavar="N", help="stop after N intervals"),
        Option("-T", "--timestamp", action="store_true", help="include timestamp on output"),
        Option("-r", "--regexp", action="store_true", kw="regexp",
               help="use regular expressions; default is \"*\" wildcards only"),
        Option("-s", "--offset", action="store_true", help="show address offsets"),
        Option("-P", "--perpid", action="store_true", kw="per_process",
               help="display stacks separately for each process"),
        Exclusive(Option("-K", "--kernel-stacks-only", action="store_true", help="kernel stack only"),
                  Option("-U", "--user-stacks-only", action="store_true", help="user stack only"),
                  kw="stacks", value=lambda a: "kernel" if a.kernel_stacks_only else
                  "user" if a.user_stacks_only else "both"),
        Option("-v", "--verbose", action="store_true", help="show raw addresses"),
        Option("-d", "--delimited", action="store_true", help="insert delimiter between kernel/user stacks"),
        Option("-f", "--folded", action="store_true", help="output folded format"),
        print_program("--debug", help="print BPF program before starting (for debugging purposes)"),
        Option("--filter", action="append", default=[], metavar="EXPR", kw="filters",
               help="count only hits whose fields satisfy EXPR, in the kernel (see pytrace count -h)"),
        Option("--stack-storage-size", type=stack_storage, default=STACK_STORAGE, metavar="N",
               kw="stack_storage", help=f"distinct stacks kept (default {STACK_STORAGE})"),
        Option("pattern", nargs="*", metavar="pattern", kw="patterns", type=pattern_arg,
               help="search expression for events: t:category:event (shell wildcards, or -r regular expressions)"),
    ),
    snapshot=snapshot,
    missed="hits not counted: the key table is full",
    text=text, intro=intro, between=between,
    replay_intro=lambda args, snap: header(args, int(snap.value("tracepoints", 0))),
    examples=(
        ("pytrace stackcount t:net:net_dev_xmit", "count kernel and user stacks for net_dev_xmit"),
        ("pytrace stackcount -d t:net:net_dev_xmit", "... with a delimiter between kernel and user stacks"),
        ("pytrace stackcount -K t:net:net_dev_xmit", "kernel stacks only"),
        ("pytrace stackcount -U t:syscalls:sys_enter_connect", "user stacks only"),
        ("pytrace stackcount -s t:net:net_dev_xmit", "show symbol offsets"),
        ("pytrace stackcount -sv t:net:net_dev_xmit", "show offsets and raw addresses (verbose)"),
        ("pytrace stackcount 't:net:net_dev_*'", "every tracepoint matching net_dev_*"),
        ("pytrace stackcount -r '^net:net_dev_(xmit|queue)$'", "the same with a regular expression"),
        ("pytrace stackcount -Ti 5 t:net:net_dev_xmit", "output every 5 seconds, with timestamps"),
        ("pytrace stackcount -p 185 t:net:net_dev_xmit", "only count stacks when PID 185 is on-CPU"),
        ("pytrace stackcount -c 1 t:sched:sched_switch", "only count stacks for CPU 1"),
        ("pytrace stackcount -f t:sched:sched_switch", "folded output, for flame graphs"),
    ),
)
