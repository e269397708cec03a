"""Columns, and the text output derived from them.

A Column is a header over one field:

    Column("LADDR", "laddr", width=lambda args: 39 if args.wide else 15)
    Column("->")                                   # a literal, in the header and every row
    Column("TIME", "ts_ns", width=8, form="hms", when="timestamp")   # only with -T

width is a number or a function of the parsed arguments (None: the last,
unpadded column); align "<" or ">"; precision a printf precision (".10" cuts
a text to 10 characters, ".6" gives a number six decimals), or a function of
the arguments; when: the argument (name, or function of the arguments) that
shows the column.

Event tools: event_text() turns the columns into the CLI's hot path.  Each
column's field is traced back through the event type's declaration to its
raw field and conversion (`laddr <- saddr: address`), whose `text` form
(core/convert.py) prints the raw value directly: one compiled comprehension
per run (core/rows.py) formats whole batches of raw tuples into bytes, and
the tracer decodes only the raw fields the shown columns need
(EventTracer.project).  Where every shown column's conversion has a native
form too, the same line is also compiled into a program of the native
formatter (core/rowfmt.py, src/native/rowfmt.c), and the live tracer's ring
hands over its batches as bytes (core/ringbuf.RawBatch) that it prints
without making a tuple: ~0.25 us a line against ~2.3 us, byte for byte the
same (tests/unit/test_rowfmt.py).  form= picks another text form than the field's
conversion ("hms", "since_start": cli/cliutil.Clock's times; "since_first":
seconds since the first event printed, BCC's TIME(s)).  csv=True prints the
same columns comma separated, unpadded and uncut (BCC's -s/--csv): literal
columns are left out, a number keeps its precision.

Interval tools: table() prints rows (their to_dict(), so an address reads
the same as in --json) under the same kind of columns; field may then be a
function of the row's dict (Column("LADDR", lambda d: f"{d['laddr']}:{d['lport']}")).
"""

from __future__ import annotations

from ..core import convert
from ..core.rows import field_variable, compile_rows

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .eventtype import EventType


