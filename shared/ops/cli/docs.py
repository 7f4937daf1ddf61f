"""`modelbus docs`: the docs site's generated pages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.ops.cli.app import app
from shared.ops.cli.render import console, err

docs_app = typer.Typer(help="The docs site's pages generated from the code (docs/reference/, …).", no_args_is_help=True)
app.add_typer(docs_app, name="docs")


@docs_app.command("generate")
def docs_generate(
    root: Annotated[Path, typer.Option(help="The project's folder (holding docs/ and bench/).")] = Path("."),
    check: Annotated[bool, typer.Option("--check", help="Only report stale pages; exit 1 if any.")] = False,
) -> None:
    """Write the reference pages (CLI, configuration, events, HTTP APIs, metrics), the benchmark
    results and the generated tables inside written pages, from the code."""
    from shared.ops import docs

    if check:
        stale = docs.stale(root.resolve())
        for path in stale:
            console.print(f"stale: {path.relative_to(root.resolve())}", markup=False)
        if stale:
            err.print("run `modelbus docs generate` and commit the result")
            raise typer.Exit(1)
        console.print("docs/ is up to date", markup=False)
        return
    written = docs.write(root.resolve())
    console.print(f"wrote {len(written)} pages", markup=False)
