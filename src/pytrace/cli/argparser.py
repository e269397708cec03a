"""The argparse parser every pytrace command line uses.

Apart from cliutil because argparse (with re, enum and gettext, ~7 ms) is only
imported where a parser is built: a tool's module and cliutil's argument
types need none of it, and cli/prefetch lets a repeated command skip parsing.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, with the terminal width found as shutil.get_terminal_size()
    finds it, without importing shutil (and bz2, lzma, fnmatch): argparse
    makes a formatter for every add_argument(), and that import would cost
    every tool ~2 ms of start-up."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None):
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        """An option's help, with the range its type accepts (cliutil.int_range):
        every number has a documented upper bound."""
        text = action.help
        limits = getattr(action.type, "range_text", None)
        if text and limits and limits not in text:
            # "kept (default 4096)" -> "kept (default 4096; 1-65536)"
            text = f"{text[:-1]}; {limits})" if text.endswith(")") else f"{text} ({limits})"
        return text


def _terminal_columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class ArgParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2, and
    ends its help with the tool's examples, as BCC's tools do (examples:
    (command line, what it does) pairs, set by spec.ToolSpec.add_arguments)."""

    examples: tuple[tuple[str, str], ...] = ()

    def __init__(self, *args: Any, **kw: Any):
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)

    def format_help(self) -> str:
        text = super().format_help()
        if not self.examples:
            return text
        width = max(len(cmd) for cmd, _ in self.examples)
        lines = [f"  {cmd:<{width}}  # {what}" if what else f"  {cmd}" for cmd, what in self.examples]
        return text + "\nexamples:\n" + "\n".join(lines) + "\n"

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")
