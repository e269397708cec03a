"""Text output derived from columns (pytrace/spec/text.py), exact to the byte,
over raw records made here: no BPF needed."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from helpers import captured_output, printed_lines
from pytrace.spec import Column, EventType
from pytrace.spec.text import event_text, table

# raw field names chosen to collide with what the compiled row's helpers might be called
FIELDS = ("addr", "fmt", "hms", "family", "comm", "delta_us", "state", "ts_ns")
EVENT = EventType("Odd", struct="odd_event", fields="""
    laddr <- addr: address
    comm: text
    ms <- delta_us: us_to_ms
    state: TcpState
""")


class Source:
    raw_fields = FIELDS

    def project(self, fields) -> None:
        self.projected = set(fields)


def raw(addr: str, fmt: int, ms_us: int, state: int, family: int = socket.AF_INET) -> tuple:
    packed = socket.inet_pton(family, addr)
    return (packed.ljust(16, b"\0"), fmt, 7, family, b"curl\0\0\0\0\0\0\0\0\0\0\0\0", ms_us, state, 10**9)


def test_columns_compile_to_exact_lines_whatever_the_fields_are_called():
    columns = (Column("LADDR", "laddr", width=lambda a: 39 if a.wide else 15), Column("FMT", "fmt", width=5),
               Column("HMS", "hms", width=3, align=">"), Column("COMM", "comm", width=6), Column("STATE", "state",
               width=11), Column("->"), Column("MS", "ms"))
    source, out = Source(), captured_output()
    render = event_text(columns, EVENT, source, SimpleNamespace(wide=False), out)
    out.write(render([raw("192.0.2.1", 80, 1500, 1), raw("2001:db8::1", 443, 12, 10, socket.AF_INET6),
                      raw("::ffff:192.0.2.9", 1, 0, 99, socket.AF_INET6)]))
    assert printed_lines(out) == [
        "LADDR           FMT   HMS COMM   STATE       -> MS",
        "192.0.2.1       80      7 curl   ESTABLISHED -> 1.500",
        "2001:db8::1     443     7 curl   LISTEN      -> 0.012",
        "::ffff:192.0.2.9 1       7 curl   99          -> 0.000",
    ]
    # only the raw fields the columns read are decoded (ts_ns is not shown)
    assert source.projected >= {"addr", "family", "fmt", "hms", "comm", "delta_us", "state"}
    assert "ts_ns" not in source.projected


def test_optional_columns_and_literals():
    columns = (Column("FMT", "fmt", width=4, when="verbose"), Column("MS", "ms", width=8, align=">"))
    for verbose, want in ((True, ["FMT        MS", "80      1.500"]), (False, ["      MS", "   1.500"])):
        out = captured_output()
        out.write(event_text(columns, EVENT, Source(), SimpleNamespace(verbose=verbose), out)([raw("192.0.2.1", 80,
                                                                                                1500, 1)]))
        assert printed_lines(out) == want


def test_a_table_of_rows():
    columns = (Column("PID", "pid", width=5), Column("COMM", "comm", width=4, clip=True),
               Column("ADDR", lambda d: f"{d['addr']}:{d['port']}", width=16),
               Column("KB", lambda d: d["bytes"] // 1024, width=4, align=">"))
    text = table(columns, [{"pid": 1, "comm": "python3", "addr": "::ffff:192.0.2.1", "port": 80, "bytes": 4096},
                           {"pid": 22, "comm": "sh", "addr": "192.0.2.2", "port": 443, "bytes": 10}],
                 SimpleNamespace())
    assert text == ("PID   COMM ADDR               KB\n"
                    "1     pyth ::ffff:192.0.2.1:80    4\n"
                    "22    sh   192.0.2.2:443       0\n")


def test_time_since_the_first_event():
    """form="since_first": BCC's TIME(s), 0 at the first record printed, not at the tool's start."""
    columns = (Column("TIME(s)", "ts_ns", width=13, form="since_first", precision=".9"), Column("FMT", "fmt"))
    out = captured_output()
    render = event_text(columns, EVENT, Source(), SimpleNamespace(), out)
    first = raw("192.0.2.1", 80, 0, 1)
    out.write(render([first[:-1] + (5 * 10**9,), first[:-1] + (5 * 10**9 + 1500,)]))
    out.write(render([first[:-1] + (7 * 10**9 + 250_000_000,)]))
    assert printed_lines(out) == ["TIME(s)       FMT", "0.000000000   80", "0.000001500   80", "2.250000000   80"]
