"""What pytrace's HTTP servers (tunnelmon's web view, the exporter) share:
they say nothing about clients that leave early, and they answer only
requests addressed to them by name.

Clients that leave early.  http.server reports every exception of a request
with a traceback on stderr, and a client that disconnects before its answer
is written (a browser tab closed, a scraper's timeout, a port scan) raises
BrokenPipeError or ConnectionResetError: 300 such clients were 6,300 lines.
Here they are counted (QuietServer.disconnects), not printed; any other
failure of a request is one line.

DNS rebinding.  A web page from anywhere can make the browser resolve its own
domain name to 127.0.0.1 and then read this server as same-origin; the Host
header is what gives it away (the attacker's name, not ours).  A request is
answered only if its Host is an address this server is bound to, an IP
address when bound to all of them, this machine's name when reachable from
outside, localhost when bound to loopback, or a name given with --allow-host
('*': any).  A request without Host (HTTP/1.0) cannot come from a browser
and is answered.  Anything else gets 403, and one line on stderr the first
time.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from http import HTTPStatus
from http.server import ThreadingHTTPServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from http.server import BaseHTTPRequestHandler
    from typing import Any

# What a client that goes away while its request is read or answered raises
LEFT_EARLY = (ConnectionError, TimeoutError)


def allow_host_value(text: str) -> str:
    """--allow-host NAME: a host name or an IP address (no port, no scheme),
    or '*'; raises ValueError with the reason otherwise."""
    name = text.strip().lower()
    if name == "*":
        return name
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or not all(
            0 < len(label) < 64 and label.replace("-", "").replace("_", "").isalnum() and label.isascii()
            for label in labels):
        raise ValueError(f"'{text}' is not a host name or IP address (or '*' for any)")
    return name.rstrip(".")


class HostCheck:
    """Which Host headers a server answers: bound to address `bound` (an IP
    address), on `port`, as `given` (what the user named: an address or a
    host name such as localhost)."""

    def __init__(self, given: str, bound: str, port: int, allowed: Iterable[str] = ()):
        self.port = port
        self.any = "*" in allowed
        self.names = {a for a in allowed if a != "*"}
        given = given.strip("[]").lower()
        try:
            ipaddress.ip_address(given)
        except ValueError:
            if given:
                self.names.add(given.rstrip("."))       # listening by name: that name is ours
        self.bound = ipaddress.ip_address(bound.split("%")[0])
        self.wildcard = self.bound.is_unspecified
        if self.bound.is_loopback or self.wildcard:
            self.names.add("localhost")
        if not self.bound.is_loopback:      # reachable from elsewhere, by this machine's name
            name = socket.gethostname().lower()
            self.names.update((name, name.split(".")[0]))

    def allows(self, header: str | None) -> bool:
        if self.any or header is None:
            return True
        host, port = split_host(header)
        if port != self.port or not host:
            return False
        if host in self.names or (host.endswith(".localhost") and "localhost" in self.names):
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return self.wildcard or addr == self.bound


def split_host(header: str) -> tuple[str, int | None]:
    """A Host header's (lower-case name or address, port); port 80 if none,
    None if it is not a number."""
    text = header.strip().lower()
    if text.startswith("["):                            # [v6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:                     # no port (or a bare v6 address)
            host, port_text = text, ""
    host = host.rstrip(".")
    if not port_text:
        return host, 80
    return host, int(port_text) if port_text.isdigit() else None


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that counts clients that leave early instead of
    printing their tracebacks, reports any other failed request in one line,
    and refuses foreign Host headers (handlers call refused())."""

    daemon_threads = True
    # socketserver's default backlog is 5: a burst of connections beyond it
    # has its SYNs dropped, and each of those clients waits a second to retry
    request_queue_size = 128
    name = "pytrace"                    # in its messages
    hosts: HostCheck

    def __init__(self, address: tuple[str, int], handler: Any, allowed: Iterable[str] = ()):
        super().__init__(address, handler)
        self.hosts = HostCheck(address[0], self.server_address[0], self.server_address[1], allowed)
        self.disconnects = 0            # clients gone before their answer
        self.refusals = 0               # requests with a foreign Host

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, LEFT_EARLY):
            self.disconnects += 1       # nobody to answer and nothing to fix: counted, not printed
            return
        self.note(f"a request from {client_address[0]} failed: {exc!r}")

    def note(self, text: str) -> None:
        try:
            sys.stderr.write(f"{self.name}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def make_server(host: str, port: int, handler: Any, allowed: Iterable[str] = (),
                name: str = "pytrace") -> QuietServer:
    """A QuietServer listening on (host, port) (port 0: one the kernel picks);
    OSError if it cannot listen there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type("Server", (QuietServer,), {"address_family": family, "name": name})
    return cls((host, port), handler, allowed)


def refused(handler: BaseHTTPRequestHandler) -> bool:
    """Answer 403 and return True if the request's Host is not one the server
    answers (see the module's docstring); the first refusal is noted on
    stderr with what to do, later ones only counted."""
    server = handler.server
    hosts = getattr(server, "hosts", None)
    header = handler.headers.get("Host")
    if hosts is None or hosts.allows(header):
        return False
    server.refusals += 1
    if server.refusals == 1:
        server.note(f"refused a request for Host '{header}' (not this server's address: DNS rebinding?); "
                    "--allow-host NAME to accept that name (this is said once)")
    body = b"forbidden: this server is not reached by that name (see --allow-host)\n"
    handler.send_response(HTTPStatus.FORBIDDEN)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)
    handler.close_connection = True
    return True
