"""The one exception type the CLI turns into a one-line message."""


class PytraceError(Exception):
    """An error a person can act on: printed as one line, no traceback.

    exit_code is 1 for run-time problems (privilege, kernel support) and 2 for
    bad input (usage errors), like argparse.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(PytraceError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def shown(value: str) -> str:
    """A value as a one-line message shows it: as typed, or quoted where
    that would hide or blur it (empty, a space in it, a control character),
    so that `--tbf ''` does not read `--tbf : ...`."""
    if value and value.isprintable() and not any(c.isspace() or c in "'\"" for c in value):
        return value
    return repr(value)
