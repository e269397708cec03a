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
    for c in ns.sample():            # NstatSample: deltas since the previous sample
        print(c.name, c.delta, c.rate, c.key)
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ..core.aggregate import local_time, print_loop
from ..core.cliutil import add_sink_args, bad_value, intervals, netns_ref, publish, seconds
from ..core.errors import PytraceError
from ..sinks.snapshot import Series, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations only (start-up time: see core/argparser.py)
    import argparse

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


@dataclass(frozen=True, slots=True)
class CounterDelta:
    name: str          # nstat name, e.g. TcpExtListenOverflows
    delta: int         # change since the previous sample (since boot for the first)
    total: int         # value now
    rate: float        # delta per second over the sample's interval
    key: bool          # one of the chapter's counters (retransmits, overflows, drops, resets, errors)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "delta": self.delta, "total": self.total,
                "rate": round(self.rate, 3), "key": self.key}


@dataclass(frozen=True, slots=True)
class NstatSample:
    ts: float                          # time.time() of the sample
    interval: float | None             # seconds since the previous sample (None: since boot)
    counters: tuple[CounterDelta, ...]

    def __iter__(self) -> Iterator[CounterDelta]:
        return iter(self.counters)

    def get(self, name: str) -> CounterDelta | None:
        for c in self.counters:
            if c.name == name:
                return c
        return None

    def deltas(self) -> dict[str, int]:
        return {c.name: c.delta for c in self.counters}


class NetStat:
    """Samples the counters; each sample holds the deltas since the previous one."""

    def __init__(self, patterns: Iterable[str] = (), netns: str | None = None, zeros: bool = False,
                 key_only: bool = False):
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
        out = []
        for name, total in now.items():
            if not self.wanted(name):
                continue
            delta = total - (prev or {}).get(name, 0)
            if delta == 0 and not self.zeros:
                continue
            rate = delta / interval if interval else 0.0
            out.append(CounterDelta(name, delta, total, rate, is_key(name)))
        return NstatSample(time.time(), interval, tuple(out))


# -- command line ---------------------------------------------------------------

def pattern(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_*?\[\]!-]+", text):
        raise bad_value(f"'{text}' is not a counter name pattern (e.g. TcpExt* or *Retrans*)")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Print the changes of the kernel's network counters (/proc/net/snmp, netstat, "
                     "snmp6) every interval, like nstat. No BPF. Marked with * are the counters to "
                     "look at first: retransmits, listen overflows and drops, resets, errors.")
    p.add_argument("patterns", nargs="*", type=pattern, metavar="PATTERN",
                   help="only counters matching these shell patterns (e.g. 'TcpExt*' '*Retrans*')")
    p.add_argument("-i", "--interval", type=seconds, default=1, metavar="SEC",
                   help="print every SEC seconds (default 1)")
    p.add_argument("-c", "--count", type=intervals, metavar="N", help="stop after N intervals")
    p.add_argument("-d", "--duration", type=seconds, metavar="SEC", help="total run time in seconds")
    p.add_argument("-a", "--absolute", action="store_true",
                   help="print the values since boot once and exit")
    p.add_argument("-z", "--zeros", action="store_true", help="also show counters that did not change")
    p.add_argument("-k", "--key", action="store_true", help="only the marked (key) counters")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp with each interval")
    p.add_argument("-N", "--netns", metavar="NS", type=netns_ref,
                   help="counters of this network namespace (ip netns name, path or inode)")
    g = p.add_argument_group("pytrace options")
    g.add_argument("--json", action="store_true", help="one JSON object per counter and interval")
    g.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    add_sink_args(g)


# -- snapshots: what the sinks get each interval, and what replay renders -------

def snapshot(sample: NstatSample) -> Snapshot:
    """One series per counter (labels name, key); the interval is the sample's own (None: since boot)."""
    return Snapshot(NAME, int(sample.ts * 1e9),
                    tuple(Series.of({"name": c.name, "key": int(c.key)},
                                    {"delta": c.delta, "total": c.total, "rate": c.rate}) for c in sample),
                    sample.interval)


def intro(args: argparse.Namespace) -> str:
    if args.json:
        return ""
    if args.absolute:
        return "#kernel\n"
    return (f"#kernel: counter changes every {args.interval} s "
            "(* = retransmits, listen overflows/drops, resets, errors). Ctrl-C to end.\n")


def render_snapshot(snap: Snapshot, args: argparse.Namespace) -> str:
    rows = [(s.label("name"), s.label("key") == "1", dict(s.values)) for s in snap.series]
    if args.json:
        ts = local_time(snap, "%Y-%m-%dT%H:%M:%S")
        interval = None if snap.interval is None else round(snap.interval, 3)
        return "".join(json.dumps({"ts": ts, "interval": interval, "name": name, "delta": v["delta"],
                                   "total": v["total"], "rate": round(v["rate"], 3), "key": key}) + "\n"
                       for name, key, v in rows)
    lines = []
    if args.timestamp:
        span = f" ({snap.interval:.2f} s)" if snap.interval else " (since boot)"
        lines.append(local_time(snap) + span)
    for name, key, v in rows:
        lines.append(f"{'*' if key else ' '} {name:<32} {v['delta']:<16} {v['rate']:.1f}")
    return "\n".join(lines) + ("\n" if lines else "")


def run(args: argparse.Namespace) -> int:
    ns = NetStat(args.patterns, netns=args.netns, zeros=args.zeros, key_only=args.key)
    first = ns.sample()
    if args.absolute:
        snap = snapshot(first)
        publish(snap)
        sys.stdout.write(intro(args) + render_snapshot(snap, args))
        return 0
    return print_loop(args, lambda: snapshot(ns.sample()), render_snapshot, intro)
