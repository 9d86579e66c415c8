"""Terminal output shared by the commands: rich tables readable at 80 columns and when piped,
``--json`` for scripts, and the key/value run summary."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def console(width: int | None = None) -> Any:
    """A rich console: the terminal's width, ``width`` if given; piped output is read by
    scripts and tests: never truncate ids to a terminal's width there."""
    from rich.console import Console

    if width is not None:
        return Console(width=width)
    return Console() if sys.stdout.isatty() else Console(width=240)


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                width: int | None = None) -> None:
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        # overflow="fold": a long id wraps onto the next line instead of becoming "r_66f…".
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    for column in table.columns:
        column.overflow = "fold"
    console(width).print(table)


# Shares of a whole (0..1) shown as percentages: of the measured peak, of the spec sheet's.
SHARES = ("share_of_peak", "mfu")


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        if isinstance(value, float):
            value = (f"{value:,.6g}" if "tflops" in key else f"{100 * value:.1f}%"
                     if key in SHARES else f"{value:,.4f}")
        table.add_row(key, str(value))
    console().print(table)


def fail(command: str, message: str, code: int = 2) -> int:
    print(f"workbench {command}: {message}", file=sys.stderr)
    return code
