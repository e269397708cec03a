"""Which hook kinds this kernel accepts, learned by loading tiny programs,
and which tool variants it refused.

A probe loads and attaches one trivial program of a kind (src/bpf/probe.bpf.c)
and releases it at once.  Results are cached for the running boot in
features.json (core/cachefile), so a tool's start skips kinds known to fail here
without paying for a failed load each time.  `pytrace doctor` probes afresh.

A tool variant the kernel refused (its verifier, a tracepoint it lacks) is
remembered there too, for that build of the object and that configuration:
a refusal is paid once per boot, never at every start.  Nothing may depend
on one build's verifier (the same 6.18 refuses on one machine what it takes
on another), so a refusal is a fact about this boot, not a rule.

Each kind also declares the oldest kernel that has it (KIND_SINCE): a
Variant's floor (core/loader) is the newest of that, the ring buffer's and
its own, and the kernel matrix checks every floor both ways.
"""

from __future__ import annotations

import errno
import os

from . import cachefile, jsonfile, libbpf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .loader import Variant

CACHE = "features.json"   # in core/cachefile
PROBED_KINDS = ("fentry", "kprobe", "tp_btf", "raw_tp", "tracepoint", "lsm")
BPF_MAP_TYPE_RINGBUF = 27

# kind: (the first kernel that has it, what it is); mainline x86_64
KIND_SINCE = {
    "kprobe": ("4.1", "kprobe programs"),
    "uprobe": ("4.1", "uprobe programs"),
    "tc": ("4.1", "tc BPF classifiers"),
    "tracepoint": ("4.7", "tracepoint programs"),
    "xdp": ("4.8", "XDP"),
    "sockops": ("4.13", "sockops programs"),
    "raw_tp": ("4.17", "raw tracepoints"),
    "tp_btf": ("5.5", "BTF-typed tracepoints (tp_btf)"),
    "fentry": ("5.5", "BPF trampolines (fentry/fexit)"),
    "lsm": ("5.7", "BPF LSM programs"),
}
# every object reports through (or counts losses in) a BPF ring buffer
RINGBUF_SINCE = ("5.8", "the BPF ring buffer")
def trampoline_takes(*functions: str):
    """A need of fentry variants whose functions may take more than 6
    arguments: x86 BPF trampolines take 6 before Linux 6.5 (12 since), and a
    function can gain one in a stable release (Debian's 6.1 gave
    tcp_v4_syn_recv_sock a seventh).  The check returns what is missing, or None."""
    def check() -> str | None:
        if kernel_version() >= (6, 5):
            return None
        from . import kernel_btf
        from .errors import PytraceError
        for func in functions:
            try:
                n = kernel_btf.func_arg_count(func)
            except PytraceError:        # no kernel BTF: then no fentry either
                return None
            if n is not None and n > 6:
                return f"{func} takes {n} arguments here, and BPF trampolines take 6 before Linux 6.5"
        return None
    return check


# what a variant may need beyond its kind (Variant.needs): the first mainline
# kernel that has it, and for some a check of this kernel too.  The kernel
# matrix (tests/test_matrix.py) holds each claim against the Debian kernels it boots.
NEEDS = {
    "trampolines for tcp_v*_syn_recv_sock": ("5.5", trampoline_takes("tcp_v4_syn_recv_sock",
                                                                       "tcp_v6_syn_recv_sock")),
    "tracepoint qdisc_enqueue": "5.16",
    "tracepoint sock_send_length": "6.3",
    "tracepoints sock_send/recv_length": "6.3",
    "tracepoint sk_data_ready": "6.3",
    "kmem tracepoints with the cache": "6.1",
    "kfree_skb drop reasons": "5.17",
    "sockops TX timestamping": "6.15",
}
# errors that say something about the kernel itself (its verifier, its BTF,
# the hooks it has), not about this moment (memory, a busy device, privileges)
_KERNEL_REFUSALS = {errno.EACCES, errno.EINVAL, errno.E2BIG, errno.ESRCH, errno.ENOENT, errno.EOPNOTSUPP, 524}
# kinds whose refusal does not depend on a target the user names (a device, a binary)
_KERNEL_WIDE = {"kprobe", "tracepoint", "raw_tp", "tp_btf", "fentry", "lsm", "sockops"}

_HINTS = {
    ("kprobe", errno.ENOENT): "the kernel has no kprobes (CONFIG_KPROBES off?)",
    ("kprobe", errno.EOPNOTSUPP): "the kernel has no kprobes (CONFIG_KPROBES off?)",
    ("fentry", errno.EPERM): "the kernel refuses fentry/fexit programs",
    ("fentry", errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524): "no BPF trampoline on this kernel",
    ("lsm", errno.EPERM): "the kernel refuses BPF LSM programs",
}


