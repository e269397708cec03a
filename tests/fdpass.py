"""Test scaffolding for sofdsnoop: one end of a Unix SOCK_SEQPACKET connection
that passes file descriptors (SCM_RIGHTS), driven line by line on stdin.

    python fdpass.py send PATH COMM     connect to PATH; per line "pipe file sock ...":
                                        open those files, send them in one sendmsg()
    python fdpass.py recv PATH COMM     listen on PATH; per line "recv": one recvmsg()

A PATH starting with @ is in the abstract namespace (no file to remove).

The process names itself COMM (/proc/self/comm) and answers every line with
one JSON object: at start {"pid", "tid"}; after a send or a receive
{"sock": the socket's fd, "sock_name": its name, "fds": [the descriptors], "names": [readlink of
each, as /proc/PID/fd shows it]}.  It keeps every descriptor open until
stdin ends, so a later line cannot reuse a number.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading


def name_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def say(**what) -> None:
    print(json.dumps(what), flush=True)


def opened(kind: str, keep: list) -> list[int]:
    if kind == "pipe":
        return list(os.pipe())
    if kind == "file":
        return [os.open("/etc/hostname", os.O_RDONLY)]
    if kind == "sock":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        keep.append(s)
        return [s.fileno()]
    raise SystemExit(f"fdpass: unknown kind {kind}")


def main() -> None:
    role, path, comm = sys.argv[1:4]
    path = "\0" + path[1:] if path.startswith("@") else path     # @name: the abstract namespace
    with open("/proc/self/comm", "w") as fh:
        fh.write(comm)
    keep: list = []
    if role == "recv":
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        srv.bind(path)
        srv.listen(1)
        say(pid=os.getpid(), tid=threading.get_native_id())
        conn, _ = srv.accept()
        for line in sys.stdin:
            _, fds, _, _ = socket.recv_fds(conn, 64, 16)
            keep.append(fds)
            say(sock=conn.fileno(), sock_name=name_of(conn.fileno()), fds=fds, names=[name_of(fd) for fd in fds])
    else:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(path)
        say(pid=os.getpid(), tid=threading.get_native_id())
        for line in sys.stdin:
            fds = [fd for kind in line.split() for fd in opened(kind, keep)]
            keep.append(fds)
            socket.send_fds(conn, [b"fds"], fds)
            say(sock=conn.fileno(), sock_name=name_of(conn.fileno()), fds=fds, names=[name_of(fd) for fd in fds])


if __name__ == "__main__":
    main()
