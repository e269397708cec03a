"""count: count hits of any tracepoints, per probe (and per field values) per interval.

One precompiled program (src/bpf/count.bpf.c) serves every tracepoint: it is
attached once per tracepoint, with the probe's index as the BPF cookie.  A
filter and a key over the tracepoints' fields run in the kernel; the fields'
offsets come from tracefs format files, so no compiler is involved:

    pytrace count net:net_dev_xmit net:netif_receive_skb -i 1
    pytrace count syscalls:sys_exit_connect --filter 'ret < 0' --by ret   # failed connects by errno

Library:

    from pytrace.tools.count import TracepointCount
    with TracepointCount(["syscalls:sys_exit_connect"], by=["ret"], filters=["ret<0"]) as c:
        time.sleep(5)
        for pc in c.counts():              # ProbeCount, frozen
            print(pc.tracepoint, pc.key, pc.count)
        for h in c.hits():                 # TracepointHits (the CLI's rows: key a dict)
            print(h.tracepoint, h.key, h.count)

`pytrace stackcount` uses the same class with kernel/user stacks in the key
(ProbeCount and the snapshot helpers below are its).  User stacks are kept
by build id (the ustacks map), so a process that exited is still named.
"""

from __future__ import annotations

import ctypes as C
import errno
import struct
from dataclasses import dataclass
from typing import Any, Sequence

from ..core import libbpf, privileges, tracefs, tracepoints as tp

from ..cli import aggregate
from ..core.bpfobject import BpfObject
from ..core.errors import PytraceError, UsageError
from ..core.ksyms import kernel_symbols
from ..core.loader import Variant
from ..core.tracer import TASK_SCOPE, Tracer
from ..core.usyms import read_build_id_stack, read_stack
from ..sinks.snapshot import Series, Snapshot
from ..spec import TABLE, EventType, Option, ToolSpec, interval_flags, pid, public_classes, timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see cli/argparser.py)
    import argparse

NAME = "count"
SUMMARY = "count tracepoint hits per probe (and per field values), filter in the kernel"

# as in src/bpf/count.bpf.c
MAX_PROBES, MAX_CONDS, MAX_KEYS, VAL_LEN, MAX_STACK_DEPTH = 1024, 4, 4, 32, 127
STACK_STORAGE = 8192
# tracepoints that get a program each (count_tracepoint_<i>): more than that
# share count_tracepoint and tell themselves apart by BPF cookie (Linux 5.15+)
FIXED_PROBES = 16
KeyValue = int | str

# A row of the counts map as the CLI shows it: the key struct count_key (its
# probe index and --by values resolved by the tracer), the value the count
TRACEPOINT_HITS = EventType("TracepointHits", map="counts", doc="Hits of one tracepoint with one key.", fields="""
    tracepoint <- probe: resolved   # "category:name"
    key <- vals: fields             # {field: value} of the --by fields
    pid                             # with per-process keys (-P), else None
    comm: text
    count <- value
    -kstack
    -ustack
""")


@dataclass(frozen=True, slots=True)
class ProbeCount:
    tracepoint: str                           # "category:name"
    key: tuple[tuple[str, KeyValue], ...]     # (field, value) per --by field
    count: int
    pid: int | None = None                    # with per-process keys
    comm: str | None = None
    kstack: tuple[int, ...] | None = None     # kernel return addresses, innermost first
    ustack: tuple[int, ...] | None = None
    kstack_error: int = 0                     # errno when the stack could not be kept
    ustack_error: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tracepoint": self.tracepoint, "count": self.count}
        if self.key:
            d["key"] = dict(self.key)
        if self.pid is not None:
            d["pid"], d["comm"] = self.pid, self.comm
        return d


__getattr__ = public_classes(__name__, TracepointHits=TRACEPOINT_HITS)


