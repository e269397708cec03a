"""nstat: deltas of the kernel's SNMP and extended network counters per interval.

No BPF: the counters are /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6
of a network namespace (ours, or --netns).  This is the first step of the
networking method: cheap counters before tracing.  The counters the BPF
Performance Tools networking chapter names (retransmits, listen overflows
and drops, resets, errors) are marked.

Library:

    from pytrace.tools.nstat import NetStat
    ns = NetStat(patterns=["Tcp*"])
    ns.sample()                      # primes the baseline (deltas since boot)
    time.sleep(1)
    for c in ns.sample():            # NstatSample of CounterDelta: deltas since the previous sample
        print(c.name, c.delta, c.rate, c.key)
"""

from __future__ import annotations

import fnmatch
import re
import time
from typing import Any, Iterable, Iterator

from ..cli.aggregate import local_time
from ..cli.cliutil import bad_value, netns_ref
from ..core.errors import PytraceError
from ..sinks.snapshot import Series, Snapshot
from ..spec import TABLE, EventType, Option, ToolSpec, interval_flags, public_classes, timestamp


NAME = "nstat"
SUMMARY = "deltas of the kernel's SNMP/netstat counters (no BPF), key counters marked"

FILES = ("snmp", "netstat", "snmp6")

# Settings and gauges rather than counters: a delta of them means nothing
# (iproute2's nstat leaves the same ones out).
GAUGES = frozenset({"IpForwarding", "IpDefaultTTL", "TcpRtoAlgorithm", "TcpRtoMin", "TcpRtoMax",
                    "TcpMaxConn", "TcpCurrEstab", "Ip6Forwarding"})

# The counters the chapter tells you to look at first.
KEY_RE = re.compile(r"Retrans|ListenOverflows|ListenDrops|Rst|Reset|Err|Drop|Fail|Abort|Timeout|"
                    r"NoPorts|Overflow|Prune|Discard")


def is_key(name: str) -> bool:
    """Is this one of the highlighted counters (retransmits, overflows, drops, resets, errors)?"""
    return bool(KEY_RE.search(name))


def parse(text: str, table: str) -> dict[str, int]:
    """One /proc/net file's text -> {nstat name: value}.

    snmp and netstat come as pairs of lines ("Tcp: ActiveOpens ..." then
    "Tcp: 5 ..."), named prefix+field like nstat does; snmp6 has one
    "Ip6InReceives  499" per line.
    """
    out: dict[str, int] = {}
    lines = text.splitlines()
    if table == "snmp6":
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
        return out
    for head, vals in zip(lines[::2], lines[1::2]):
        hp, vp = head.split(), vals.split()
        if not hp or hp[0] != vp[0] or len(hp) != len(vp):
            continue
        prefix = hp[0].rstrip(":")
        for field, value in zip(hp[1:], vp[1:]):
            if value.lstrip("-").isdigit():
                out[prefix + field] = int(value)
    return out


def read_counters(netns: str | None = None) -> dict[str, int]:
    """Every counter of the namespace now, by nstat name (gauges left out)."""
    def read() -> dict[str, int]:
        out: dict[str, int] = {}
        for table in FILES:
            # thread-self: /proc/self/net would show the main thread's namespace
            try:
                with open(f"/proc/thread-self/net/{table}") as fh:
                    out.update(parse(fh.read(), table))
            except FileNotFoundError:
                continue  # no IPv6 in this kernel
            except OSError as exc:
                raise PytraceError(f"cannot read /proc/net/{table}: {exc.strerror}") from None
        return {k: v for k, v in out.items() if k not in GAUGES}

    if not netns:
        return read()
    from ..core.netattach import in_netns
    try:
        with in_netns(netns):
            return read()
    except PermissionError:
        raise PytraceError(f"entering netns {netns} needs root (CAP_SYS_ADMIN)") from None


# One counter's change over a sample: no BPF, so the type is declared here alone
COUNTER_DELTA = EventType("CounterDelta", standalone=True, doc="One counter's change over a sample.", fields="""
    name: str           # nstat name, e.g. TcpExtListenOverflows
    delta               # change since the previous sample (since boot for the first)
    total               # value now
    rate: float3        # delta per second over the sample's interval
    key: bool           # one of the chapter's counters (retransmits, overflows, drops, resets, errors)
""")


class NstatSample:
    """The deltas of one sample (CounterDelta rows), with when it was taken."""

    __slots__ = ("ts", "interval", "counters")

    def __init__(self, ts: float, interval: float | None, counters: tuple):
        self.ts = ts                   # time.time() of the sample
        self.interval = interval       # seconds since the previous sample (None: since boot)
        self.counters = counters

    def __iter__(self) -> Iterator[Any]:
        return iter(self.counters)

    def get(self, name: str) -> Any:
        for c in self.counters:
            if c.name == name:
                return c
        return None

    def deltas(self) -> dict[str, int]:
        return {c.name: c.delta for c in self.counters}


