"""`modelbus schemas`: the JSON Schemas and AsyncAPI document in schemas/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.ops.cli.app import app
from shared.ops.cli.render import console, err

schemas_app = typer.Typer(help="JSON Schemas and the AsyncAPI document in schemas/.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("generate")
def schemas_generate(
    folder: Annotated[Path, typer.Option(help="Where schemas/ lives.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Only report stale files; exit 1 if any.")] = False,
) -> None:
    """Write the JSON Schema of every event, the envelope and the AsyncAPI document."""
    from shared.ops import schemas as contract

    if check:
        stale = contract.stale(folder)
        for path in stale:
            console.print(f"stale: {folder / path}", markup=False)
        if stale:
            err.print("run `modelbus schemas generate` and commit the result")
            raise typer.Exit(1)
        console.print(f"{folder} is up to date", markup=False)
        return
    written = contract.write(folder)
    console.print(f"wrote {len(written)} files to {folder}", markup=False)