class TracepointCount(Tracer):
    OBJECT = "count"
    TOOL = "count"
    SCOPE = TASK_SCOPE
    VARIANTS = (Variant("tracepoint", ("count_tracepoint",)),)

    def __init__(self, tracepoints: Sequence[str], *, by: Sequence[str] = (),
                 filters: Sequence[str] = (), pid: int = 0, per_process: bool = False,
                 kernel_stack: bool = False, user_stack: bool = False, kstack_skip: int = 0,
                 stack_storage: int = STACK_STORAGE, max_keys: int = 10240, cpu: int | None = None,
                 hook: str | None = None, **scope: Any):
        """cpu: count only the hits on this CPU (stackcount -c)."""
        super().__init__(hook=hook, **scope)
        self.cpu = cpu
        if not tracepoints:
            raise UsageError("name at least one tracepoint (e.g. net:net_dev_xmit)")
        self.specs = list(tracepoints)
        self.by = [b.strip() for b in by]
        wrong = by_fields_wrong(self.by)
        if wrong:
            raise UsageError(f"--by: {wrong}")
        self.conds: list[tp.Cond] = [c for f in filters for c in tp.parse_filter(f)]
        if len(self.conds) > MAX_CONDS:
            raise UsageError(f"--filter: at most {MAX_CONDS} conditions")
        self.pid = pid
        self.kernel_stack, self.user_stack = kernel_stack, user_stack
        # a user stack means nothing without its process: keep pids with them
        self.per_process = per_process or user_stack
        self.kstack_skip, self.stack_storage, self.max_keys = kstack_skip, stack_storage, max_keys
        self.names: list[str] = []
        self.key_fields: list[list[tp.TpField]] = []
        self._mounted = False

    # -- compile the command line against this kernel's tracepoints ---------------
    def _compile(self) -> dict[str, Any]:
        self.names = tp.resolve(self.specs)
        if len(self.names) > MAX_PROBES:
            raise UsageError(f"{len(self.names)} tracepoints match: at most {MAX_PROBES}")
        cond_refs = [0] * (MAX_PROBES * MAX_CONDS)
        key_refs = [0] * (MAX_PROBES * MAX_KEYS)
        self.key_fields = []
        for i, name in enumerate(self.names):
            fields = tp.record_format(name)
            for j, cond in enumerate(self.conds):
                f = tp.field_for(cond.field, name, fields, f"filter '{cond.text}'")
                tp.check_cond(cond, f, name)
                cond_refs[i * MAX_CONDS + j] = f.ref()
            kf = [tp.field_for(b, name, fields, "--by") for b in self.by]
            for j, f in enumerate(kf):
                key_refs[i * MAX_KEYS + j] = f.ref()
            self.key_fields.append(kf)
        strs = b"".join((c.value if isinstance(c.value, bytes) else b"").ljust(VAL_LEN, b"\0")
                        for c in self.conds).ljust(MAX_CONDS * VAL_LEN, b"\0")
        return {
            "cond_refs": cond_refs, "key_refs": key_refs,
            "n_conds": len(self.conds), "n_keys": len(self.by),
            "cond_ops": bytes(tp.OP_CODES[c.op] for c in self.conds),
            "cond_ints": [c.value if isinstance(c.value, int) else 0 for c in self.conds],
            "cond_strs": list(struct.unpack(f"<{MAX_CONDS * VAL_LEN // 8}Q", strs)),
            "targ_tgid": self.pid, "per_process": self.per_process,
            "kernel_stacks": self.kernel_stack, "user_stacks": self.user_stack,
            "kstack_skip": self.kstack_skip, "targ_cpu": -1 if self.cpu is None else self.cpu,
        }

    def rodata(self) -> dict[str, Any]:
        return self._rodata

    def map_sizes(self) -> dict[str, int]:
        return {"stacks": self.stack_storage if self.kernel_stack else 1,
                "ustacks": self.stack_storage if self.user_stack else 1, "counts": self.max_keys}

    def _programs(self) -> tuple[str, ...]:
        """A program each for a few tracepoints; one shared by cookie for many."""
        if len(self.names) <= FIXED_PROBES:
            return tuple(f"count_tracepoint_{i}" for i in range(len(self.names)))
        from ..core import kernel_btf
        if "BPF_FUNC_get_attach_cookie" not in kernel_btf.enum_values("bpf_func_id").values():
            raise PytraceError(f"{len(self.names)} tracepoints match: without BPF cookies (Linux 5.15+) "
                               f"this kernel takes at most {FIXED_PROBES} at once")
        return ("count_tracepoint",)

    def attach(self, obj: BpfObject, variant: Variant) -> None:
        lb = libbpf.lib()
        shared = variant.programs == ("count_tracepoint",)
        for i, name in enumerate(self.names):
            cat, ev = name.split(":")
            prog = obj.program(variant.programs[0 if shared else i])
            opts = libbpf.TracepointOpts(sz=C.sizeof(libbpf.TracepointOpts), bpf_cookie=i) if shared else None
            link = libbpf.check_ptr(lb.bpf_program__attach_tracepoint_opts(
                prog, cat.encode(), ev.encode(), opts), f"attach to tracepoint {name}")
            obj.keep_link(link)

    def open(self):
        # tracefs is needed before load: to list the tracepoints and read their formats
        privileges.require(self.TOOL)
        self._mounted = tracefs.ensure()
        try:
            self._rodata = self._compile()
            # this instance's programs (what the loader loads): see _programs
            self.VARIANTS = (Variant("tracepoint", self._programs()),)
            super().open()
        except BaseException:
            self._unmount()
            raise
        return self

    def setup(self) -> None:
        self._counts = self.obj.map("counts")
        self._stacks = self.obj.map("stacks")
        self._ustacks = self.obj.map("ustacks")
        self._dropped = self.obj.global_u64("dropped")
        self._key_layout = self.obj.types.struct("count_key")

    def close(self) -> None:
        # Each tracepoint detach waits for an RCU grace period (tens of ms) in
        # the kernel; overlapping them in threads halves the wait for wildcards.
        if self.obj is not None and len(self.obj.links) > 8:
            from concurrent.futures import ThreadPoolExecutor
            links, self.obj.links = self.obj.links, []
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(libbpf.lib().bpf_link__destroy, links))
        super().close()
        self._unmount()

    def _unmount(self) -> None:
        if self._mounted:
            tracefs.unmount()
            self._mounted = False

    @property
    def dropped(self) -> int:
        """Hits not counted because the key table was full (since open)."""
        return self._dropped.value if self.obj else 0

    # -- reading ---------------------------------------------------------------------
    def _stack(self, sid: int) -> tuple[tuple[int, ...] | None, int]:
        return read_stack(self._stacks, sid, MAX_STACK_DEPTH)

    def _key_values(self, probe: int, vals: bytes) -> tuple[tuple[str, KeyValue], ...]:
        out = []
        for j, f in enumerate(self.key_fields[probe]):
            chunk = vals[j * VAL_LEN:(j + 1) * VAL_LEN]
            if f.is_str:
                out.append((f.name, chunk.split(b"\0", 1)[0].decode(errors="replace")))
            else:
                v = struct.unpack_from("<q", chunk)[0]
                if not f.signed:
                    v &= (1 << 64) - 1
                out.append((f.name, v))
        return tuple(out)

    def _user_stack(self, sid: int) -> tuple[tuple | None, int]:
        """(build id, file offset) frames, or (None, address) (core/usyms.read_build_id_stack)."""
        return read_build_id_stack(self._ustacks, sid, MAX_STACK_DEPTH)

    def _kernel_stack(self, sid: int) -> tuple[tuple[int, ...] | None, int]:
        addrs, err = self._stack(sid)
        if addrs:
            # With more than one probe on a tracepoint (another tracer's tp_btf,
            # say) the kernel calls ours through __traceiter_<tp>, which then
            # tops the stack: drop it, so the firing function comes first either way.
            ksyms = kernel_symbols()
            while addrs and ksyms.function(addrs[0]).startswith("__traceiter_"):
                addrs = addrs[1:]
        return addrs, err

    def counts(self, clear: bool = False) -> list[ProbeCount]:
        """Every (probe, key) counted, fewest first; clear=True starts a new interval."""
        items = self._counts.items()
        merged: dict[tuple, list] = {}
        for kraw, vraw in items:
            k = self._key_layout.decode(kraw)
            probe = k["probe"]
            if probe >= len(self.names):
                continue
            kst, kerr = self._kernel_stack(k["kstack"])
            ust, uerr = self._user_stack(k["ustack"])
            pid = k["pid"] if self.per_process else None
            comm = k["comm"].split(b"\0", 1)[0].decode(errors="replace") if self.per_process else None
            ident = (self.names[probe], self._key_values(probe, k["vals"]), pid, comm, kst, ust, kerr, uerr)
            # stacks that differ only in the dropped frames count as one
            merged.setdefault(ident, [0])[0] += struct.unpack("<Q", vraw)[0]
        out = [ProbeCount(tpn, key, n, pid, comm, kst, ust, kerr, uerr)
               for (tpn, key, pid, comm, kst, ust, kerr, uerr), (n,) in merged.items()]
        if clear:
            for kraw, _ in items:
                self._counts.delete(kraw)
            if self.kernel_stack:
                self._stacks.clear()
            if self.user_stack:
                self._ustacks.clear()
        out.sort(key=lambda pc: (pc.count, pc.tracepoint, pc.key))
        return out

    def hits(self, clear: bool = False) -> list:
        """counts() as TracepointHits rows (key a dict), fewest first."""
        return [hit_of(pc) for pc in self.counts(clear)]

    def totals(self) -> dict[str, int]:
        """{tracepoint: hits} over every key (without clearing)."""
        out: dict[str, int] = {n: 0 for n in self.names}
        for pc in self.counts():
            out[pc.tracepoint] += pc.count
        return out


