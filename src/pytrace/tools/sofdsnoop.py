"""sofdsnoop: file descriptors passed over Unix sockets (SCM_RIGHTS), as BCC's.

Library:

    from pytrace.tools.sofdsnoop import SoFdSnoop
    with SoFdSnoop(pid=1234) as t:
        for ev in t.events(duration=10):           # FdPass
            print(ev.action, ev.tid, ev.comm, ev.sock_fd, ev.fd, ev.name, ev.peer_pid)

One event per descriptor: SEND in the sending task (fd is its descriptor),
RECV in the receiving one (fd is the new descriptor it got).  name is the
file as /proc/PID/fd shows it ("socket:[ino]", "pipe:[ino]",
"anon_inode:[eventfd]", or the path, " (deleted)" once unlinked), taken in
the kernel when the descriptor passed, for both sides (BCC names only sent
files, and only while the sender lives).  A RECV names its sender (peer_pid,
peer_comm, peer_fd): the received file is the struct file that was sent.
With kprobes (BCC's hooks, __scm_send and scm_detach_fds) a send is reported
as the kernel takes its descriptors; without, at the end of a successful
sendmsg().  sendmmsg/recvmmsg and io_uring are not traced, as in BCC;
at most 16 descriptors of a message are reported.
"""

from __future__ import annotations

from ..core import convert
from ..cli.cliutil import LATENCY_NOTE, bad_value, process_id, seconds
from ..core.loader import Variant
from ..core.socklayer import attach_with_tracefs
from ..core.stream import EventTracer
from ..core.tracer import LABELS, TASK_SCOPE
from ..spec import EVENTS, Column, EventType, Option, ToolSpec, pid, public_classes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME_PARTS, NAME_PART_LEN = 12, 48          # as src/bpf/sofdsnoop.bpf.c
ACTIONS = ("SEND", "RECV")
FILE_PATH, FILE_SOCKET, FILE_PIPE, FILE_ANON = range(4)


def action_value(v: int) -> str:
    return ACTIONS[v] if v < len(ACTIONS) else str(v)


def file_name_value(raw: bytes, kind: int, ino: int, deleted: int, depth: int) -> str:
    """The file as readlink(/proc/PID/fd/N) shows it, from what the kernel recorded."""
    if kind == FILE_SOCKET:
        return f"socket:[{ino}]"
    if kind == FILE_PIPE:
        return f"pipe:[{ino}]"
    if kind == FILE_ANON:
        return "anon_inode:" + raw[:NAME_PART_LEN].split(b"\0", 1)[0].decode(errors="replace")
    if kind != FILE_PATH:
        return "N/A"
    parts = [raw[i * NAME_PART_LEN:(i + 1) * NAME_PART_LEN].split(b"\0", 1)[0].decode(errors="replace")
             for i in range(min(depth, NAME_PARTS))]
    return "/" + "/".join(reversed(parts)) + (" (deleted)" if deleted else "")


def peer_value(peer_pid: int) -> str:
    """The FROM column: the sender's PID, "-" on a SEND or when the send was not seen."""
    return str(peer_pid) if peer_pid else "-"


def socket_value(sock_fd: int, sock_ino: int) -> str:
    """BCC's SOCKET column: the socket's descriptor and what /proc shows for it."""
    return f"{sock_fd}:socket:[{sock_ino}]" if sock_ino else f"{sock_fd}:N/A"


class _Texts(dict):
    """Memoised text of a conversion over a tuple of raw values (rare events: a
    plain cache, no compiled path)."""

    def __init__(self, fn: Any):
        super().__init__()
        self.fn = fn

    def __call__(self, *raw: Any) -> bytes:
        out = self.get(raw)
        if out is None:
            if len(self) > 4096:
                self.clear()
            out = self[raw] = self.fn(*raw).encode()
        return out


convert.register(convert.Conversion("sofdsnoop_action", action_value, None, convert.text_parse, kind="str",
                                    text=("s", "_actions[{0}]"), env={"_actions": tuple(a.encode() for a in ACTIONS)}))
convert.register(convert.Conversion("sofdsnoop_file", file_name_value, None, convert.text_parse, kind="str",
                                    needs=("kind", "ino", "deleted", "depth"),
                                    text=("s", "_file_name({0}, {1}, {2}, {3}, {4})"),
                                    env={"_file_name": _Texts(file_name_value)}))
convert.register(convert.Conversion("sofdsnoop_peer", peer_value, None, convert.text_parse, kind="str",
                                    text=("s", "_peer_text({0})"), env={"_peer_text": _Texts(peer_value)}))
convert.register(convert.Conversion("sofdsnoop_socket", socket_value, None, convert.text_parse, kind="str",
                                    needs=("sock_ino",), text=("s", "_socket_text({0}, {1})"),
                                    env={"_socket_text": _Texts(socket_value)}))

