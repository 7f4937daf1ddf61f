"""`modelbus feast`: the Feast feature repo that specs naming Feast features use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import err, say

feast_app = typer.Typer(help="The Feast feature repo (MODELBUS_FEAST_REPO).", no_args_is_help=True)
app.add_typer(feast_app, name="feast")

Repo = Annotated[
    Path | None,
    typer.Option("--repo", help="Feature repo folder (its feature_store.yaml); default MODELBUS_FEAST_REPO."),
]


@feast_app.command("apply")
def feast_apply(
    repo: Repo = None,
    example: Annotated[
        bool | None,
        typer.Option(
            "--example/--no-example",
            help="Set up the example repo (schemas/examples/feature_repo) first; default: when the repo is empty.",
        ),
    ] = None,
    materialize: Annotated[bool, typer.Option(help="Materialize into the online store after applying.")] = True,
) -> None:
    """Apply a feature repo's definitions (`feast apply`), then materialize it up to now."""
    from shared.ops import feast
    from shared.runtime.feast import configure

    settings = cli_settings()
    configure(settings)
    folder = repo or settings.feast_repo
    if example is None:
        example = not (folder / "feature_store.yaml").is_file()
    try:
        feast.apply(folder, say, example=example, materialize=materialize)
    except feast.FeastCommandError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None
    say(f"[feast] {folder} applied")


@feast_app.command("materialize")
def feast_materialize(repo: Repo = None) -> None:
    """Materialize the repo's feature views into the online store up to now (`feast materialize-incremental`)."""
    from shared.ops import feast
    from shared.runtime.feast import configure

    settings = cli_settings()
    configure(settings)
    try:
        feast.materialize_incremental(repo or settings.feast_repo, say)
    except feast.FeastCommandError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None


@app.command("example-feast-data")
def example_feast_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv or .parquet.")],
    rows: Annotated[int, typer.Option(help="Entity rows.")] = 4000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same file.")] = 12,
) -> None:
    """Write the Feast example's dataset (schemas/examples/model-spec-feast.yaml): entity rows, when
    each was observed, two inline features and the target; the rest comes from Feast."""
    from shared.ops.example_data import activity_frame, churn_feast_frame
    from shared.runtime.artifacts import sha256_file

    frame = churn_feast_frame(activity_frame(), rows, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    say(f"wrote {rows} rows to {out} (sha256 {sha256_file(out)})")
