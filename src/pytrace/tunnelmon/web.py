"""The live web view of tunnelmon, served by pytrace itself.

    web = WebView(lambda: mon.snapshot().to_dict(), host="127.0.0.1", port=8080,
                  meta={"dev": "eth0"})
    web.start()          # serves in a thread until close()
    ...
    web.close()

Routes: `/` the page (pytrace/web/static/tunnelmon.html), `/static/<file>`
its scripts, styles and the bundled libraries (static/vendor/, built by
build_web.py from the npm registry), `/api/stats` the counters as JSON:

    {"time": <unix seconds>, "meta": {...}, "flows": [{outer_src, outer_dst,
     vni, inner_src, inner_dst, tx_pkts, tx_bytes, rx_pkts, rx_bytes}, ...],
     "skipped": {...}, "malformed": {...}}

Nothing is loaded from elsewhere: the page works offline.  Only requests
addressed to this server by name are answered, and clients that leave early
are not reported (core/httpserve).
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..core.errors import PytraceError
from ..core.httpserve import QuietServer, make_server, refused

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
PAGE = "tunnelmon.html"
REQUIRED = ("vendor/d3.min.js",)     # what build_web.py bundles and the page needs
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
         ".json": "application/json", ".txt": "text/plain; charset=utf-8"}


def check_assets() -> None:
    missing = [name for name in (PAGE, *REQUIRED) if not (STATIC / name).is_file()]
    if missing:
        raise PytraceError(f"the web view's files are missing ({STATIC / missing[0]}): the front-end "
                           "bundle is built with the package (python3 build_web.py in a source tree, "
                           "needs npm)")


class WebView:
    def __init__(self, source: Callable[[], dict[str, Any]], host: str = "127.0.0.1", port: int = 8080,
                 meta: dict[str, Any] | None = None, allow_hosts: Iterable[str] = ()):
        """allow_hosts: Host names answered besides this address's own (and
        localhost on loopback): see core/httpserve; '*' for any."""
        self.source, self.host, self.port = source, host, port
        self.meta = dict(meta or {})
        self.allow_hosts = tuple(allow_hosts)
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()     # one map read at a time

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            data = self.source()
        return {"time": time.time(), "meta": self.meta, **data}

    def start(self) -> "WebView":
        check_assets()
        view = self

        class Handler(_Handler):
            web = view

        try:
            self._server = make_server(self.host, self.port, Handler, self.allow_hosts, name="tunnelmon web")
        except OSError as exc:
            raise PytraceError(f"web view: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = self._server.server_address[1]      # port 0: the one the kernel chose
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="tunnelmon-web", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "WebView":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    web: WebView
    server_version = "pytrace-tunnelmon"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass    # the terminal shows the monitor's table, not an access log

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if refused(self):
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._file(STATIC / PAGE)
        elif path == "/api/stats":
            try:
                body = json.dumps(self.web.stats(), separators=(",", ":")).encode()
            except Exception as exc:  # the monitor is closing: say so, do not kill the thread
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n".encode(), TYPES[".txt"])
                return
            self._send(HTTPStatus.OK, body, TYPES[".json"])
        elif path.startswith("/static/"):
            target = (STATIC / path[len("/static/"):]).resolve()
            if STATIC.resolve() not in target.parents:     # no way out of static/
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", TYPES[".txt"])
                return
            self._file(target)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", TYPES[".txt"])

    def _file(self, path: Path) -> None:
        try:
            body = path.read_bytes()
        except OSError:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", TYPES[".txt"])
            return
        self._send(HTTPStatus.OK, body, TYPES.get(path.suffix, "application/octet-stream"))

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
