"""The control channel of a running `pytrace vnet record`: a unix socket.

One request per connection, one JSON object per line each way:

    {"op": "add", "point": {"label": ..., "device": ..., "netns": ..., "direction": ..., "method": ...}}
    {"op": "remove", "label": "..."}
    {"op": "list"}
    {"op": "reload"}                    (the same as SIGHUP: re-read the config file)

    -> {"ok": true, ...}  or  {"ok": false, "error": "one line", "usage": true|false}

The listening thread only queues requests: the recorder's main loop carries
them out between two ring-buffer drains (so the points, the ring and the
store are only ever touched by one thread) and the answer goes back on the
same connection.  The socket is created mode 0600 and removed on close.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading
from typing import Any, Callable, Iterator

from ..core.errors import PytraceError, UsageError

Reply = Callable[[dict[str, Any]], None]


class ControlServer:
    def __init__(self, path: str):
        self.path = path
        self._requests: "queue.Queue[tuple[dict, Reply]]" = queue.Queue()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ControlServer":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if os.path.lexists(self.path):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise UsageError(f"--ctl {self.path}: exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                raise UsageError(f"--ctl {self.path}: another recorder is listening there")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.path)       # left by a recorder that died
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise UsageError(f"--ctl {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        sock.listen(8)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="vnet-ctl", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
        while True:   # whoever is still waiting gets an answer
            try:
                _, reply = self._requests.get_nowait()
            except queue.Empty:
                break
            reply({"ok": False, "error": "the recorder is stopping", "usage": False})

    def pending(self) -> Iterator[tuple[dict, Reply]]:
        """Requests that arrived since the last call (for the main loop)."""
        while True:
            try:
                yield self._requests.get_nowait()
            except queue.Empty:
                return

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        done = threading.Event()
        answer: list[dict] = []

        def reply(obj: dict[str, Any]) -> None:
            answer.append(obj)
            done.set()
        try:
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\n") and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            try:
                req = json.loads(data)
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                reply({"ok": False, "error": "a request is one JSON object on one line", "usage": True})
            else:
                self._requests.put((req, reply))
            if not done.wait(30):
                reply({"ok": False, "error": "the recorder did not answer", "usage": False})
            conn.sendall((json.dumps(answer[0]) + "\n").encode())
        except OSError:
            pass
        finally:
            conn.close()


def request(path: str, req: dict[str, Any], timeout: float = 35.0) -> dict[str, Any]:
    """Send one request to a recorder; its answer (raises PytraceError if unreachable)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall((json.dumps(req) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise PytraceError(f"no recorder listening on {path} (start one with pytrace vnet record --ctl {path})") \
            from None
    except OSError as exc:
        raise PytraceError(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        return json.loads(data)
    except ValueError:
        raise PytraceError(f"{path}: the recorder sent no answer") from None
