"""Which hook kinds this kernel accepts, learned by loading tiny programs.

A probe loads and attaches one trivial program of a kind (src/bpf/probe.bpf.c)
and releases it at once.  Results are cached for the running boot in
/run/pytrace/features.json, so a tool's start skips kinds known to fail here
without paying for a failed load each time.  `pytrace doctor` probes afresh.
"""

from __future__ import annotations

import errno
import os

from . import cachefile, jsonfile, libbpf

CACHE = "features.json"   # in core/cachefile
PROBED_KINDS = ("fentry", "kprobe", "tp_btf", "raw_tp", "tracepoint", "lsm")
BPF_MAP_TYPE_RINGBUF = 27

_HINTS = {
    ("kprobe", errno.ENOENT): "the kernel has no kprobes (CONFIG_KPROBES off?)",
    ("kprobe", errno.EOPNOTSUPP): "the kernel has no kprobes (CONFIG_KPROBES off?)",
    ("fentry", errno.EPERM): "the kernel refuses fentry/fexit programs",
    ("fentry", errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524): "no BPF trampoline on this kernel",
    ("lsm", errno.EPERM): "the kernel refuses BPF LSM programs",
}


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def _load_cache() -> dict:
    data = cachefile.read(CACHE)
    try:
        info = jsonfile.loads(data.decode()) if data is not None else {}
    except ValueError:
        return {}
    if not isinstance(info, dict) or info.get("boot_id") != _boot_id() or info.get("libbpf") != libbpf.lib_path:
        return {}
    return info.get("kinds", {})


def _save_cache(kinds: dict) -> None:
    import json     # writing only; reading is jsonfile's
    info = {"boot_id": _boot_id(), "libbpf": libbpf.lib_path, "kinds": kinds}
    cachefile.write(CACHE, json.dumps(info).encode())   # read-only /run: probes just run again


def explain(kind: str, exc: OSError) -> str:
    hint = _HINTS.get((kind, exc.errno))
    msg = str(exc.strerror or exc)
    return f"{msg} ({hint})" if hint else msg


def probe(kind: str) -> tuple[bool, str]:
    """Load and attach the probe program of one kind: (usable, reason)."""
    from .bpfobject import BpfObject  # avoid an import cycle at module load
    from . import tracefs

    if kind == "ringbuf":
        return probe_ringbuf()
    if kind not in PROBED_KINDS:
        return True, "not probed"
    mounted_here = False
    obj = BpfObject("probe", programs={f"probe_{kind}"})
    try:
        if kind == "tracepoint":
            mounted_here = tracefs.ensure()
        obj.load()
        obj.attach(f"probe_{kind}")
        return True, "ok"
    except OSError as exc:
        return False, explain(kind, exc)
    finally:
        obj.close()
        if mounted_here:
            tracefs.unmount()


def probe_ringbuf() -> tuple[bool, str]:
    fd = libbpf.lib().bpf_map_create(BPF_MAP_TYPE_RINGBUF, b"pytrace_probe", 0, 0, 4096, None)
    if fd < 0:
        return False, f"BPF ring buffer unavailable: {os.strerror(-fd)} (needs Linux 5.8+)"
    os.close(fd)
    return True, "ok"


def cached(kind: str) -> tuple[bool, str] | None:
    """The cached probe result of a kind on this boot, if any."""
    entry = _load_cache().get(kind)
    return (bool(entry[0]), entry[1]) if entry else None


def known_unusable(kind: str) -> str | None:
    """The cached reason a kind failed on this boot, or None (usable or not yet probed)."""
    entry = cached(kind)
    if entry and not entry[0]:
        return entry[1]
    return None


def learn(kind: str) -> tuple[bool, str]:
    """Probe a kind after a tool variant of it failed, and cache the answer."""
    result = probe(kind)
    kinds = _load_cache()
    kinds[kind] = list(result)
    _save_cache(kinds)
    return result


def probe_all() -> dict[str, tuple[bool, str]]:
    results = {k: probe(k) for k in (*PROBED_KINDS, "ringbuf")}
    _save_cache({k: list(v) for k, v in results.items()})
    return results

