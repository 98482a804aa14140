"""Where the CLI prints: rich consoles for tables and messages."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table

# Piped output keeps whole lines (for grep and tests); a terminal gets its width.
_WIDTH = None if sys.stdout.isatty() else 250
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True,
                      style=None if os.environ.get("NO_COLOR") else "bold red")  # fmt: skip


def table(*columns: str) -> Table:
    """A plain table in the docker CLI's spirit: header row, no borders."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        t.add_column(column, no_wrap=True)
    return t
