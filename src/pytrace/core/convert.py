"""The conversions a tool's event type may declare, one table for every use of a value.

A record's raw value (what struct.unpack gives for a C field) reaches a
person in three ways, and each conversion says all three once:

    value   raw -> the library's Python value     (generated from_raw)
    json    Python value -> its JSON value        (generated to_dict)
    parse   JSON value, or its text -> Python value (generated from_dict:
            snapshot labels, which are text, back into rows)
    text    how the CLI's fast text path prints the raw value without making
            the Python value at all (core/rows.py, spec/text.py): a printf code
            and an expression over the raw field's variable ({0}) and the
            variables of the raw fields it needs ({1}, ...)
    native  the same text as an op of the native formatter (core/rowfmt.py),
            which prints it from the ring's bytes: ("dec", div, shift),
            ("hex",), ("fixed", add, div, fdiv, digits) for "%d.%0Nd" of
            ((v + add) // div, (v + add) // fdiv % 10**N), ("text",), ("addr",),
            ("names", value -> bytes or None, limit).  None: CPython prints it.
            tests/test_rowfmt.py holds every native form to its text form.

An event type names them (spec/eventtype.py): `laddr <- saddr: address`
converts raw saddr, given raw family (the conversion's default needs), into
the field laddr.  `address(af)` names other raw fields to pass.

This module is on the text path's start-up (spec/text.py reads `text`), so it
imports nothing heavy: ipaddress, socket and enum are imported inside the
functions that need them, which only the library and --json call.

A tool that needs a conversion of its own declares a Conversion in its module
and register()s it before its event type is declared; build-time generation
(spec/gentypes.py) then imports it from there.
"""

from __future__ import annotations

from _socket import AF_INET, AF_INET6, inet_ntop

from .net import STATE_NAMES, addr_obj, comm_text, tcp_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Conversion:
    """One conversion (see the module docstring).  value/json/parse are module-level
    functions (generated code imports them by module and name); json and parse
    None mean the value is already JSON (an int, a str)."""

    __slots__ = ("name", "value", "json", "parse", "needs", "text", "kind", "env", "native")

    def __init__(self, name: str, value: Callable | None, json: Callable | None = None,
                 parse: Callable | None = None, needs: tuple[str, ...] = (),
                 text: tuple | None = None, kind: str = "", env: dict | None = None,
                 native: tuple | None = None):
        self.name, self.value, self.json, self.parse = name, value, json, parse
        self.needs, self.text, self.kind = tuple(needs), text, kind or name
        self.native = native
        # names the text expression uses besides text_env()'s (a tool's own table);
        # they start with _ like those
        self.env = env or {}


_TABLE: dict[str, Conversion] = {}


def register(conv: Conversion) -> Conversion:
    """Make a conversion known by its name (a tool's own, before its event type).
    Names are one namespace for every tool: a tool's own starts with its name
    (tcptracer_type), and a name taken twice is an error, not a silent swap
    that would change another tool's output when both are imported."""
    known = _TABLE.get(conv.name)
    if known is not None and known is not conv:
        raise ValueError(f"conversion {conv.name!r} is registered twice")
    _TABLE[conv.name] = conv
    return conv


def get(name: str) -> Conversion:
    try:
        return _TABLE[name]
    except KeyError:
        raise KeyError(f"no conversion '{name}' (known: {', '.join(sorted(_TABLE))})") from None


def names() -> list[str]:
    return sorted(_TABLE)


# -- identities: a field declared with no conversion, by its C format ------------------

def bytes_json(v: bytes) -> str:
    return v.hex()


def bytes_parse(v: Any) -> bytes:
    return v if isinstance(v, bytes) else bytes.fromhex(v)


def int_parse(v: Any) -> int:
    return int(v)


def float_parse(v: Any) -> float:
    return float(v)


def bool_parse(v: Any) -> bool:
    return v in (True, "True", "true", "1", 1)


def ints_json(v: tuple) -> list:
    return list(v)


def ints_parse(v: Any) -> tuple:
    return tuple(int(x) for x in v)


