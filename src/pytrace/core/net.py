"""Network vocabulary shared by the tools: TCP states, addresses, port lists."""

from __future__ import annotations

# socket's own C module: the socket module adds only Python wrappers and
# enums (and selectors), ~1.5 ms of start-up that formatting needs none of.
from _socket import AF_INET, AF_INET6, inet_ntop

from .errors import UsageError, shown

TYPE_CHECKING = False
if TYPE_CHECKING:   # for the annotations; the functions import it when they run
    import ipaddress


# include/net/tcp_states.h, from 1
_STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
           "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")

# index -> name, for formatting without an enum lookup per event
STATE_NAMES = tuple(_STATES[i - 1] if 1 <= i <= len(_STATES) else str(i) for i in range(256))


def _tcp_state_class() -> type:
    import enum     # here: enum (with functools and collections) is ~3 ms that text output never needs

    class TcpState(enum.IntEnum):
        """include/net/tcp_states.h"""
        ESTABLISHED = 1
        SYN_SENT = 2
        SYN_RECV = 3
        FIN_WAIT1 = 4
        FIN_WAIT2 = 5
        TIME_WAIT = 6
        CLOSE = 7
        CLOSE_WAIT = 8
        LAST_ACK = 9
        LISTEN = 10
        CLOSING = 11
        NEW_SYN_RECV = 12

        @classmethod
        def of(cls, value: int) -> "TcpState | int":
            try:
                return cls(value)
            except ValueError:
                return value
    TcpState.__module__, TcpState.__qualname__ = __name__, "TcpState"   # pickle finds it here
    return TcpState


def __getattr__(name: str):
    """TcpState, made on first use (PEP 562)."""
    if name == "TcpState":
        cls = globals()["TcpState"] = _tcp_state_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tcp_state(value: int) -> int:
    """TcpState(value) for an event's state; the number itself if it names none."""
    return (globals().get("TcpState") or __getattr__("TcpState")).of(value)


class AddrFormatter:
    """(family, 16 raw bytes) -> text, memoised: the same few addresses recur
    in almost every event, and inet_ntop per event is measurable."""

    def __init__(self, limit: int = 65536):
        self._cache: dict[tuple[int, bytes], str] = {}
        self._limit = limit

    def __call__(self, family: int, raw: bytes) -> str:
        key = (family, raw)
        text = self._cache.get(key)
        if text is None:
            text = addr_text(family, raw)
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[key] = text
        return text


class ByteLabels:
    """Memoised bytes text of addresses (per family, so a raw key needs no
    tuple) and of command names, for the bulk text renderers that format
    straight from raw records: hit with `addrs4.get(raw)` / `addrs6.get(raw)` /
    `comms.get(raw)` inline, fall back to addr()/comm() on a miss."""

    def __init__(self, limit: int = 65536):
        self.addrs4: dict[bytes, bytes] = {}
        self.addrs6: dict[bytes, bytes] = {}
        self.comms: dict[bytes, bytes] = {}
        self._limit = limit

    # In a row expression compiled by core/rows.py, with row_env()'s names:
    # the command name of a record's `comm` field, memoised.
    COMM = "(cget(comm) or comm_of(comm))"

    @staticmethod
    def addr_expr(field: str) -> str:
        """The row expression for the text of address field `field` (the
        record's `family` says which memo; a miss formats and memoises)."""
        return f"((a4get({field}) if family == 2 else a6get({field}) if family == 10 else None)" \
               f" or addr(family, {field}))"

    def row_env(self) -> dict:
        """The names COMM and addr_expr() use."""
        return {"cget": self.comms.get, "comm_of": self.comm, "a4get": self.addrs4.get,
                "a6get": self.addrs6.get, "addr": self.addr}

    def addr(self, family: int, raw: bytes) -> bytes:
        text = addr_text(family, raw).encode()
        if family in (AF_INET, AF_INET6):   # another family's "?" is not these bytes' text
            cache = self.addrs4 if family == AF_INET else self.addrs6
            if len(cache) >= self._limit:
                cache.clear()
            cache[raw] = text
        return text

    def comm(self, raw: bytes) -> bytes:
        if len(self.comms) >= 4096:
            self.comms.clear()
        text = self.comms[raw] = comm_text(raw).encode(errors="replace")
        return text


def addr_text(family: int, raw: bytes) -> str:
    if family == AF_INET:
        return inet_ntop(AF_INET, raw[:4])
    if family == AF_INET6:
        return inet_ntop(AF_INET6, raw[:16])
    return "?"


def addr_obj(family: int, raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    import ipaddress    # here, not at the top: ~1.5 ms of start-up that the text output never needs
    if family == AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    if family == AF_INET6:
        return ipaddress.IPv6Address(raw[:16])
    return None


def parse_ports(text: str, flag: str, limit: int = 16) -> list[int]:
    """'80,443' -> [80, 443]; a bad list is a usage error naming the flag."""
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise UsageError(f"{flag} {shown(text)}: '{part}' is not a port number (1-65535)")
        ports.append(int(part))
    if len(ports) > limit:
        raise UsageError(f"{flag}: at most {limit} ports")
    return ports


def parse_addr(text: str, flag: str) -> tuple[int, bytes]:
    """An IPv4 or IPv6 address -> (family, 16 bytes, v4 in the first 4)."""
    import ipaddress    # start-up: only a few tools' flags take an address
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{flag} {shown(text)}: not an IPv4 or IPv6 address") from None
    if ip.version == 4:
        return AF_INET, ip.packed.ljust(16, b"\0")
    return AF_INET6, ip.packed


def comm_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")