class NetStat:
    """Samples the counters; each sample holds the deltas since the previous one.
    (No BPF: OBJECT names its generated types, VARIANTS is empty.)"""

    OBJECT = "nstat"
    VARIANTS = ()

    def __init__(self, patterns: Iterable[str] = (), netns: str | None = None, zeros: bool = False,
                 key_only: bool = False, hook: str | None = None):
        self.patterns = list(patterns)
        self.netns, self.zeros, self.key_only = netns, zeros, key_only
        self._prev: dict[str, int] | None = None
        self._prev_t: float | None = None

    def wanted(self, name: str) -> bool:
        if self.key_only and not is_key(name):
            return False
        return not self.patterns or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def sample(self) -> NstatSample:
        now_t = time.monotonic()
        now = read_counters(self.netns)
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = now, now_t
        interval = None if prev_t is None else max(now_t - prev_t, 1e-9)
        make = COUNTER_DELTA.cls
        out = []
        for name, total in now.items():
            if not self.wanted(name):
                continue
            delta = total - (prev or {}).get(name, 0)
            if delta == 0 and not self.zeros:
                continue
            rate = delta / interval if interval else 0.0
            out.append(make(name, delta, total, rate, is_key(name)))
        return NstatSample(time.time(), interval, tuple(out))

    # opened and closed as the tools' tracers are (nothing to release)
    def open(self) -> NetStat:
        return self

    def close(self) -> None:
        pass

    def __enter__(self) -> NetStat:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- command line ---------------------------------------------------------------

def pattern(text: str) -> str:
    """An argparse type: a shell pattern that names at least one counter (the
    counters' names are the same in every namespace; a pattern that matches
    none would print nothing, never saying why)."""
    if not re.fullmatch(r"[A-Za-z0-9_*?\[\]!-]+", text):
        raise bad_value(f"'{text}' is not a counter name pattern (e.g. TcpExt* or *Retrans*)")
    from ..cli.cliutil import checking_host
    if checking_host() and not any(fnmatch.fnmatchcase(name, text) for name in read_counters()):
        raise bad_value(f"'{text}' matches no counter (e.g. TcpExt*, *Retrans*, TcpActiveOpens)")
    return text


__getattr__ = public_classes(__name__, CounterDelta=COUNTER_DELTA)


def snapshot(ns: NetStat, args: Any) -> Snapshot:
    """One series per counter (labels name, key); time and interval are the sample's own."""
    sample = ns.sample()
    return Snapshot(NAME, int(sample.ts * 1e9),
                    tuple(Series.of({"name": c.name, "key": c.key}, {"delta": c.delta, "total": c.total,
                                                                    "rate": c.rate}) for c in sample),
                    sample.interval, (), time.monotonic_ns())


def intro(args: Any) -> str:
    if args.absolute:
        return "#kernel\n"
    return (f"#kernel: counter changes every {args.interval} s "
            "(* = retransmits, listen overflows/drops, resets, errors). Ctrl-C to end.\n")


def text(snap: Snapshot, args: Any) -> str:
    lines = []
    if args.timestamp:
        span = f" ({snap.interval:.2f} s)" if snap.interval else " (since boot)"
        lines.append(local_time(snap) + span)
    for c in SPEC.rows(snap):
        lines.append(f"{'*' if c.key else ' '} {c.name:<32} {c.delta:<16} {c.rate:.1f}")
    return "\n".join(lines) + ("\n" if lines else "")


class _NetStatPrimed(NetStat):
    """The CLI's sampler: its first sample (deltas since boot) is taken when it
    starts, so the first interval shows the changes during it (-a: since boot)."""

    def __init__(self, *, absolute: bool = False, **kw: Any):
        super().__init__(**kw)
        self.absolute = absolute

    def open(self) -> NetStat:
        if not self.absolute:
            self.sample()
        return self


_EVERY, _COUNT, _DURATION = interval_flags()

SPEC = ToolSpec(
    "nstat", SUMMARY, _NetStatPrimed, TABLE,
    description=("Print the changes of the kernel's network counters (/proc/net/snmp, netstat, "
                 "snmp6) every interval, like nstat. No BPF. Marked with * are the counters to "
                 "look at first: retransmits, listen overflows and drops, resets, errors."),
    event=COUNTER_DELTA,
    labels=("name", "key"), values=("delta", "total", "rate"),
    options=(
        Option("patterns", nargs="*", type=pattern, metavar="PATTERN", kw="patterns",
               help="only counters matching these shell patterns (e.g. 'TcpExt*' '*Retrans*')"),
        _EVERY.but(default=1, help="print every SEC seconds (default 1)"), _COUNT, _DURATION,
        Option("-a", "--absolute", action="store_true", kw="absolute",
               help="print the values since boot once and exit"),
        Option("-z", "--zeros", action="store_true", kw="zeros", help="also show counters that did not change"),
        Option("-k", "--key", action="store_true", kw="key_only", help="only the marked (key) counters"),
        timestamp("print a timestamp with each interval"),
        Option("-N", "--netns", metavar="NS", type=netns_ref, kw="netns",
               help="counters of this network namespace (ip netns name, path or inode)"),
    ),
    snapshot=snapshot, text=text, intro=intro, exported=("total",),
    immediate=lambda args: args.absolute,
    examples=(
        ("pytrace nstat", "every second, the counters that changed"),
        ("pytrace nstat -k -T", "only the key counters, with the time"),
        ("pytrace nstat 'TcpExt*' -i 5 -c 12", "TcpExt counters, every 5 seconds for a minute"),
        ("pytrace nstat -a Tcp*", "the Tcp counters' values since boot, once"),
        ("pytrace nstat --json", "one JSON object per counter and interval"),
    ),
)
