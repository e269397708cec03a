"""A small rtnetlink client: the tc filters, qdiscs and links of one network
namespace, read and removed without spawning `tc` or `ip`.

libbpf's tc API adds and removes one filter it already knows (handle and
priority); choosing a priority after the filters already on a hook, telling
whose a filter is, and finding what a killed pytrace left behind need the
whole list, which only a netlink dump gives.

A socket belongs to the network namespace its creator was in when it made it,
so an Rtnl made inside `netattach.in_netns(ns)` speaks to ns for its whole
life, wherever the thread goes afterwards.

    with in_netns("hostA"):
        nl = Rtnl()
    with nl:
        for f in nl.filters(ifindex, INGRESS_PARENT):
            print(f.prio, f.handle, f.bpf_name)
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from .records import record

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_DELQDISC, RTM_GETQDISC = 37, 38
RTM_DELTFILTER, RTM_GETTFILTER = 45, 46
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME, IFLA_IFALIAS = 3, 20
TCA_KIND, TCA_OPTIONS, TCA_CHAIN = 1, 2, 11
TCA_BPF_NAME, TCA_BPF_ID = 7, 11

TC_H_CLSACT = 0xFFFFFFF1                  # the clsact qdisc's parent (same as TC_H_INGRESS)
CLSACT_HANDLE = 0xFFFF0000
INGRESS_PARENT = 0xFFFFFFF2               # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
EGRESS_PARENT = 0xFFFFFFF3                # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
PARENTS = {"ingress": INGRESS_PARENT, "egress": EGRESS_PARENT}
DIRECTION = {v: k for k, v in PARENTS.items()}

_NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
_TCMSG = struct.Struct("=BxxxiIII")      # family, ifindex, handle, parent, info
_RTATTR = struct.Struct("=HH")

Link = record("Link", "index name alias")
Qdisc = record("Qdisc", "ifindex handle parent kind")
# prio and protocol come from tcm_info; handle 0 is the kernel's entry for a
# (prio, protocol) list itself, not a filter
Filter = record("Filter", "ifindex parent prio protocol handle kind chain bpf_name bpf_id")


def _attrs(buf: bytes, off: int = 0, end: int | None = None) -> dict[int, bytes]:
    """type -> payload of the netlink attributes in buf[off:end] (nested bit dropped)."""
    out: dict[int, bytes] = {}
    end = len(buf) if end is None else end
    while off + 4 <= end:
        length, kind = _RTATTR.unpack_from(buf, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4:off + length]
        off += (length + 3) & ~3
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _text(payload: bytes | None) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace") if payload else ""


def _u32(payload: bytes | None) -> int:
    return struct.unpack("=I", payload[:4])[0] if payload and len(payload) >= 4 else 0


class Rtnl:
    """One NETLINK_ROUTE socket, in the namespace of the thread that makes it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the exchange -----------------------------------------------------------
    def _talk(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; (type, payload) of every answer until DONE or the ack.
        A negative error in the answer raises OSError with its errno."""
        self._seq += 1
        seq = self._seq
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body
        self._sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(1 << 17)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink answer")
                payload = data[off + _NLMSGHDR.size:off + length]
                off += (length + 3) & ~3
                if mseq != seq:
                    continue            # an answer to an earlier request that we gave up on
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return out          # the ack of a request
                out.append((mtype, payload))
            if not flags & NLM_F_DUMP and out:
                return out              # a plain GET: one answer, no DONE

    # -- links -------------------------------------------------------------------
    def _link(self, payload: bytes) -> Link:
        _fam, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
        a = _attrs(payload, _IFINFOMSG.size)
        return Link(index, _text(a.get(IFLA_IFNAME)), _text(a.get(IFLA_IFALIAS)))

    def links(self) -> list[Link]:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [self._link(p) for t, p in self._talk(RTM_GETLINK, NLM_F_DUMP, body) if t == RTM_NEWLINK]

    def link(self, index: int) -> Link | None:
        """The device with this ifindex, or None if there is none."""
        try:
            answers = self._talk(RTM_GETLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return next((self._link(p) for t, p in answers if t == RTM_NEWLINK), None)

    def set_alias(self, index: int, text: str) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _attr(IFLA_IFALIAS, text.encode())
        self._talk(RTM_NEWLINK, NLM_F_ACK, body)

    # -- qdiscs and filters ----------------------------------------------------------
    def qdiscs(self) -> list[Qdisc]:
        """Every qdisc of every device in the namespace."""
        out = []
        for t, p in self._talk(RTM_GETQDISC, NLM_F_DUMP, _TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _fam, ifindex, handle, parent, _info = _TCMSG.unpack_from(p)
            out.append(Qdisc(ifindex, handle, parent, _text(_attrs(p, _TCMSG.size).get(TCA_KIND))))
        return out

    def has_clsact(self, ifindex: int) -> bool:
        return any(q.ifindex == ifindex and q.kind == "clsact" for q in self.qdiscs())

    def filters(self, ifindex: int, parent: int) -> list[Filter]:
        """The filters (every chain) on one clsact hook; [] when the device has no clsact."""
        try:
            answers = self._talk(RTM_GETTFILTER, NLM_F_DUMP, _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
                return []
            raise
        out = []
        for _t, p in answers:
            _fam, idx, handle, fparent, info = _TCMSG.unpack_from(p)
            a = _attrs(p, _TCMSG.size)
            opts = _attrs(a[TCA_OPTIONS]) if TCA_OPTIONS in a else {}
            out.append(Filter(idx, fparent, info >> 16, info & 0xFFFF, handle, _text(a.get(TCA_KIND)),
                              _u32(a.get(TCA_CHAIN)), _text(opts.get(TCA_BPF_NAME)), _u32(opts.get(TCA_BPF_ID))))
        return out

    def clsact_filters(self, ifindex: int) -> list[Filter]:
        """Both hooks of the device's clsact."""
        return self.filters(ifindex, INGRESS_PARENT) + self.filters(ifindex, EGRESS_PARENT)

    def delete_filter(self, f: Filter) -> bool:
        """Remove exactly this filter (its prio, protocol, handle, kind and
        chain); False if it is already gone."""
        if not f.prio or not f.handle:
            raise ValueError("refusing a filter deletion without prio and handle (it would take a whole list)")
        body = (_TCMSG.pack(socket.AF_UNSPEC, f.ifindex, f.handle, f.parent, (f.prio << 16) | f.protocol)
                + _attr(TCA_KIND, f.kind.encode() + b"\0") + _attr(TCA_CHAIN, struct.pack("=I", f.chain)))
        return self._quiet_gone(RTM_DELTFILTER, body)

    def delete_clsact(self, ifindex: int) -> bool:
        body = (_TCMSG.pack(socket.AF_UNSPEC, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0)
                + _attr(TCA_KIND, b"clsact\0"))
        return self._quiet_gone(RTM_DELQDISC, body)

    def _quiet_gone(self, kind: int, body: bytes) -> bool:
        try:
            self._talk(kind, NLM_F_ACK, body)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                return False
            raise
        return True
