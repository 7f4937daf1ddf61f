"""`modelbus config`, `modelbus topics` and `modelbus example-data`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import console, say


@app.command("config")
def config_table() -> None:
    """Print every setting (environment variable, default, meaning) as a Markdown table."""
    from shared.runtime.settings import markdown_table

    console.print(markdown_table(), markup=False)


@app.command("topics")
def topics_create() -> None:
    """Create the catalog's topics that are missing (what `stack up` does; for a broker of your own)."""
    from shared.runtime.broker import ensure_topics

    settings = cli_settings("admin")
    created, existing = asyncio.run(ensure_topics(settings))
    say(f"[topics] {len(created)} created, {len(existing)} already there (prefix {settings.topic_prefix})")


@app.command("example-data")
def example_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv or .parquet.")],
    rows: Annotated[int, typer.Option(help="Customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same file.")] = 7,
    shift: Annotated[float, typer.Option(help="How far the world has moved (0: not at all), for drift.")] = 0.0,
) -> None:
    """Write the example churn dataset (the one schemas/examples/model-spec.yaml trains on)."""
    from shared.ops.example_data import write_churn
    from shared.runtime.artifacts import sha256_file

    path = write_churn(out, rows=rows, seed=seed, shift=shift)
    say(f"wrote {rows} rows to {path} (sha256 {sha256_file(path)})")
