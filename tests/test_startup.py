"""Start-up of the event tools timed from exec to first line (tcpstates, tcplife):
their command line imports nothing it does not need, and the event classes it
therefore makes on first use are still the public frozen slotted dataclasses."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from helpers import Cli, free_port, tcp_roundtrip

# Each of these costs a tool ~1-8 ms from exec to first line (Python 3.11), and
# the text output needs none of them (--json and the library may import them).
NOT_AT_START = {"dataclasses", "inspect", "typing", "pathlib", "shutil", "socket", "ipaddress", "bisect"}


@pytest.mark.parametrize("tool,head", [("tcpstates", "SKADDR"), ("tcplife", "PID")])
def test_text_output_imports_no_heavy_module(tool, head):
    port = free_port()
    cli = Cli(tool, "-L", str(port), env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        assert cli.read_until(lambda line: line.startswith(head)) is not None
        conn = tcp_roundtrip(port=port)
        # an event line: the renderer formatted addresses and a command name
        assert cli.read_until(lambda line: str(conn.client_port) in line.split()) is not None
    finally:
        rc, _, err = cli.stop()
    assert rc == 0, err
    imported = {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert {"argparse", "pytrace.core.stream"} <= imported
    assert imported & NOT_AT_START == set()


def test_records_are_named_tuples_without_collections():
    """core/records stands in for collections.namedtuple on the start-up path."""
    from pytrace.core.loader import Variant
    v = Variant("tp_btf", ("a", "b"))
    assert v == ("tp_btf", ("a", "b"), "", "") and (v.hook, v.programs, v.note, v.needs) == v
    assert Variant("raw_tp", programs=("c",), note="n") == Variant(*("raw_tp", ("c",), "n"))
    assert repr(v) == "Variant(hook='tp_btf', programs=('a', 'b'), note='', needs='')"
    assert pickle.loads(pickle.dumps(v)) == v and type(pickle.loads(pickle.dumps(v))) is Variant
    assert Variant._fields == ("hook", "programs", "note", "needs") and not hasattr(v, "__dict__")
    assert {v: 1}[Variant("tp_btf", ("a", "b"))] == 1
    for bad in (lambda: Variant(), lambda: Variant("a", (), "", "", "extra"), lambda: Variant("a", hook="b"),
                lambda: Variant("a", nope=1)):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(AttributeError):
        v.hook = "x"


CLASSES = """
import dataclasses, pickle, typing
import pytrace
from pytrace.tools import tcplife, tcpstates
from pytrace.commands import exporter
assert "TcpStateChange" not in vars(tcpstates) and "TcpSession" not in vars(tcplife)
# the exporter finds the fields of the events a tracer makes, from make_event's annotation
assert {"laddr", "newstate"} <= exporter._event_fields(tcpstates.TcpStates)
assert {"laddr", "rx_bytes"} <= exporter._event_fields(tcplife.TcpLife)
from pytrace.tools.tcplife import TcpSession
from pytrace.tools.tcpstates import TcpStateChange
assert pytrace.TcpStateChange is TcpStateChange is tcpstates.TcpStateChange
for cls, module in ((TcpStateChange, tcpstates), (TcpSession, tcplife)):
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen and "__slots__" in vars(cls)
    assert (cls.__module__, cls.__qualname__, cls.to_dict.__qualname__) == \\
        (module.__name__, cls.__name__, cls.__name__ + ".to_dict")
    hints = typing.get_type_hints(cls)
    assert typing.get_type_hints(module.TcpStates.make_event if module is tcpstates else
                                 module.TcpLife.make_event)["return"] is cls
    assert hints["laddr"] == hints["raddr"] and hints["ms"] is float
import ipaddress
from pytrace.core.net import TcpState
ev = TcpStateChange(1, 0xff, 2, "c", 2, ipaddress.ip_address("192.0.2.1"), 3, ipaddress.ip_address("192.0.2.2"), 4,
                    TcpState.SYN_SENT, TcpState.ESTABLISHED, 0.5)
assert pickle.loads(pickle.dumps(ev)) == ev and not hasattr(ev, "__dict__")
try:
    ev.pid = 5
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("not frozen")
assert repr(ev).startswith("TcpStateChange(ts_ns=1, skaddr=255, pid=2, comm='c'")
assert ev.to_dict()["laddr"] == "192.0.2.1" and ev.to_dict()["newstate"] == "ESTABLISHED"
"""


def test_event_classes_made_on_first_use():
    # a fresh interpreter: in this one, other tests have made the classes already
    done = subprocess.run([sys.executable, "-c", CLASSES], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