register(Conversion("int", None, None, int_parse, text=("d", "{0}"), native=("dec",)))
register(Conversion("bool", None, None, bool_parse, text=("d", "{0}")))
register(Conversion("float", None, None, float_parse, text=("f", "{0}")))
register(Conversion("bytes", None, bytes_json, bytes_parse, text=("s", "{0}.hex().encode()")))
register(Conversion("ints", None, ints_json, ints_parse))


def identity_for(fmt: str, count: int) -> str:
    """The conversion of an undeclared field, from its struct code and count (core/btf.Field)."""
    if count > 1:
        return "ints"
    if fmt.endswith("s"):
        return "bytes"
    if fmt == "?":
        return "bool"
    if fmt in ("f", "d"):
        return "float"
    return "int"


# -- numbers shown another way --------------------------------------------------------

def hex_json(v: int) -> str:
    return f"{v:x}"


def hex_parse(v: Any) -> int:
    return v if isinstance(v, int) else int(v, 16)


register(Conversion("hex", None, hex_json, hex_parse, text=("x", "{0}"), native=("hex",)))


def us_to_ms_value(v: int) -> float:
    return v / 1000.0


def ms_json(v: float) -> float:
    return round(v, 3)


# "%d.%03d" of the integer microseconds: exact, as the C tools print it
register(Conversion("us_to_ms", us_to_ms_value, ms_json, float_parse,
                    text=("%d.%03d", ("{0} // 1000", "{0} % 1000")), kind="float",
                    native=("fixed", 0, 1000, 1, 3)))


def ns_to_us_value(v: int) -> float:
    return v / 1000.0


register(Conversion("ns_to_us", ns_to_us_value, ms_json, float_parse,
                    text=("%d.%03d", ("{0} // 1000", "{0} % 1000")), kind="float",
                    native=("fixed", 0, 1000, 1, 3)))


def ns_to_ms_value(v: int) -> float:
    return v / 1e6


register(Conversion("ns_to_ms", ns_to_ms_value, ms_json, float_parse,
                    text=("%d.%03d", ("{0} // 1000000", "{0} // 1000 % 1000")), kind="float",
                    native=("fixed", 0, 1000000, 1000, 3)))


def us_to_ms2_value(v: int) -> float:
    return round(v / 1000.0, 2)


# "%.2f" of microseconds as milliseconds (BCC tcplife's MS), rounded half up in integers
register(Conversion("us_to_ms2", us_to_ms2_value, None, float_parse,
                    text=("%d.%02d", ("({0} + 5) // 1000", "({0} + 5) // 10 % 100")), kind="float",
                    native=("fixed", 5, 1000, 10, 2)))


def ns_to_ms2_value(v: int) -> float:
    return round(v / 1e6, 2)


# "%.2f" of nanoseconds as milliseconds (BCC tcpconnlat's LAT(ms))
register(Conversion("ns_to_ms2", ns_to_ms2_value, None, float_parse,
                    text=("%d.%02d", ("({0} + 5000) // 1000000", "({0} + 5000) // 10000 % 100")), kind="float",
                    native=("fixed", 5000, 1000000, 10000, 2)))


def kbytes_value(v: int) -> int:
    return v >> 10


# bytes as whole KiB (BCC's TX_KB/RX_KB columns)
register(Conversion("kbytes", kbytes_value, None, int_parse, text=("d", "{0} >> 10"), kind="int",
                    native=("dec", 1, 10)))


def whole_us_value(v: int) -> int:
    return v // 1000


# ns shown as whole microseconds (the book's LAT(us) columns); mostly a Column's form=
register(Conversion("whole_us", whole_us_value, None, int_parse, text=("d", "{0} // 1000"), kind="int",
                    native=("dec", 1000, 0)))


def ipver_value(family: int) -> int:
    """4 or 6 for AF_INET/AF_INET6 (BCC's IP column), 0 for another family."""
    return 4 if family == AF_INET else 6 if family == AF_INET6 else 0


