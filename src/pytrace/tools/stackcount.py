"""stackcount: count the stacks (kernel and/or user) that reach any tracepoints.

The same precompiled program as `pytrace count` (src/bpf/count.bpf.c), with
stack ids in the key: counted in the kernel, symbolized here (kernel frames
from /proc/kallsyms, user frames from the process's ELF files).

    pytrace stackcount net:net_dev_xmit -K          # transmit kernel stacks
    pytrace stackcount -U t:syscalls:sys_enter_connect

Library: TracepointCount(..., kernel_stack=True, user_stack=True) from
pytrace.tools.count; ProbeCount.kstack/ustack hold the return addresses.
User stacks need frame pointers in the traced code to go past the first frame.
"""

from __future__ import annotations

import errno
from typing import Any

from ..core import aggregate
from ..core.cliutil import (add_common, add_container_args, container_filters, intervals, process_id, seconds,
                            stack_storage)
from ..core.ksyms import kernel_symbols
from ..core.usyms import process_symbols
from ..sinks.snapshot import Series, Snapshot
from .count import (STACK_STORAGE, ProbeCount, TracepointCount, count_of, print_loop, probes, render_json,
                    series_of)

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

NAME = "stackcount"
OBJECT = "count"
SUMMARY = "count kernel/user stacks reaching tracepoints, counted in the kernel"


def frames(pc: ProbeCount) -> tuple[list[str], list[str]]:
    """(kernel frames, user frames), innermost first, symbolized."""
    k = kernel_symbols().stack(pc.kstack) if pc.kstack else []
    u = process_symbols(pc.pid).stack(pc.ustack) if pc.ustack and pc.pid is not None else []
    if pc.kstack is not None and not pc.kstack:
        k = [f"[missed kernel stack: {errno.errorcode.get(pc.kstack_error, pc.kstack_error)}]"]
    if pc.ustack is not None and not pc.ustack and pc.ustack_error:
        u = [f"[missed user stack: {errno.errorcode.get(pc.ustack_error, pc.ustack_error)}]"]
    return k, u


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Count the kernel and user stacks that hit tracepoints; stacks are counted in "
                     "the kernel and printed (fewest first) at the end or every interval.")
    p.add_argument("tracepoints", nargs="*", metavar="TRACEPOINT",
                   help="category:name (also t:category:name), shell wildcards allowed")
    p.add_argument("-p", "--pid", type=process_id, default=0, help="only this process")
    p.add_argument("-i", "--interval", type=seconds, metavar="SEC", help="print (and reset) every SEC seconds")
    p.add_argument("-D", "--duration", type=seconds, metavar="SEC", help="total run time in seconds")
    p.add_argument("-n", "--count", type=intervals, metavar="N", help="stop after N intervals")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    p.add_argument("-P", "--perpid", action="store_true", help="separate stacks per process")
    only = p.add_mutually_exclusive_group()
    only.add_argument("-K", "--kernel-stacks-only", action="store_true", help="kernel stacks only")
    only.add_argument("-U", "--user-stacks-only", action="store_true", help="user stacks only")
    p.add_argument("-d", "--delimited", action="store_true", help="a '--' line between kernel and user stacks")
    p.add_argument("-f", "--folded", action="store_true", help="folded output (for flame graphs)")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="count only hits whose fields satisfy EXPR, in the kernel (see pytrace count -h)")
    p.add_argument("--stack-storage-size", type=stack_storage, default=STACK_STORAGE, metavar="N",
                   help=f"distinct stacks kept (default {STACK_STORAGE})")
    add_container_args(p, TracepointCount)
    add_common(p, [v.hook for v in TracepointCount.VARIANTS])


# A row as printed: the counted key and its frames, symbolized (innermost first);
# None for a kind of stack not collected.
Row = tuple[ProbeCount, "list[str] | None", "list[str] | None"]


def stack_series(pc: ProbeCount) -> Series:
    """count's series plus the symbolized frames (one label per stack, a frame
    per line), so that replay needs no kallsyms and no process."""
    k, u = frames(pc)
    extra = {}
    if pc.kstack is not None:
        extra["kstack"] = "\n".join(k)
    if pc.ustack is not None:
        extra["ustack"] = "\n".join(u)
    return series_of(pc, extra)


def row_of(s: Series) -> Row:
    k, u = s.label("kstack"), s.label("ustack")
    return (count_of(s), None if k is None else [f for f in k.split("\n") if f],
            None if u is None else [f for f in u.split("\n") if f])


def render_text(rows: list[Row], args: argparse.Namespace, many: bool) -> str:
    lines = []
    for pc, k, u in rows:
        k, u = k or [], u or []
        if many:
            lines.append(f"  [{pc.tracepoint}]")
        lines.extend(f"  {f}" for f in k)
        if k and u and args.delimited:
            lines.append("    --")
        lines.extend(f"  {f}" for f in u)
        if pc.pid is not None:
            lines.append(f"    {pc.comm} [{pc.pid}]")
        lines.append(f"    {pc.count}\n")
    return "\n".join(lines) + ("\n" if lines else "")


def render_folded(rows: list[Row], args: argparse.Namespace) -> str:
    out = []
    for pc, k, u in rows:
        k, u = k or [], u or []
        head = [pc.comm] if pc.comm is not None else [pc.tracepoint]
        parts = head + u[::-1] + (["-"] if k and u and args.delimited else []) + k[::-1]
        out.append(f"{';'.join(parts)} {pc.count}\n")
    return "".join(out)


def to_json(row: Row) -> dict[str, Any]:
    pc, k, u = row
    d = pc.to_dict()
    if k is not None:
        d["kstack"] = k
    if u is not None:
        d["ustack"] = u
    return d


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    if args.json:
        return render_json(snap, lambda s: to_json(row_of(s)))
    rows = [row_of(s) for s in snap.series]
    text = render_folded(rows, args) if args.folded else render_text(rows, args, probes(snap) > 1)
    return aggregate.timestamp_line(snap, args) + text


def header_line(args: argparse.Namespace, n: int) -> str:
    if args.json or args.folded:
        return ""
    return f"Tracing {n} tracepoint{'s' if n > 1 else ''}... Hit Ctrl-C to end."


def replay_intro(args: argparse.Namespace, first: Snapshot) -> str:
    text = header_line(args, probes(first))
    return text + "\n" if text else ""


def run(args: argparse.Namespace) -> int:
    tracer = TracepointCount(args.tracepoints, filters=args.filter, pid=args.pid,
                             per_process=args.perpid, kernel_stack=not args.user_stacks_only,
                             user_stack=not args.kernel_stacks_only, kstack_skip=0,
                             stack_storage=args.stack_storage_size, hook=args.hook, **container_filters(args))
    with tracer:
        return print_loop(NAME, tracer, args, stack_series, render_snapshot,
                          header_line(args, len(tracer.names)))