def kernel_release() -> str:
    return os.uname().release


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel, from its release ("6.1.0-57-amd64": (6, 1))."""
    return parse_version(kernel_release())


def parse_version(text: str) -> tuple[int, int]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def floor(kind: str, needs: str = "") -> tuple[tuple[int, int], str]:
    """The newest of a kind's floor, the ring buffer's and what a variant needs:
    ((major, minor), what that kernel brought)."""
    best = (parse_version(RINGBUF_SINCE[0]), RINGBUF_SINCE[1])
    need = NEEDS[needs] if needs else "0.0"
    need_version = need[0] if isinstance(need, tuple) else need
    for version, what in (KIND_SINCE.get(kind, ("0.0", "")), (need_version, needs)):
        if parse_version(version) > best[0]:
            best = (parse_version(version), what)
    return best


def unmet(kind: str, needs: str = "") -> str | None:
    """Why this kernel cannot have a variant of this kind that needs `needs`
    (too old, or its own check fails), or None when it should."""
    (major, minor), what = floor(kind, needs)
    if kernel_version() < (major, minor):
        return f"needs Linux {major}.{minor}+ ({what})"
    need = NEEDS.get(needs) if needs else None
    if isinstance(need, tuple):
        missing = need[1]()
        if missing:
            return f"needs {needs}: {missing}"
    return None


def _boot_id() -> str:
    return cachefile.boot_id() or "unknown"


def _libbpf_path() -> str:
    """The libbpf this process uses: the cache is kept per libbpf, so it must be
    loaded before the cache is read (a tool reads it before opening its object,
    and would otherwise find nothing and try variants known to fail)."""
    if not libbpf.lib_path:
        try:
            libbpf.lib()
        except Exception:       # no usable libbpf: the object's open says so
            return ""
    return libbpf.lib_path


def _load_all() -> dict:
    data = cachefile.read(CACHE)
    try:
        info = jsonfile.loads(data.decode()) if data is not None else {}
    except ValueError:
        return {}
    if not isinstance(info, dict) or info.get("boot_id") != _boot_id() or info.get("libbpf") != _libbpf_path():
        return {}
    return info


def _load_cache() -> dict:
    kinds = _load_all().get("kinds", {})
    return kinds if isinstance(kinds, dict) else {}


def _save(kinds: dict | None = None, refused: dict | None = None) -> None:
    import json     # writing only; reading is jsonfile's
    info = _load_all()
    info = {"boot_id": _boot_id(), "libbpf": _libbpf_path(),
            "kinds": kinds if kinds is not None else info.get("kinds", {}),
            "refused": refused if refused is not None else info.get("refused", {})}
    cachefile.write(CACHE, json.dumps(info).encode())   # read-only /run: probes just run again


def _save_cache(kinds: dict) -> None:
    _save(kinds=kinds)


def _refusal_key(obj_name: str, variant: Variant, config: str) -> str | None:
    """Which build of which object, variant and configuration (rodata: it
    decides what the verifier sees) a refusal is about; None if the object
    is not there."""
    from . import objects
    try:
        st = os.stat(objects.path(obj_name))
    except (OSError, Exception):    # PytraceError: a broken install is reported by the load itself
        return None
    import zlib
    what = zlib.crc32(f"{sorted(variant.programs)}{config}".encode())
    return f"{obj_name}:{variant.hook}:{st.st_size}:{st.st_mtime_ns}:{what:08x}"


def known_refused(obj_name: str, variant: Variant, config: str = "") -> str | None:
    """Why this kernel refused this variant earlier in this boot, or None."""
    if variant.hook not in _KERNEL_WIDE:
        return None
    key = _refusal_key(obj_name, variant, config)
    refused = _load_all().get("refused", {})
    reason = refused.get(key) if key and isinstance(refused, dict) else None
    return f"{reason} (remembered for this boot)" if isinstance(reason, str) else None


def remember_refusal(obj_name: str, variant: Variant, exc: OSError, reason: str, config: str = "") -> None:
    """Remember, for this boot, that the kernel refused a variant (not a passing failure)."""
    if variant.hook not in _KERNEL_WIDE or exc.errno not in _KERNEL_REFUSALS:
        return
    key = _refusal_key(obj_name, variant, config)
    if key is None:
        return
    refused = _load_all().get("refused", {})
    refused = dict(refused) if isinstance(refused, dict) else {}
    refused[key] = reason
    _save(refused=refused)


def forget_refusals() -> None:
    """`pytrace doctor` probes afresh: every variant gets its chance again."""
    _save(refused={})


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
    _save(kinds={k: list(v) for k, v in results.items()}, refused={})
    return results

