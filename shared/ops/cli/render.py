"""What the CLI prints: consoles, progress lines, tables, short forms of values."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output (grep, files, tests) is never squeezed to 80 columns: tables and trees keep whole values.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(line: str) -> None:
    """Print a progress line as it is (no markup: component names are in brackets)."""
    console.print(line, markup=False)


def table(columns: list[str], rows: list[list[object]]) -> None:
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False, highlight=False)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def metrics_line(metrics: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))