def errno_note(field: str, v: KeyValue) -> str:
    """ret/err fields that are negative errnos get the errno's name."""
    if isinstance(v, int) and v < 0 and field in ("ret", "err", "error", "rc") and -v in errno.errorcode:
        return f"{v} ({errno.errorcode[-v]})"
    return str(v)


# -- snapshots: what --record/--influx get and what replay renders ---------------------
# A series per ProbeCount: labels tracepoint, pid/comm (with -P) and "key.<field>"
# per --by field (prefixed: a tracepoint may have fields named pid or comm);
# values count and, when some key values are strings, str_keys (a bitmask over
# the key's positions) so replay gives each key value back its type.  The
# snapshot's own values: "tracepoints", how many the specs resolved to live,
# and "missed", the hits not counted because the key table was full.

def series_of(pc: ProbeCount, extra: dict[str, str] | None = None) -> Series:
    labels: dict[str, Any] = {"tracepoint": pc.tracepoint}
    if pc.pid is not None:
        labels["pid"], labels["comm"] = pc.pid, pc.comm
    labels.update((f"key.{f}", v) for f, v in pc.key)
    labels.update(extra or {})
    values: dict[str, int] = {"count": pc.count}
    mask = sum(1 << j for j, (_, v) in enumerate(pc.key) if isinstance(v, str))
    if mask:
        values["str_keys"] = mask
    return Series.of(labels, values)


