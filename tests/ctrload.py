"""The traffic of one participant of test_containers.py (a container, or the
host), run by the root's own python3: a TCP server on 127.0.0.1:PORT and,
every PERIOD seconds, one TCP connection to it (connect, accept, 4 KiB
each way, close), one UDP connect() to it, a listen() on a port of the
kernel's choice, and a getaddrinfo().

    python3 ctrload.py PORT [PERIOD]

Every participant has its own PORT, so any event names its participant.
It runs until killed; it prints "ready" once the server listens.
"""

import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
PERIOD = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
SIZE = 4096


def serve(srv: socket.socket) -> None:
    while True:
        conn, _ = srv.accept()
        with conn:
            got = b""
            while len(got) < SIZE:
                chunk = conn.recv(SIZE - len(got))
                if not chunk:
                    break
                got += chunk
            conn.sendall(got)


def once() -> None:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as c:
        c.sendall(b"x" * SIZE)
        got = 0
        while got < SIZE:
            chunk = c.recv(SIZE)
            if not chunk:
                break
            got += len(chunk)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect(("127.0.0.1", PORT))
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
    try:
        socket.getaddrinfo("localhost", PORT, type=socket.SOCK_STREAM)
    except OSError:
        pass                    # a root without /etc/hosts: the call is what counts


def main() -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", PORT))
    srv.listen(128)
    threading.Thread(target=serve, args=(srv,), daemon=True).start()
    print("ready", flush=True)
    while True:
        try:
            once()
        except OSError:
            pass
        time.sleep(PERIOD)


main()
