"""What the socket-layer tools share on the Python side (src/bpf/socklayer.h
is the kernel half): the conversions of their record fields (socket types,
I/O directions, the result texts of connect()/accept()), reading their maps
(rows of a generated type, histograms keyed by a generated key type,
per-CPU counters), their hook variants, and tracefs for variants that mix
classic tracepoints with other hooks."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Callable

from . import tracefs
from .bpfobject import BpfObject, Map, ncpus_possible
from .convert import Conversion, enum_json, register, text_parse
from .hist import Log2Histogram
from .loader import Variant


HIST_SLOTS = 32   # as socklayer.h


def family_number(v: Any) -> int:
    """An address family as a number, from its JSON value ("AF_INET6") or number."""
    if isinstance(v, int):
        return v
    try:
        return int(socket.AddressFamily[v])
    except KeyError:
        return int(v) if str(v).isdigit() else 0


def protocol_name(protocol: int) -> str:
    """IPPROTO_UDP for 17 (convert's IpProtocol names), IPPROTO_<n> for one it does not name."""
    from .convert import ip_protocol_value
    return getattr(ip_protocol_value(protocol), "name", f"IPPROTO_{protocol}")


def sock_type_value(v: int):
    """socket.SocketKind of a socket's type (flags masked off), or the number."""
    try:
        return socket.SocketKind(v & 0xF)
    except ValueError:
        return v


def sock_type_parse(v: Any):
    if isinstance(v, str) and not v.isdigit():
        return socket.SocketKind[v]
    return sock_type_value(int(v))


register(Conversion("sock_type", sock_type_value, enum_json, sock_type_parse, kind="enum"))


# The result texts of the book's soconnect.bt and soaccept.bt.
CONNECT_RESULTS = {
    0: "Success", errno.EPERM: "Permission denied", errno.EINTR: "Interrupted",
    errno.EBADF: "Invalid sockfd", errno.EAGAIN: "Routing cache insuff.",
    errno.EACCES: "Perm. denied (firewall)", errno.EFAULT: "Sock struct addr invalid",
    errno.ENOTSOCK: "FD not a socket", errno.EPROTOTYPE: "Socket protocol error",
    errno.EAFNOSUPPORT: "Address family invalid", errno.EADDRINUSE: "Local addr in use",
    errno.EADDRNOTAVAIL: "No port available", errno.ENETUNREACH: "Network unreachable",
    errno.EISCONN: "Already connected", errno.ETIMEDOUT: "Timeout",
    errno.ECONNREFUSED: "Connect refused", errno.EALREADY: "Not yet completed",
    errno.EINPROGRESS: "In progress",
}
ACCEPT_RESULTS = {
    0: "Success", errno.EPERM: "Permission denied", errno.EINTR: "Interrupted",
    errno.EBADF: "Invalid sockfd", errno.EAGAIN: "None to accept", errno.ENOMEM: "Out of memory",
    errno.EFAULT: "Sock struct addr invalid", errno.EINVAL: "Args invalid",
    errno.ENFILE: "System FD limit", errno.EMFILE: "Process FD limit", errno.EPROTO: "Protocol error",
    errno.ENOTSOCK: "FD not a socket", errno.EOPNOTSUPP: "Not SOCK_STREAM",
    errno.ECONNABORTED: "Aborted", errno.ENOBUFS: "Memory (ENOBUFS)",
}


def result_text(table: dict[int, str], err: int) -> str:
    """err is 0 or a positive errno."""
    return table.get(err) or errno.errorcode.get(err, str(err))


# The results as event fields (`result <- ret: connect_result`): ret is 0, a
# new fd (accept) or -errno; the text path memoises each ret's bytes.

def connect_result_value(ret: int) -> str:
    return result_text(CONNECT_RESULTS, -ret if ret < 0 else 0)


def accept_result_value(ret: int) -> str:
    return result_text(ACCEPT_RESULTS, -ret if ret < 0 else 0)


class _ResultTexts(dict):
    def __init__(self, value: Callable[[int], str]):
        super().__init__()
        self.value = value

    def __missing__(self, ret: int) -> bytes:
        text = self[ret] = self.value(ret).encode()
        return text


register(Conversion("connect_result", connect_result_value, None, text_parse, kind="str",
                    text=("s", "_connect_results[{0}]"), env={"_connect_results": _ResultTexts(connect_result_value)}))
register(Conversion("accept_result", accept_result_value, None, text_parse, kind="str",
                    text=("s", "_accept_results[{0}]"), env={"_accept_results": _ResultTexts(accept_result_value)}))


# -- maps ------------------------------------------------------------------------------

def percpu_u64(m: Map, key: bytes) -> int:
    """Sum of a per-CPU u64 value over every possible CPU (0 if absent)."""
    n = ncpus_possible()
    raw = m.lookup(key, value_size=8 * n)
    return sum(struct.unpack(f"<{n}Q", raw)) if raw else 0


def counted(m: Map, clear: bool = False) -> list[tuple[dict, int]]:
    """(decoded key, count) of every entry of a hash map of u64 counts."""
    items = m.items()
    kdec = m._decoder("key")
    out = [(kdec(k), struct.unpack_from("<Q", v)[0]) for k, v in items]
    if clear:
        for k, _ in items:
            m.delete(k)
    return out


def histograms(m: Map, unit: str, key_of: Callable[[Any], Any], clear: bool = False) -> dict[Any, Log2Histogram]:
    """{key_of(decoded key): Log2Histogram} from a hash map of struct log2_hist."""
    items = m.items()
    kdec = m._decoder("key")
    out: dict[Any, Log2Histogram] = {}
    for kraw, vraw in items:
        vals = struct.unpack(f"<{HIST_SLOTS + 2}Q", vraw[:8 * (HIST_SLOTS + 2)])
        h = Log2Histogram(tuple(vals[:HIST_SLOTS]), unit, vals[HIST_SLOTS], vals[HIST_SLOTS + 1])
        k = key_of(kdec(kraw))
        out[k] = out[k] + h if k in out else h
    if clear:
        for kraw, _ in items:
            m.delete(kraw)
    return out


def table_rows(m: Map, row_type: Any, clear: bool = False) -> list:
    """The rows of a hash map as a generated row type (EventType(map=...)):
    key fields then value fields; clear=True takes each out as it is read."""
    decode = row_type.decoder(m.row_names())
    return [decode(r) for r in m.rows(pop=clear)]


def keyed_histograms(m: Map, unit: str, key_type: Any, clear: bool = False) -> dict[Any, Log2Histogram]:
    """{key row: Log2Histogram} of a hash map of struct log2_hist whose key is a
    struct with a generated row type (EventType(struct=<key struct>))."""
    key_fmt, key_names = m._part_format("key")
    unpack = struct.Struct(key_fmt).unpack_from
    decode = key_type.decoder(key_names)
    out: dict[Any, Log2Histogram] = {}
    for kraw, vraw in (m.pop_items() if clear else m.items()):
        vals = struct.unpack_from(f"<{HIST_SLOTS + 2}Q", vraw)
        h = Log2Histogram(tuple(vals[:HIST_SLOTS]), unit, vals[HIST_SLOTS], vals[HIST_SLOTS + 1])
        k = decode(unpack(kraw))
        out[k] = out[k] + h if k in out else h
    return out


# the family operations the kprobe variants hook (SOCK_OPS_IO in socklayer.h)
SOCK_OPS_IO = ("inet_sendmsg", "inet6_sendmsg", "unix_stream_sendmsg", "unix_dgram_sendmsg",
               "inet_recvmsg", "inet6_recvmsg", "unix_stream_recvmsg", "unix_dgram_recvmsg")


def sock_io_variants(tool: str) -> tuple[Variant, ...]:
    """The hook variants of a tool built on SOCK_IO_PROGRAMS (socklayer.h), best first:
    the sock_send_length/sock_recv_length tracepoints (Linux 6.3+) by tp_btf or
    classic, then kprobes on the family operations that sock_sendmsg/sock_recvmsg
    call (the book hooks those two, which some builds inline) for older kernels."""
    return (
        Variant("tp_btf", (f"{tool}_tp_btf_send", f"{tool}_tp_btf_recv"), needs="tracepoints sock_send/recv_length"),
        Variant("tracepoint", (f"{tool}_tp_send", f"{tool}_tp_recv"), needs="tracepoints sock_send/recv_length"),
        Variant("kprobe", tuple(f"{tool}_{kind}_{op}" for op in SOCK_OPS_IO for kind in ("kprobe", "kretprobe")),
                note="IP and Unix sockets"),
    )


DIRS = ("send", "recv")   # IO_SEND, IO_RECV in socklayer.h


def io_dir_value(v: int) -> str:
    return DIRS[v & 1]


register(Conversion("io_dir", io_dir_value, None, text_parse, kind="str"))


# -- attaching ---------------------------------------------------------------------------

def attach_with_tracefs(obj: BpfObject, variant: Variant) -> None:
    """Attach every program of a variant, mounting tracefs first (and unmounting
    it on close) when the variant is not itself 'tracepoint' but includes
    classic tracepoints, e.g. syscall tracepoints next to kprobes."""
    if variant.hook != "tracepoint" and tracefs.ensure():
        obj.on_close(tracefs.unmount)
    for name in variant.programs:
        obj.attach(name)
