"""Do we have the privileges BPF tracing needs?  Answer before libbpf fails."""

from __future__ import annotations

from .errors import PytraceError

CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF = 21, 12, 38, 39
NAMES = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_NET_ADMIN: "CAP_NET_ADMIN",
         CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


def effective() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing(need_net_admin: bool = False) -> list[str]:
    caps = effective()
    have = lambda c: bool(caps >> c & 1)  # noqa: E731
    out = []
    if not have(CAP_SYS_ADMIN):
        out += [NAMES[c] for c in (CAP_BPF, CAP_PERFMON) if not have(c)]
    if need_net_admin and not have(CAP_NET_ADMIN):
        out.append("CAP_NET_ADMIN")
    return out


def require(tool: str, need_net_admin: bool = False) -> None:
    lacking = missing(need_net_admin)
    if lacking:
        raise PytraceError(f"{tool} needs root, or CAP_BPF and CAP_PERFMON"
                           f"{' and CAP_NET_ADMIN' if need_net_admin else ''}"
                           f" (missing: {', '.join(lacking)})")


def has(cap: int) -> bool:
    return bool(effective() >> cap & 1)


def require_sys_admin(tool: str, what: str) -> None:
    """What needs CAP_SYS_ADMIN itself, whatever CAP_BPF and CAP_PERFMON allow
    (entering a network namespace, uprobes on some kernels): said as such,
    before the system call fails with a bare EPERM."""
    if not has(CAP_SYS_ADMIN):
        raise PytraceError(f"{what} needs CAP_SYS_ADMIN, which this process lacks (run pytrace {tool} as root)")
