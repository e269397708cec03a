"""Whose is it: the marks pytrace puts on what can outlive it in the kernel,
and whether the process that made a thing is still alive.

A SIGKILLed pytrace runs no cleanup, and two kinds of its state survive it:

- tc filters (netlink attachments, not links): the filter handle carries a
  mark, the owner's PID and whether the owner created the clsact qdisc:

      handle = MAGIC << 23 | created << 22 | pid      (pid_max is at most 2**22)

  `tc filter show` prints it as e.g. `handle 0xda4004d2`.  The owner is alive
  if that PID holds a file descriptor of the filter's program: a PID reused
  by another process does not, so a reused PID cannot keep a leftover.
- network namespaces (`vnet demo`, `tunnelmon simulate`): their loopback
  device's alias (`ip -n NS link show lo`) says who made them:

      pytrace vnet-demo pid=1234 start=56789

  start is the owner's start time (/proc/PID/stat field 22, clock ticks
  since boot), so a reused PID is told apart.

XDP programs are attached through BPF links, which the kernel removes when
the owner's last file descriptor closes, SIGKILL included: they need no mark
(their program names, tunnelmon_xdp and vnet_xdp, still say whose they are).
"""

from __future__ import annotations

import os

MAGIC = 0x1B4                       # 9 bits: the top of the handle
_PID_BITS = 22
_CREATED = 1 << _PID_BITS
_PID_MASK = _CREATED - 1
NETNS_MARK = "pytrace"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from its end
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


_me: tuple[int, int] | None = None


def me() -> tuple[int, int]:
    """(pid, start time) of this process (computed again after a fork)."""
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:
        _me = (pid, start_time(pid) or 0)
    return _me


def alive(pid: int, start: int) -> bool:
    return pid > 0 and start_time(pid) == start


def holds_prog(pid: int, prog_id: int) -> bool:
    """Does process pid hold a file descriptor of BPF program prog_id?"""
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    want = f"prog_id:\t{prog_id}\n"
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                if want in fh.read():
                    return True
        except OSError:
            continue
    return False


# -- tc filters ---------------------------------------------------------------------

def filter_handle(created_clsact: bool) -> int:
    return (MAGIC << (_PID_BITS + 1)) | (_CREATED if created_clsact else 0) | os.getpid()


def handle_owner(handle: int) -> tuple[int, bool] | None:
    """(owner pid, whether the owner created the clsact) of a pytrace filter
    handle; None for a handle pytrace did not make."""
    if handle >> (_PID_BITS + 1) != MAGIC:
        return None
    return handle & _PID_MASK, bool(handle & _CREATED)


def filter_alive(handle: int, prog_id: int) -> bool:
    """Is the owner of this pytrace filter still running it?  (A kernel that
    does not report the program's ID leaves only the PID to go by.)"""
    owner = handle_owner(handle)
    if owner is None or not os.path.exists(f"/proc/{owner[0]}"):
        return False
    return not prog_id or holds_prog(owner[0], prog_id)


# -- network namespaces ----------------------------------------------------------------

def netns_mark(what: str) -> str:
    pid, start = me()
    return f"{NETNS_MARK} {what} pid={pid} start={start}"


def parse_netns_mark(text: str) -> tuple[str, int, int] | None:
    """(what, pid, start) from a namespace's mark; None if it is not pytrace's."""
    parts = text.split()
    if len(parts) != 4 or parts[0] != NETNS_MARK:
        return None
    try:
        pid = int(parts[2].removeprefix("pid="))
        start = int(parts[3].removeprefix("start="))
    except ValueError:
        return None
    return parts[1], pid, start
