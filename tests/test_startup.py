"""Start-up of the event tools timed from exec to first line (tcpstates, tcplife):
their command line imports nothing it does not need, and the event classes it
therefore makes on first use are still public, frozen and slotted (both
generated from BTF at build time)."""

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
import dataclasses, pickle, sys, typing
import pytrace
from pytrace import tools as registry
from pytrace.tools import tcplife, tcpstates
assert "TcpStateChange" not in vars(tcpstates) and "TcpSession" not in vars(tcplife)
assert "pytrace.gen.tcpstates" not in sys.modules        # nothing made the generated classes yet
assert "pytrace.gen.tcplife" not in sys.modules
# the exporter finds the fields of the events a tool makes: its SPEC's event type
assert {"laddr", "newstate"} <= registry.command("tcpstates").event_fields()
assert {"laddr", "rx_bytes"} <= registry.command("tcplife").event_fields()
from pytrace.tools.tcplife import TcpSession
from pytrace.tools.tcpstates import TcpStateChange
assert pytrace.TcpStateChange is TcpStateChange is tcpstates.TcpStateChange is tcpstates.TcpStates.EVENT_TYPE.cls

# tcpstates: the class generated from its object's BTF (spec/gentypes.py), frozen and slotted
assert not dataclasses.is_dataclass(TcpStateChange) and "__slots__" in vars(TcpStateChange)
assert TcpStateChange.__module__ == "pytrace.gen.tcpstates" and TcpStateChange.__qualname__ == "TcpStateChange"
assert TcpStateChange.FIELDS == ("ts_ns", "skaddr", "pid", "comm", "family", "laddr", "lport", "raddr", "rport",
                                 "oldstate", "newstate", "ms", "cgroup_id", "netns")     # the last two: filter.h's
import ipaddress, socket
from pytrace.core.net import TcpState
ev = TcpStateChange(1, 0xff, 2, "c", socket.AF_INET, ipaddress.ip_address("192.0.2.1"), 3,
                    ipaddress.ip_address("192.0.2.2"), 4, TcpState.SYN_SENT, TcpState.ESTABLISHED, 0.5, 7, 8)
assert pickle.loads(pickle.dumps(ev)) == ev and not hasattr(ev, "__dict__")
assert hash(ev) == hash(pickle.loads(pickle.dumps(ev)))
for attempt in (lambda: setattr(ev, "pid", 5), lambda: delattr(ev, "pid")):
    try:
        attempt()
    except AttributeError:
        pass
    else:
        raise AssertionError("not frozen")
assert repr(ev).startswith("TcpStateChange(ts_ns=1, skaddr=255, pid=2, comm='c'")
assert ev.to_dict() == {"ts_ns": 1, "skaddr": "ff", "pid": 2, "comm": "c", "family": "AF_INET",
                        "laddr": "192.0.2.1", "lport": 3, "raddr": "192.0.2.2", "rport": 4,
                        "oldstate": "SYN_SENT", "newstate": "ESTABLISHED", "ms": 0.5, "cgroup_id": 7, "netns": 8}
assert TcpStateChange.from_dict(ev.to_dict()) == ev

# tcplife: generated too, from struct tcplife_event
assert not dataclasses.is_dataclass(TcpSession) and TcpSession.__module__ == "pytrace.gen.tcplife"
assert TcpSession is tcplife.TcpSession is tcplife.TcpLife.EVENT_TYPE.cls
assert TcpSession.FIELDS == ("ts_ns", "pid", "comm", "family", "laddr", "lport", "raddr", "rport", "tx_bytes",
                             "rx_bytes", "ms", "cgroup_id", "netns")
s = TcpSession(1, 2, "c", socket.AF_INET6, ipaddress.ip_address("::ffff:192.0.2.1"), 3,
               ipaddress.ip_address("2001:db8::1"), 4, 5, 6, 1.5, 0, 0)
assert s.to_dict()["laddr"] == "::ffff:192.0.2.1" and TcpSession.from_dict(s.to_dict()) == s
"""


def test_event_classes_made_on_first_use():
    # a fresh interpreter: in this one, other tests have made the classes already
    done = subprocess.run([sys.executable, "-c", CLASSES], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