class Column:
    __slots__ = ("header", "field", "width", "align", "form", "precision", "when", "clip")

    def __init__(self, header: str, field: str | Callable[[dict], Any] | None = None, *,
                 width: int | Callable[[Any], int] | None = None, align: str = "<", form: str | None = None,
                 precision: str | Callable[[Any], str] = "", when: str | Callable[[Any], bool] | None = None,
                 clip: bool = False):
        if align not in ("<", ">"):
            raise ValueError(f"column {header}: align is '<' or '>'")
        self.header, self.field, self.width, self.align = header, field, width, align
        self.form, self.precision, self.when, self.clip = form, precision, when, clip

    def shown(self, args: Any) -> bool:
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return bool(getattr(args, self.when, False))
        return bool(self.when(args))

    def width_for(self, args: Any) -> int | None:
        return self.width(args) if callable(self.width) else self.width

    def precision_for(self, args: Any) -> str:
        return self.precision(args) if callable(self.precision) else self.precision

    def head(self, args: Any) -> str:
        w = self.width_for(args)
        return self.header if w is None else f"{self.header:{self.align}{w}}"

    def but(self, **changes: Any) -> Column:
        """A copy with some settings changed (an IPv6 table's wider address column)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        header, field = values.pop("header"), values.pop("field")
        return Column(header, field, **values)

    def __repr__(self) -> str:
        return f"Column({self.header!r}, {self.field!r})"


def header_line(columns: list[Column], args: Any, csv: bool = False) -> str:
    if csv:
        return ",".join(c.header for c in columns if c.field is not None) + "\n"
    return " ".join(c.head(args) for c in columns) + "\n"


# -- event tools: the compiled hot path ---------------------------------------------------

# Text forms of the times of a record's monotonic timestamp (cli/cliutil.Clock)
TIME_FORMS = {
    "hms": ("s", "_hms({0})"),                          # HH:MM:SS, local time
    "since_start": ("f", "(({0}) - _start_ns) / 1e9"),  # seconds since the tool started
    "since_first": ("f", "_since_first({0})"),          # seconds since the first event (BCC's TIME(s))
    "since_first_ns": ("d", "_since_first.ns({0})"),    # the same in nanoseconds (tcptracer -v -t)
}


def _time_env(context: dict) -> dict:
    from ..cli.cliutil import Clock, SinceFirst
    clock = context.get("clock")
    if clock is None:
        clock = context["clock"] = Clock()
    last = [-1, b""]
    offset = clock.offset

    def hms(mono_ns: int) -> bytes:
        sec = (mono_ns + offset) // 1_000_000_000
        if sec != last[0]:
            last[0], last[1] = sec, clock.hms(mono_ns).encode()
        return last[1]
    first = SinceFirst()
    return {"_hms": hms, "_start_ns": clock.start_ns, "_since_first": first}


class CompiledText:
    """What event_text() derived from the columns: header, per-row format,
    expressions and the raw fields they read; native: the same line as a
    program of the native formatter (core/rowfmt.py), or None."""

    def __init__(self, header: str, fmt: str, exprs: list[str], raw: set[str], env: dict,
                 native: Any = None):
        self.header, self.fmt, self.exprs, self.raw, self.env = header, fmt, exprs, raw, env
        self.native = native


def compile_columns(columns: list[Column], et: EventType, args: Any, raw_names: tuple[str, ...],
                    csv: bool = False, layout: Any = None) -> CompiledText:
    """The header and the row format of the shown columns of an event tool
    (csv: comma separated, unpadded).  layout (the records' core/btf.Layout):
    also the native program, when every shown column has a native form."""
    from ..core import rowfmt
    context: dict = {}
    env = convert.text_env(context)
    pieces, exprs, raw = [], [], set()
    by_base = _raw_variables(raw_names)
    native = rowfmt.Program() if layout is not None else None
    separator = "," if csv else " "
    for c in columns:
        if native is not None and pieces and (c.field is not None or not csv):
            native.literal(separator.encode())     # what joins this column's piece to the last
        width = None if csv else c.width_for(args)
        if c.field is None:                 # a literal
            if not csv:
                pieces.append(c.header.replace("%", "%%"))
                if native is not None:
                    native.literal(c.header.encode())
            continue
        decl = et.field(c.field)
        conv = None
        if c.form in TIME_FORMS:
            code, template = TIME_FORMS[c.form]
            needs: tuple[str, ...] = ()
            if "_hms" not in env:
                env.update(_time_env(context))
        else:
            conv = convert.get(c.form or decl.conversion or "int")
            if conv.text is None:
                raise ValueError(f"column {c.header}: conversion {conv.name} has no text form; give form=")
            code, template = conv.text
            env.update(conv.env)
            needs = decl.args if decl.args is not None else conv.needs
        names = [decl.raw, *needs]
        for n in names:
            if n not in by_base:
                raise ValueError(f"column {c.header}: no raw field {n} in {et.name}'s records")
            raw.update(by_base[n])
        variables = [_variable(by_base[n]) for n in names]
        precision = c.precision_for(args) or ""
        if csv and code == "s":
            precision = ""                  # a text is printed whole
        flags = ("-" if c.align == "<" and width else "") + (str(width) if width else "") + precision
        if native is not None:
            form = ("hms", context["clock"].offset) if c.form == "hms" else conv.native if conv else None
            native = _native_column(native, form, layout, names, width, c.align == "<", precision)
        if isinstance(template, tuple):     # several values, one format of its own ("%d.%03d")
            values = [t.format(*variables) for t in template]
            if width:
                pieces.append(f"%{flags}s")
                exprs.append(f"(b{code!r} % ({', '.join(values)},))")
            else:
                pieces.append(code)
                exprs.extend(values)
        else:
            pieces.append(f"%{flags}{code}")
            exprs.append(template.format(*variables))
    if native is not None:
        native.literal(b"\n")
    return CompiledText(header_line(columns, args, csv), separator.join(pieces) + "\n", exprs, raw, env, native)


def _native_column(program: Any, form: tuple | None, layout: Any, names: list[str], width: int | None,
                   left: bool, precision: str) -> Any:
    """program with this column's op added, or None when the column has no
    native form (form None: a time form other than hms, a conversion without
    one) or a field the native formatter cannot read."""
    from ..core.rowfmt import Unsupported
    if form is None:
        return None
    cut = None
    if precision:
        if not precision[1:].isdigit():
            return None
        cut = int(precision[1:])
    try:
        fields = [layout.field(n) for n in names]
        program.field(form, fields[0], fields[1] if len(fields) > 1 else None, width, left, cut)
    except (KeyError, Unsupported):
        return None
    return program


def _raw_variables(raw_names: tuple[str, ...]) -> dict[str, list[str]]:
    """raw base name -> the raw tuple's names for it (an array has name[0], name[1], ...)."""
    out: dict[str, list[str]] = {}
    for name in raw_names:
        out.setdefault(name.split("[", 1)[0], []).append(name)
    return out


def _variable(names: list[str]) -> str:
    """The expression of a raw field in a compiled row (core/rows binds field_variable(name))."""
    if len(names) == 1:
        return field_variable(names[0])
    return "(" + ", ".join(field_variable(n) for n in names) + ",)"


def event_text(columns: tuple[Column, ...], et: EventType, source: Any, args: Any, out: Any,
               csv: bool = False) -> Callable[[list[tuple]], bytes]:
    """The text renderer of an event tool: writes the header, then returns
    render(batch) -> bytes.  source: the live tracer, or replay's stand-in
    (only its raw_fields and project() are used).  csv: comma separated."""
    shown = [c for c in columns if c.shown(args)]
    layout_names = tuple(source.raw_fields)
    ring = getattr(source, "ring", None)      # a live tracer's (replay's stand-in has none)
    compiled = compile_columns(shown, et, args, layout_names, csv,
                               layout=source.layout if ring is not None else None)
    out.write(compiled.header)
    source.project({n.split("[", 1)[0] for n in compiled.raw} | compiled.raw)
    rows = compile_rows(source.raw_fields, f"_fmt % ({', '.join(compiled.exprs)},)",
                        {"_fmt": compiled.fmt.encode(), **compiled.env})

    def render(batch: list[tuple]) -> bytes:
        return b"".join(rows(batch))
    if compiled.native is None:
        return render
    native = compiled.native.formatter(ring.stride, ring.header, lambda record: render([record]))
    if native is None:
        return render
    # From here the ring hands over its batches as bytes (core/ringbuf.RawBatch);
    # a batch made of tuples (a final drain of several, a spare ring's records
    # placed among them) is printed the CPython way.
    ring.raw = True
    from ..core.ringbuf import RawBatch
    run = native.format

    def render_raw(batch: Any) -> bytes:
        if type(batch) is RawBatch:
            return run(batch)
        return b"".join(rows(batch))
    return render_raw


# -- interval tools: rows under columns ---------------------------------------------------------

def cell(c: Column, row: dict, args: Any) -> str:
    if c.field is None:
        return c.header
    value = c.field(row) if callable(c.field) else row[c.field]
    text = "" if value is None else str(value)
    width = c.width_for(args)
    if width is None:
        return text
    if c.clip:
        text = text[:width]
    return f"{text:{c.align}{width}}"


# --show-container of a table or top tool: the row's container (its labels' short name)
CONTAINER = Column("CONTAINER", lambda d: d.get("container") or "-", width=16, clip=True, when="show_container")


def table(columns: tuple[Column, ...] | list[Column], rows: list[Any], args: Any) -> str:
    """A header and a line per row (rows: events/rows with to_dict(), or dicts;
    a labelled row's container is its "container", for the CONTAINER column)."""
    shown = [c for c in columns if c.shown(args)]
    lines = [header_line(shown, args)]
    for r in rows:
        d = r if isinstance(r, dict) else r.to_dict()
        if getattr(r, "labels", None) is not None:
            d = {**d, "container": r.labels.short}
        lines.append(" ".join(cell(c, d, args) for c in shown) + "\n")
    return "".join(lines)
