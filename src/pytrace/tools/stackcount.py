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

import argparse
import errno
from typing import Any

from ..core.cliutil import add_common, positive_int
from ..core.ksyms import kernel_symbols
from ..core.usyms import process_symbols
from .count import STACK_STORAGE, ProbeCount, TracepointCount, print_loop

NAME = "stackcount"
SINKS = False   # --record/--influx refused: its stacks are symbolized live: not yet replayable
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
    p.add_argument("-p", "--pid", type=positive_int, default=0, help="only this process")
    p.add_argument("-i", "--interval", type=positive_int, metavar="SEC", help="print (and reset) every SEC seconds")
    p.add_argument("-D", "--duration", type=positive_int, metavar="SEC", help="total run time in seconds")
    p.add_argument("-n", "--count", type=positive_int, metavar="N", help="stop after N intervals")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each output")
    p.add_argument("-P", "--perpid", action="store_true", help="separate stacks per process")
    only = p.add_mutually_exclusive_group()
    only.add_argument("-K", "--kernel-stacks-only", action="store_true", help="kernel stacks only")
    only.add_argument("-U", "--user-stacks-only", action="store_true", help="user stacks only")
    p.add_argument("-d", "--delimited", action="store_true", help="a '--' line between kernel and user stacks")
    p.add_argument("-f", "--folded", action="store_true", help="folded output (for flame graphs)")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="count only hits whose fields satisfy EXPR, in the kernel (see pytrace count -h)")
    p.add_argument("--stack-storage-size", type=positive_int, default=STACK_STORAGE, metavar="N",
                   help=f"distinct stacks kept (default {STACK_STORAGE})")
    add_common(p, [v.hook for v in TracepointCount.VARIANTS])


def render_text(counts: list[ProbeCount], args: argparse.Namespace, many: bool) -> str:
    lines = []
    for pc in counts:
        k, u = frames(pc)
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


def render_folded(counts: list[ProbeCount], args: argparse.Namespace) -> str:
    out = []
    for pc in counts:
        k, u = frames(pc)
        head = [pc.comm] if pc.comm is not None else [pc.tracepoint]
        parts = head + u[::-1] + (["-"] if k and u and args.delimited else []) + k[::-1]
        out.append(f"{';'.join(parts)} {pc.count}\n")
    return "".join(out)


def to_json(pc: ProbeCount) -> dict[str, Any]:
    k, u = frames(pc)
    d = pc.to_dict()
    if pc.kstack is not None:
        d["kstack"] = k
    if pc.ustack is not None:
        d["ustack"] = u
    return d


def run(args: argparse.Namespace) -> int:
    tracer = TracepointCount(args.tracepoints, filters=args.filter, pid=args.pid,
                             per_process=args.perpid, kernel_stack=not args.user_stacks_only,
                             user_stack=not args.kernel_stacks_only, kstack_skip=0,
                             stack_storage=args.stack_storage_size, hook=args.hook)
    with tracer:
        many = len(tracer.names) > 1
        header = "" if args.json or args.folded else \
            f"Tracing {len(tracer.names)} tracepoint{'s' if many else ''}... Hit Ctrl-C to end."
        if args.folded:
            return print_loop(tracer, args, lambda counts: render_folded(counts, args), to_json, header)
        return print_loop(tracer, args, lambda counts: render_text(counts, args, many), to_json, header)
