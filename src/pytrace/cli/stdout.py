"""When stdout fails: the reader left (a closed pipe) or the file cannot grow
(a full disk).  Python keeps what it could not write in stdout's buffer and
tries again when the interpreter exits, where a failure prints "Exception
ignored ..." and a traceback.  So the command settles stdout itself, while
it can still say what happened in one line, and sends whatever is left to
/dev/null."""

from __future__ import annotations

import errno
import sys


def drop_stdout() -> None:
    """From now on, stdout's file is /dev/null (what is buffered goes there)."""
    import os
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(fd, sys.stdout.fileno())
    finally:
        os.close(fd)


def settle_stdout() -> str | None:
    """Flush stdout; None if that worked or the reader left (a quiet end),
    else why it failed (e.g. 'No space left on device'), with what is left
    dropped."""
    if sys.stdout is None:          # started without a file descriptor 1
        return None
    try:
        sys.stdout.flush()
        return None
    except BrokenPipeError:
        why = None
    except ValueError:              # stdout closed by the program: nothing to flush
        return None
    except OSError as exc:
        why = exc.strerror or str(exc)
    try:
        drop_stdout()
    except (OSError, ValueError):
        pass
    return why


# What a write to a file that cannot grow fails with (a file's own errors,
# where no path is involved: not ENOENT, EACCES...)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def output_failure(exc: OSError) -> str | None:
    """Why stdout failed, if exc (escaped from a tool) came from writing it:
    stdout still cannot be flushed, or exc is a full disk with no file name
    (the tools write no other file that way; --record's SQLite errors are
    reported as such).  stdout is then dropped.  None: exc is something else."""
    why = settle_stdout()
    if why is None and exc.errno in _FULL and exc.filename is None:
        why = exc.strerror
        try:
            drop_stdout()
        except (OSError, ValueError):
            pass
    return why