def count_of(s: Series) -> ProbeCount:
    labels, values = dict(s.labels), dict(s.values)
    mask = int(values.get("str_keys", 0))
    key = tuple((n[4:], v if mask >> j & 1 else int(v))
                for j, (n, v) in enumerate((n, v) for n, v in s.labels if n.startswith("key.")))
    pid = int(labels["pid"]) if "pid" in labels else None
    return ProbeCount(labels["tracepoint"], key, int(values["count"]), pid, labels.get("comm"))


def hit_of(pc: ProbeCount) -> Any:
    """A ProbeCount as the generated row the CLI prints (TracepointHits)."""
    return TRACEPOINT_HITS.cls(pc.tracepoint, dict(pc.key), pc.pid, pc.comm, pc.count)


def probes(snap: Snapshot) -> int:
    return int(snap.value("tracepoints", 0))


def interval_snapshot(tool: str, tracer: TracepointCount, args: Any, series=series_of) -> Snapshot:
    counts = tracer.counts(clear=bool(args.interval))
    return Snapshot.now(tool, [series(pc) for pc in counts], args.interval,
                        {"tracepoints": len(tracer.names), "missed": tracer.dropped})


def header_line(args: argparse.Namespace, n: int) -> str:
    if args.json:
        return ""
    return (f"Tracing {n} tracepoint{'s' if n != 1 else ''}"
            f"{' for ' + repr(' '.join(args.tracepoints)) if n != len(args.tracepoints) else ''}"
            "... Hit Ctrl-C to end.")


