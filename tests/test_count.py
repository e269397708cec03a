"""count over tracepoints the test fires a known number of times, filtered by
its own pid (other tests run on this kernel at the same time)."""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest

from helpers import free_port, netns, run_cli, sh, wait_until
from ready import started
from test_influx import ENV as INFLUX_ENV, influx  # noqa: F401 (the fixture: a private InfluxDB)
from matrix import covers
from pytrace.core.netattach import in_netns
from pytrace.core.tracepoints import parse_filter, parse_format, resolve
from pytrace.tools.count import ProbeCount, TracepointCount

ME = os.getpid()
UDP_HDRS = 14 + 20 + 8       # ethernet (lo and dummy devices have one) + IPv4 + UDP headers


def failed_connects(n: int) -> None:
    port = free_port()                       # nothing listens there: ECONNREFUSED
    for _ in range(n):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def good_connects(n: int) -> None:
    """n blocking connects that succeed (ret 0), plus one listening socket."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(n)
        for _ in range(n):
            with socket.socket() as s:
                s.connect(srv.getsockname())


class DummyNet:
    """A namespace of the test's own with a veth pair whose far end is a static
    neighbour: datagrams sent there pass net_dev_xmit under a device name no one
    else uses (and are dropped by the peer, which is not their destination)."""

    def __init__(self) -> None:
        self.ns = f"pt-count-{ME}"
        self.dev = f"ptc{ME % 100000}"

    def __enter__(self) -> "DummyNet":
        self._ns = netns(self.ns)
        self._ns.__enter__()
        try:
            n, d = self.ns, self.dev
            sh(f"ip -n {n} link add {d} type veth peer name {d}p && ip -n {n} addr add 192.0.2.1/24 dev {d} && "
               f"ip -n {n} link set {d} up && ip -n {n} link set {d}p up && "
               f"ip -n {n} neigh add 192.0.2.2 lladdr 02:00:00:00:00:02 dev {d} nud permanent")
            with in_netns(self.ns):
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException:
            self._ns.__exit__(None, None, None)
            raise
        return self

    def send(self, n: int, size: int) -> None:
        for _ in range(n):
            self.sock.sendto(b"x" * size, ("192.0.2.2", 9))

    def __exit__(self, *exc) -> None:
        self.sock.close()
        self._ns.__exit__(*exc)


@covers("count", "tracepoint")
def test_failed_connects_by_errno_exactly():
    """The chapter's one-liner: count failed connects by errno, in the kernel."""
    with TracepointCount(["syscalls:sys_exit_connect"], by=["ret"], filters=["ret < 0"], pid=ME) as c:
        failed_connects(7)
        good_connects(3)                      # ret == 0: filtered out in the kernel
        got = c.counts()
    assert got == [ProbeCount("syscalls:sys_exit_connect", (("ret", -errno.ECONNREFUSED),), 7)]


@pytest.mark.matrix
def test_more_tracepoints_than_fixed_programs_share_one_by_cookie():
    """Over FIXED_PROBES tracepoints share count_tracepoint, told apart by BPF
    cookie (5.15+); where the kernel has no cookies, one line says so."""
    from pytrace.core import kernel_btf
    from pytrace.core.errors import PytraceError
    from pytrace.tools.count import FIXED_PROBES
    specs = ["syscalls:sys_e*_connect", "syscalls:sys_e*_socket", "syscalls:sys_e*_bind", "syscalls:sys_e*_listen",
             "syscalls:sys_e*_accept4", "syscalls:sys_e*_getsockname", "syscalls:sys_e*_setsockopt",
             "syscalls:sys_e*_getsockopt", "syscalls:sys_e*_shutdown"]
    c = TracepointCount(specs, pid=ME)
    if "BPF_FUNC_get_attach_cookie" not in kernel_btf.enum_values("bpf_func_id").values():
        with pytest.raises(PytraceError, match=f"at most {FIXED_PROBES} at once"):
            c.open()
        return
    with c:
        assert len(c.names) == 18 > FIXED_PROBES and c.variant.programs == ("count_tracepoint",)
        failed_connects(3)
        totals = c.totals()
    assert (totals["syscalls:sys_enter_connect"], totals["syscalls:sys_exit_connect"]) == (3, 3)
    assert totals["syscalls:sys_enter_socket"] == totals["syscalls:sys_exit_socket"] == 4   # free_port's, 3 connects


def test_probes_are_told_apart_by_cookie_and_wildcards_expand():
    with TracepointCount(["t:syscalls:sys_e*_connect", "syscalls:sys_enter_socket"], pid=ME) as c:
        assert c.names == ["syscalls:sys_enter_connect", "syscalls:sys_exit_connect",
                           "syscalls:sys_enter_socket"]
        failed_connects(4)
        good_connects(2)
        totals = c.totals()
    # socket() calls: free_port's, 4 failed, 2 good, 1 listener
    assert totals == {"syscalls:sys_enter_connect": 6, "syscalls:sys_exit_connect": 6,
                      "syscalls:sys_enter_socket": 8}


def test_string_filter_and_keys_on_a_data_loc_field():
    size = 321
    with DummyNet() as net:
        filt = f'name == "{net.dev}" && len > 300'
        with TracepointCount(["net:net_dev_xmit"], by=["name", "len"], filters=[filt], pid=ME) as c:
            net.send(5, size)
            net.send(3, 100)                  # len <= 300: filtered out
            got = c.counts()
        assert got == [ProbeCount("net:net_dev_xmit", (("name", net.dev), ("len", size + UDP_HDRS)), 5)]

        with TracepointCount(["net:net_dev_xmit"], by=["name"], filters=[f"name != {net.dev}"], pid=ME) as c:
            net.send(4, size)
            assert [pc for pc in c.counts() if pc.key[0][1] == net.dev] == []