# a family as BCC's IP column shows it; mostly a Column's form=
register(Conversion("ipver", ipver_value, None, int_parse,
                    text=("d", "(4 if {0} == 2 else 6 if {0} == 10 else 0)"), kind="int",
                    native=("names", lambda v: str(ipver_value(v)).encode(), 256)))


# -- text -----------------------------------------------------------------------------

def text_value(raw: bytes) -> str:
    return comm_text(raw)


def text_parse(v: Any) -> str:
    return str(v)


# the memo of core/net.ByteLabels: a command name is formatted once per run
register(Conversion("text", text_value, None, text_parse, text=("s", "(_cget({0}) or _comm_of({0}))"), kind="str",
                    native=("text",)))


# -- the fields of a standalone type (a tool without BPF: no raw bytes) ----------------------

register(Conversion("str", None, None, text_parse, text=("s", "str({0}).encode()"), kind="str"))
# a float shown to 3 decimals in JSON (nstat's rates)
register(Conversion("float3", None, ms_json, float_parse, text=("f", "{0}"), kind="float"))


# -- values a tool resolves itself ---------------------------------------------------------

# A field whose value the tool sets from its own tables, not from the raw value alone
# (count: a probe's index -> its tracepoint): the generated class carries it as text.
register(Conversion("resolved", None, None, text_parse, kind="str"))


def fields_parse(v: Any) -> dict:
    """A {name: value} field back from JSON (or its JSON text, as a label keeps it)."""
    if isinstance(v, str):
        import json
        return json.loads(v)
    return dict(v)


# A {name: value} the tool decodes itself (count: the values of --by fields)
register(Conversion("fields", None, None, fields_parse, kind="dict"))


# -- stacks -----------------------------------------------------------------------------

def frames_json(v: Any) -> list | None:
    return None if v is None else list(v)


def frames_parse(v: Any) -> tuple | None:
    """A stack's frame names back: a list (JSON), or a label's text, one frame a
    line ("None": no stack collected)."""
    if v is None or v == "None":
        return None
    if isinstance(v, str):
        return tuple(v.split("\n")) if v else ()
    return tuple(v)


# A stack as its frames' names, innermost first (None: stacks not collected).  The
# raw record holds a stack id: the tool resolves it (core/usyms) and makes the row.
register(Conversion("frames", None, frames_json, frames_parse, kind="frames"))


# -- addresses --------------------------------------------------------------------------

def address_value(raw: bytes, family: int):
    """ipaddress.IPv4Address / IPv6Address of a 16-byte field (v4 in the first 4), None
    for another family."""
    return addr_obj(family, raw)


def address_json(addr: Any) -> str | None:
    """The text inet_ntop gives, which is also the CLI's: an IPv4-mapped address
    is ::ffff:192.0.2.1 (str() of an IPv6Address says ::ffff:c000:201 before
    Python 3.13)."""
    if addr is None:
        return None
    if addr.version == 6:
        return inet_ntop(AF_INET6, addr.packed)
    return str(addr)


def address_parse(v: Any):
    import ipaddress
    if v is None or v in ("", "None", "?"):
        return None
    return v if not isinstance(v, str) else ipaddress.ip_address(v)


register(Conversion("address", address_value, address_json, address_parse, needs=("family",),
                    text=("s", "((_a4get({0}) if {1} == 2 else _a6get({0}) if {1} == 10 else None) "
                               "or _addr({1}, {0}))"), native=("addr",)))


class _Memo(dict):
    """value -> its converted value, made once: an enum's constructor costs
    about a microsecond, a dict lookup a few dozen nanoseconds."""

    def __init__(self, make: Callable[[Any], Any]):
        super().__init__()
        self.make = make

    def __missing__(self, value: Any) -> Any:
        out = self[value] = self.make(value)
        return out


def _family_member(v: int):
    import socket      # the text path never needs it (~1.5 ms)
    try:
        return socket.AddressFamily(v)
    except ValueError:
        return v


_FAMILIES = _Memo(_family_member)


def family_value(v: int):
    """socket.AddressFamily (AF_INET == 2 still holds), or the number for an unknown one."""
    return _FAMILIES[v]


