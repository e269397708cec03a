"""python -m pytrace.cli: what the pytrace command runs."""

from . import entry

entry()