def text(snap: Snapshot, args: argparse.Namespace) -> str:
    counts = [count_of(s) for s in snap.series]
    by = [b for b in args.by.split(",") if b.strip()]
    width = max([36, *(len(pc.tracepoint) for pc in counts)])
    head = f"{'TRACEPOINT':<{width}}"
    if args.perpid:
        head += f" {'PID':>7} {'COMM':<16}"
    for b in by:
        head += f" {b.upper():<20}"
    lines = [head + f" {'COUNT':>8}"]
    for pc in counts:
        line = f"{pc.tracepoint:<{width}}"
        if args.perpid:
            line += f" {pc.pid:>7} {pc.comm:<16}"
        for field, v in pc.key:
            line += f" {errno_note(field, v):<20}"
        lines.append(line + f" {pc.count:>8}")
    return aggregate.timestamp_line(snap, args) + "\n".join(lines) + "\n\n"


def tracepoint_spec(text: str) -> str:
    """An argparse type: category:name (t:category:name, category/name), wildcards allowed."""
    from ..cli.cliutil import bad_value
    name = tp.normalize(text)
    if name.count(":") != 1 or not all(name.split(":")):
        raise bad_value(f"'{text}': write a tracepoint as category:name (e.g. net:net_dev_xmit)")
    return text


def field_list(text: str) -> str:
    """An argparse type for --by: a comma list of at most MAX_KEYS distinct
    field names (blank: none, the default).  An empty name is refused: ","
    and "len,,rc" were taken for fewer fields than written.  Whether the
    tracepoints have the fields is known when they are resolved."""
    from ..cli.cliutil import bad_value
    if not text.strip():
        return text
    wrong = by_fields_wrong([b.strip() for b in text.split(",")])
    if wrong:
        raise bad_value(f"'{text}': {wrong} (a comma list of record fields, e.g. len,name)")
    return text


def by_fields_wrong(names: list[str]) -> str | None:
    """What is wrong with --by's field names (TracepointCount's `by`), if anything."""
    if not all(names):
        return "an empty field name"
    if len(names) > MAX_KEYS:
        return f"at most {MAX_KEYS} fields"
    if len(set(names)) != len(names):
        return "a field is named twice"
    return None


def _by(args: Any) -> list[str]:
    return [b for b in args.by.split(",") if b.strip()]


SPEC = ToolSpec(
    "count", SUMMARY, TracepointCount, TABLE,
    description=("Count hits of tracepoints per probe (and per field values with --by), "
                 "printed at the end or every interval. Filters and keys run in the kernel."),
    event=TRACEPOINT_HITS,
    labels=("tracepoint", "key", "pid", "comm"), values=("count",),
    options=(
        Option("tracepoints", nargs="*", metavar="TRACEPOINT", kw="tracepoints", type=tracepoint_spec,
               help="category:name (also t:category:name), shell wildcards allowed, "
                    "e.g. net:net_dev_xmit 'syscalls:sys_exit_conn*'"),
        pid("only this process"),
        *interval_flags(),
        timestamp(),
        Option("--filter", action="append", default=[], metavar="EXPR", kw="filters",
               help="count only hits whose fields satisfy EXPR, evaluated in the kernel: "
                    "FIELD OP VALUE joined by &&, OP one of == != < <= > >= & ; VALUE a number, "
                    "an errno name (-ECONNREFUSED) or a string (e.g. 'ret < 0', 'name == lo')"),
        Option("--by", default="", metavar="FIELDS", kw="by", value=_by, type=field_list,
               help=f"also key the counts by these record fields (comma list, at most {MAX_KEYS})"),
        Option("-P", "--perpid", action="store_true", kw="per_process", help="count per process too"),
    ),
    snapshot=lambda tracer, args: interval_snapshot("count", tracer, args),
    rows=lambda snap: [hit_of(count_of(s)) for s in snap.series],
    missed="hits not counted: the key table is full",
    text=text,
    intro=lambda args, tracer: (header_line(args, len(tracer.names)) + "\n") if not args.json else "",
    replay_intro=lambda args, snap: header_line(args, probes(snap)) + "\n",
    examples=(
        ("pytrace count net:net_dev_xmit net:netif_receive_skb -i 1", "packets sent and received, every second"),
        ("pytrace count syscalls:sys_exit_connect --filter 'ret < 0' --by ret", "failed connects by errno"),
        ("pytrace count 'syscalls:sys_enter_conn*' -P -d 10", "connect calls per process, for 10 seconds"),
        ("pytrace count net:net_dev_xmit --by name -c 5 -i 2", "transmits per device, every 2 s, 5 times"),
        ("pytrace count tcp:tcp_retransmit_skb --json", "one JSON object per tracepoint and key"),
    ),
)
