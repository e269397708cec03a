"""pytrace's HTTP servers (tunnelmon's web view, the exporter), run as the
CLI runs them: 300 clients that send a request and reset the connection
before reading the answer leave not one line on stderr (they used to leave
a traceback each), and the server goes on serving; a request addressed to a
foreign Host (DNS rebinding) is refused with 403 and one line, said once;
the server's own address, localhost, and names given with --allow-host are
served."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest

from helpers import Cli, free_port, run_cli, sh, wait_until

NETNS = f"pt-http-{os.getpid()}"
CLIENTS = 300


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test():
    yield
    while STARTED:
        cli = STARTED.pop()
        if cli.proc.poll() is None:
            cli.stop(signal.SIGKILL)


STARTED: list[Cli] = []


def get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if host is not None:
        req.add_unredirected_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def leave_early(port: int, path: str, n: int) -> None:
    """n clients that each send a whole request and reset the connection at
    once (SO_LINGER 0), before the answer: the server's read or write fails."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(request)
        s.close()


def stderr_lines(cli: Cli) -> list[str]:
    rc, _, err = cli.stop(signal.SIGTERM)
    assert rc == 0, err
    return err.splitlines()


@pytest.fixture
def exporter(tmp_path):
    def start(*flags: str) -> tuple[Cli, int]:
        port = free_port()
        config = tmp_path / "exporter.toml"
        config.write_text(f'[[metric]]\ntool = "tcprtt"\noptions = {{ lport = {free_port()} }}\n')
        cli = Cli("exporter", "--config", str(config), "--listen", f"127.0.0.1:{port}", *flags)
        STARTED.append(cli)
        assert wait_until(lambda: get(port, "/")[0] == 200 or cli.proc.poll() is not None, 10)
        return cli, port
    return start


@pytest.fixture(scope="module")
def veth():
    sh(f"ip netns add {NETNS}")
    try:
        sh(f"ip -n {NETNS} link add pt0 type veth peer name pt1 && ip -n {NETNS} link set pt0 up")
        yield NETNS
    finally:
        sh(f"ip netns del {NETNS}", check=False)


def tunnelmon(ns: str, *flags: str) -> tuple[Cli, int]:
    port = free_port()
    cli = Cli("tunnelmon", "--netns", ns, "--dev", "pt0", "--web", f"127.0.0.1:{port}", *flags, ready=False)
    STARTED.append(cli)
    assert cli.read_until(lambda line: line.startswith("Web view: http://127.0.0.1:"), 15), cli.stop()
    return cli, port


# -- clients that leave early --------------------------------------------------------------------------

def test_exporter_is_quiet_about_clients_that_leave_early(exporter):
    cli, port = exporter()
    started = time.monotonic()
    leave_early(port, "/metrics", CLIENTS)
    assert time.monotonic() - started < 30
    status, body = get(port, "/metrics")
    assert status == 200 and b"# TYPE pytrace_tcp_rtt_seconds histogram" in body     # still serving
    lines = stderr_lines(cli)
    assert lines == [f"pytrace exporter: serving http://127.0.0.1:{port}/metrics (tcprtt)"]


def test_web_view_is_quiet_about_clients_that_leave_early(veth):
    cli, port = tunnelmon(veth)
    leave_early(port, "/static/vendor/d3.min.js", CLIENTS)     # a large answer: the write fails
    status, body = get(port, "/api/stats")
    assert status == 200 and body.startswith(b'{"time":')
    assert stderr_lines(cli) == []


# -- Host headers ---------------------------------------------------------------------------------------

def test_exporter_answers_only_its_own_names(exporter):
    cli, port = exporter()
    assert get(port, "/metrics", f"evil.example:{port}")[0] == 403
    assert get(port, "/metrics", f"evil.example:{port}")[0] == 403
    assert get(port, "/metrics", f"127.0.0.1:{port + 1 if port < 65535 else port - 1}")[0] == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
        status, body = get(port, "/metrics", host)
        assert status == 200 and b"# TYPE pytrace_tcp_rtt_seconds histogram" in body, host
    lines = stderr_lines(cli)
    assert lines[1:] == [f"pytrace exporter: refused a request for Host 'evil.example:{port}' (not this "
                         "server's address: DNS rebinding?); --allow-host NAME to accept that name "
                         "(this is said once)"]


def test_exporter_allow_host(exporter):
    cli, port = exporter("--allow-host", "prom.example", "--allow-host", "Other.Example.")
    for host in ("prom.example", "other.example", "127.0.0.1"):
        assert get(port, "/metrics", f"{host}:{port}")[0] == 200, host
    assert get(port, "/metrics", f"evil.example:{port}")[0] == 403
    cli.stop(signal.SIGTERM)
    cli, port = exporter("--allow-host", "*")
    assert get(port, "/metrics", f"evil.example:{port}")[0] == 200
    assert stderr_lines(cli)[1:] == []


def test_web_view_answers_only_its_own_names(veth):
    cli, port = tunnelmon(veth)
    assert get(port, "/", f"rebind.example:{port}")[0] == 403
    assert get(port, "/api/stats", f"rebind.example:{port}")[0] == 403
    status, body = get(port, "/", f"localhost:{port}")
    assert status == 200 and b"<html" in body.lower()
    assert get(port, "/api/stats", f"127.0.0.1:{port}")[0] == 200
    assert stderr_lines(cli) == [f"tunnelmon web: refused a request for Host 'rebind.example:{port}' (not "
                                 "this server's address: DNS rebinding?); --allow-host NAME to accept that "
                                 "name (this is said once)"]
    cli, port = tunnelmon(veth, "--allow-host", "rebind.example")
    assert get(port, "/api/stats", f"rebind.example:{port}")[0] == 200
    assert stderr_lines(cli) == []


@pytest.mark.parametrize("value", ["", "a b", "x:80", "http://x", "a..b"])
def test_a_bad_allow_host_is_a_usage_error(value, tmp_path):
    r = run_cli("exporter", "--config", str(tmp_path / "none.toml"), "--allow-host", value)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "is not a host name or IP address" in r.stderr.splitlines()[-1]