def test_intervals_reset_and_a_full_key_table_is_reported():
    with DummyNet() as net, TracepointCount(["net:net_dev_xmit"], by=["len"], filters=[f"name == {net.dev}"],
                                            pid=ME, max_keys=2) as c:
        for size in (10, 20, 30, 40):
            net.send(2, size)
        first = c.counts(clear=True)
        assert sum(pc.count for pc in first) + c.dropped == 8
        assert len(first) == 2 and c.dropped == 4
        net.send(1, 50)
        assert c.counts() == [ProbeCount("net:net_dev_xmit", (("len", 50 + UDP_HDRS),), 1)]


def test_cli_json_counts_failed_connects():
    cli = started("count", "syscalls:sys_exit_connect", "--filter", "ret<0", "--by", "ret",
              "-p", str(ME), "--json", links=1)
    failed_connects(5)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    recs = cli.json_records()
    assert [(r["tracepoint"], r["key"], r["count"]) for r in recs] == \
        [("syscalls:sys_exit_connect", {"ret": -111}, 5)]


def test_cli_text_table():
    cli = started("count", "syscalls:sys_exit_connect", "--by", "ret", "-p", str(ME), links=1)
    failed_connects(2)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert lines[0].startswith("Tracing 1 tracepoint")
    assert lines[1].split() == ["TRACEPOINT", "RET", "COUNT"]
    assert lines[2].split() == ["syscalls:sys_exit_connect", "-111", "(ECONNREFUSED)", "2"]


@pytest.mark.parametrize("argv,words", [
    (["net:net_dev_xmitt"], ["unknown tracepoint", "net:net_dev_xmit"]),
    (["syscalls:sys_exit_conect"], ["near:", "syscalls:sys_exit_connect"]),
    (["net:net_dev_xmit", "--by", "nosuch"], ["no field 'nosuch'", "len"]),
    (["net:net_dev_xmit", "--filter", "len < lo"], ["not a number"]),
    (["net:net_dev_xmit", "--filter", "name > lo"], ["== and !="]),
    (["net:net_dev_xmit", "--filter", "len"], ["FIELD OP VALUE"]),
    (["net:net_dev_xmit", "-i", "0"], ["greater than 0"]),
    (["nocolon"], ["category:name"]),
])
def test_bad_input_exits_2_with_one_line(argv, words):
    r = run_cli("count", *argv)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert all(w in r.stderr for w in words), r.stderr


def test_format_and_filter_parsing():
    fmt = parse_format("\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n"
                       "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n"
                       "\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n"
                       "\tfield:long sysctl_mem[3];\toffset:32;\tsize:24;\tsigned:1;\n")
    assert fmt["common_pid"].ref() == 4 | 4 << 16 | 1 << 24 | 1 << 28
    assert fmt["comm"].is_str and fmt["name"].is_str and fmt["sysctl_mem"].kind == 0
    c1, c2 = parse_filter("ret < 0 && ret != -EINPROGRESS")
    assert (c1.op, c1.value, c2.op, c2.value) == ("<", 0, "!=", -errno.EINPROGRESS)
    assert c1.matches(-111) and not c2.matches(-errno.EINPROGRESS)
    assert resolve(["a:b*"], known=["a:b1", "a:b2", "a:c"]) == ["a:b1", "a:b2"]


def test_influx_gets_each_key_as_a_tagged_point(influx):
    """count's interval in InfluxDB: a point per key (the key field a tag named
    key.<field>) and one without tags saying how many tracepoints were traced."""
    db = "pt_count"
    cli = started("count", "syscalls:sys_exit_connect", "--by", "ret", "-p", str(ME), "--json",
                  "--influx", influx.url(db, flush="0.2"), env=INFLUX_ENV, links=1)
    failed_connects(3)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    assert [(r["key"], r["count"]) for r in map(json.loads, lines)] == [({"ret": -111}, 3)]
    assert wait_until(lambda: len(influx.query("SELECT * FROM count", db)) == 2, 10)
    rows = influx.query("SELECT * FROM count", db)
    assert [(r["tracepoint"], r["key.ret"], r["count"], r["tracepoints"]) for r in rows if r["tracepoint"]] \
        == [("syscalls:sys_exit_connect", "-111", 3, None)]
    assert [r["tracepoints"] for r in rows if not r["tracepoint"]] == [1]


def test_user_stack_of_an_exited_process_is_named():
    """The user stacks stackcount -U prints (TracepointCount's ustacks map):
    kept by build id, so a client that exited before the print is named, not
    printed as 0x7f... addresses (issue 20)."""
    import subprocess
    import sys
    from pytrace.core.usyms import process_symbols
    with socket.socket() as srv, TracepointCount(["syscalls:sys_enter_connect"], user_stack=True) as c:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        code = f"import socket; socket.create_connection(('127.0.0.1', {srv.getsockname()[1]})).close()"
        child = subprocess.Popen([sys.executable, "-c", code])
        assert child.wait(10) == 0
        assert not os.path.exists(f"/proc/{child.pid}")
        mine = [pc for pc in c.counts() if pc.pid == child.pid]
    assert [pc.count for pc in mine] == [1]
    first = process_symbols(child.pid).stack(mine[0].ustack)[0]
    assert "connect" in first and not first.startswith(("0x", "[build id"))
