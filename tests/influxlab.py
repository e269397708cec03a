"""A real InfluxDB 1.x server (Debian's influxd) for the tests that write to
one: its own directories and loopback ports, authentication on (unless
auth=False), an admin user made at start (with no user yet, InfluxDB lets the first admin be
created without credentials).  Restartable on the same data (outages).

    with influx_server(tmp_path) as server:   # or the module fixtures that call it
        url = server.url("db")                # --influx URL; ENV holds the credentials
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

from helpers import free_port, wait_until

USER = "pt_admin"
PASSWORD = secrets.token_hex(12)
ENV = {"INFLUX_USERNAME": USER, "INFLUX_PASSWORD": PASSWORD}


class InfluxServer:
    """influxd with its own directories and loopback ports; restartable on the same data."""

    def __init__(self, root: Path, auth: bool = True):
        self.root, self.auth = root, auth
        self.port, self.rpc = free_port(), free_port()
        self.config = root / "influxdb.conf"
        self.config.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc}"
[meta]
  dir = "{root}/meta"
  logging-enabled = false
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.proc is not None:
            return
        log = open(self.root / "influxd.log", "ab")
        self.proc = subprocess.Popen(["influxd", "run", "-config", str(self.config)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        assert wait_until(self.ping, 20), (self.root / "influxd.log").read_text()[-2000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as r:
                return r.status == 204
        except OSError:
            return False

    def url(self, db: str, **params: str) -> str:
        return f"http://127.0.0.1:{self.port}/{db}" + (f"?{urllib.parse.urlencode(params)}" if params else "")

    def query(self, q: str, db: str | None = None, auth: bool | None = None) -> list[dict]:
        data = urllib.parse.urlencode({"q": q, "epoch": "ns", **({"db": db} if db else {})}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/query", data=data)
        if self.auth if auth is None else auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            res = json.loads(r.read())["results"][0]
        assert "error" not in res, res
        out = []
        for s in res.get("series", []):
            out += [dict(zip(s["columns"], v)) for v in s["values"]]
        return out

    def count(self, db: str, measurement: str = "tcpstates") -> int:
        try:
            rows = self.query(f'SELECT count("pid") FROM "{measurement}"', db)
        except (OSError, AssertionError):   # server down, or no database yet
            return -1
        return rows[0]["count"] if rows else 0


@contextlib.contextmanager
def influx_server(root: Path, auth: bool = True) -> Iterator[InfluxServer]:
    root.mkdir(parents=True, exist_ok=True)
    server = InfluxServer(root, auth)
    server.start()
    if auth:
        server.query(f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES", auth=False)
    try:
        yield server
    finally:
        server.stop()