# struct sofdsnoop_event of src/bpf/sofdsnoop.bpf.c; build.py generates FdPass
SOFDSNOOP_EVENT = EventType("FdPass", struct="sofdsnoop_event", doc="A file descriptor sent or received "
                            "over a Unix socket.", fields="""
    ts_ns                       # CLOCK_MONOTONIC of the send or receive
    action: sofdsnoop_action    # SEND or RECV
    pid
    tid
    comm: text
    sock_fd                     # the socket the descriptor went through (-1: unknown)
    socket <- sock_fd: sofdsnoop_socket     # BCC's SOCKET: "24:socket:[39763]"
    fd                          # SEND: the sender's descriptor; RECV: the receiver's new one
    name: sofdsnoop_file        # the file, as /proc/PID/fd/FD shows it
    peer_pid                    # RECV: the process that sent it (0: not seen)
    peer_comm: text
    peer_fd                     # RECV: its descriptor in the sender (-1: not seen)
    sock_ino
    ino                         # the file's inode
    cgroup_id                   # the task's cgroup id (0 unless labels=True)
    netns                       # the task's network namespace inode (0 unless labels=True)
    -kind
    -deleted
    -depth
    -pad
    -pad2
""")


class SoFdSnoop(EventTracer):
    OBJECT = "sofdsnoop"
    SCOPE = TASK_SCOPE | LABELS
    EVENT_TYPE = SOFDSNOOP_EVENT
    VARIANTS = (
        Variant("kprobe", ("sofdsnoop_enter_sendmsg", "sofdsnoop_exit_sendmsg", "sofdsnoop_enter_recvmsg",
                           "sofdsnoop_exit_recvmsg", "sofdsnoop_kprobe_scm_send", "sofdsnoop_kprobe_detach_fds",
                           "sofdsnoop_kretprobe_detach_fds")),
        Variant("tracepoint", ("sofdsnoop_tp_enter_sendmsg", "sofdsnoop_tp_exit_sendmsg", "sofdsnoop_enter_recvmsg",
                               "sofdsnoop_tp_exit_recvmsg")),
    )

    def __init__(self, *, pid: int = 0, tid: int = 0, name: str | None = None, **kw: Any):
        super().__init__(**kw)
        if name is not None and not 0 < len(name.encode()) < 16:
            raise ValueError("name: 1 to 15 bytes (a command name is at most 15)")
        self.pid, self.tid, self.name = pid, tid, name

    def rodata(self) -> dict[str, Any]:
        name = (self.name or "").encode()
        return {"targ_tgid": self.pid, "targ_tid": self.tid, "targ_comm": name, "targ_comm_len": len(name)}

    attach = staticmethod(attach_with_tracefs)      # the kprobe variant has syscall tracepoints too


__getattr__ = public_classes(__name__, FdPass=SOFDSNOOP_EVENT)


def comm_part(text: str) -> str:
    """-n NAME: part of a command name (at most 15 bytes)."""
    if not 0 < len(text.encode()) < 16:
        raise bad_value(f"'{text}': a command name has 1 to 15 bytes")
    return text


SPEC = ToolSpec(
    "sofdsnoop", "file descriptors passed over Unix sockets (SCM_RIGHTS)", SoFdSnoop, EVENTS,
    description=("Trace file descriptors passed via socket (SCM_RIGHTS over Unix sockets): a line per "
                 "descriptor sent or received, as BCC's sofdsnoop. FD is the sender's descriptor on a SEND "
                 "line and the receiver's new one on a RECV line (-w adds the sender's PID and COMM, "
                 "also when only the receiver is traced; --json has its descriptor too). At most 16 "
                 "descriptors of a message are shown; sendmmsg/recvmmsg and io_uring are not traced. NAME is "
                 "taken in the kernel as the "
                 "descriptor passes, for received files too (BCC names only sent ones, and only while "
                 "the sender lives). With kprobes: __scm_send and scm_detach_fds, as BCC; without: the "
                 f"sendmsg/recvmsg tracepoints, a send reported once it succeeded. {LATENCY_NOTE}"),
    event=SOFDSNOOP_EVENT,
    options=(
        Option("-T", "--timestamp", action="store_true", help="include timestamp on output (seconds since "
                                                              "the first event)"),
        pid("trace this PID only"),
        Option("-t", "--tid", type=process_id, default=0, kw="tid", help="trace this TID only (over -p)"),
        Option("-n", "--name", type=comm_part, kw="name", help="only print process names containing this name"),
        Option("-d", "--duration", type=seconds, metavar="DURATION", help="total duration of trace in seconds"),
        Option("-w", "--wide", action="store_true", help="also show the PID and, on RECV, the sender"),
    ),
    columns=(
        Column("TIME(s)", "ts_ns", width=13, form="since_first", precision=".9", when="timestamp"),
        Column("ACTION", "action", width=6),
        Column("TID", "tid", width=6),
        Column("COMM", "comm", width=16),
        Column("PID", "pid", width=7, when="wide"),
        Column("FROM", "peer_pid", width=7, form="sofdsnoop_peer", when="wide"),
        Column("FROM-COMM", "peer_comm", width=16, when="wide"),
        Column("SOCKET", "sock_fd", width=25, form="sofdsnoop_socket"),
        Column("FD", "fd", width=5),
        Column("NAME", "name"),
    ),
    examples=(
        ("pytrace sofdsnoop", "trace passed file descriptors"),
        ("pytrace sofdsnoop -T", "include timestamps"),
        ("pytrace sofdsnoop -p 181", "only trace PID 181"),
        ("pytrace sofdsnoop -t 123", "only trace TID 123"),
        ("pytrace sofdsnoop -d 10", "trace for 10 seconds only"),
        ("pytrace sofdsnoop -n main", 'only print process names containing "main"'),
        ("pytrace sofdsnoop -w --json", "one JSON object per descriptor, with the sender of each received one"),
    ),
)