def enum_json(v: Any) -> Any:
    """An enum member by name, anything else as it is."""
    return getattr(v, "name", v)


def family_parse(v: Any):
    import socket
    if isinstance(v, str) and not v.isdigit():
        return socket.AddressFamily[v]
    return family_value(int(v))


register(Conversion("family", family_value, enum_json, family_parse,
                    text=("s", "_family_names[{0}]"), kind="enum",
                    native=("names", lambda v: _FAMILY_NAMES[v], 256)))


_IP_PROTOCOL = None


def ip_protocol_enum():
    """IpProtocol: an IntEnum of the IPPROTO_* numbers (socket's names, and
    IPPROTO_MPTCP), made on first use (the text path never needs it)."""
    global _IP_PROTOCOL
    if _IP_PROTOCOL is None:
        import enum
        import socket
        names = {v: k for k, v in sorted(vars(socket).items()) if k.startswith("IPPROTO_") and isinstance(v, int)
                 and k not in ("IPPROTO_HOPOPTS", "IPPROTO_MAX")}
        names.update({0: "IPPROTO_IP", 262: "IPPROTO_MPTCP"})
        _IP_PROTOCOL = enum.IntEnum("IpProtocol", [(n, v) for v, n in sorted(names.items())], module=__name__)
    return _IP_PROTOCOL


def _protocol_member(v: int):
    try:
        return ip_protocol_enum()(v)
    except ValueError:
        return v


_PROTOCOLS = _Memo(_protocol_member)


def ip_protocol_value(v: int):
    """IpProtocol (IPPROTO_UDP == 17 still holds), or the number for one it does not name."""
    return _PROTOCOLS[v]


def ip_protocol_parse(v: Any):
    if isinstance(v, str) and not v.isdigit():
        return ip_protocol_enum()[v]
    return ip_protocol_value(int(v))


class _ProtocolNames(dict):
    def __missing__(self, key: int) -> bytes:
        name = self[key] = getattr(ip_protocol_value(key), "name", f"IPPROTO_{key}").encode()
        return name


register(Conversion("ip_protocol", ip_protocol_value, enum_json, ip_protocol_parse, kind="enum",
                    text=("s", "_ip_protocol_names[{0}]"), env={"_ip_protocol_names": _ProtocolNames()}))


_TCP_STATES = _Memo(tcp_state)


def tcp_state_value(v: int):
    """net.TcpState, or the number for one it does not name."""
    return _TCP_STATES[v]


def tcp_state_parse(v: Any):
    if isinstance(v, str) and not v.isdigit():
        from .net import TcpState
        return TcpState[v]
    return tcp_state(int(v))


register(Conversion("TcpState", tcp_state_value, enum_json, tcp_state_parse,
                    text=("s", "_tcp_state_names[{0}]"), kind="enum",
                    native=("names", lambda v: _TCP_STATE_NAMES[v], 256)))


# -- what the text expressions above refer to --------------------------------------------

def text_env(context: dict) -> dict:
    """The names the `text` expressions use, for one renderer: memoised labels
    (core/net.ByteLabels) and name tables.  context keeps what is made once per
    renderer (the ByteLabels, the Clock).  The names start with _: in a
    compiled row every raw field is a variable of its own name (a struct with
    a field addr would hide a function addr)."""
    from .net import ByteLabels
    labels = context.get("labels")
    if labels is None:
        labels = context["labels"] = ByteLabels()
    return {**{"_" + name: value for name, value in labels.row_env().items()},
            "_tcp_state_names": _TCP_STATE_NAMES, "_family_names": _FAMILY_NAMES}


_TCP_STATE_NAMES = tuple(n.encode() for n in STATE_NAMES)


class _Names(dict):
    """Known numbers' names; any other number as its digits (a u16 field has 65536)."""

    def __missing__(self, key: int) -> bytes:
        return str(key).encode()


_FAMILY_NAMES = _Names({0: b"AF_UNSPEC", 1: b"AF_UNIX", AF_INET: b"AF_INET", AF_INET6: b"AF_INET6", 17: b"AF_PACKET"})
