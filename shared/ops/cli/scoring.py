"""`modelbus score`: a Parquet or CSV file scored by one version, here, chunk by chunk
(shared.runtime.batchscore), as `mlflow models predict` scores a file with a logged model."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer

from shared.ops.cli.app import app, cli_settings, run, version_or_exit
from shared.ops.cli.render import err, say


def _digest(path: Path) -> str:
    found = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            found.update(block)
    return found.hexdigest()


@app.command("score")
def score(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    source: Annotated[Path, typer.Option("--input", "-i", help="A .parquet or .csv file of rows.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder for the Parquet parts (made if missing).")],
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Rows read and scored at a time.")] = 100_000,
    keep: Annotated[
        list[str] | None, typer.Option("--keep", help="An input column to copy into the output (an id); repeatable.")
    ] = None,
    on_bad: Annotated[
        str, typer.Option("--on-bad", help="A row the version's schema refuses: report it, or fail the job.")
    ] = "report",
    job: Annotated[
        str | None, typer.Option("--job", help="The job's name, each row's request id is JOB-ROW (default: derived).")
    ] = None,
) -> None:
    """Score a Parquet or CSV file with a version, here: the version's files are downloaded with
    their digests checked, and the rows scored in chunks by its ONNX graph (its pipeline when it
    has none), exactly as serving answers them. Each chunk becomes a Parquet part in --output with
    the --keep columns, a request id per row, the version, the prediction and each class's
    probability; a refused row is reported with its row number. Run it again with the same
    --output to resume after the last finished part."""
    from shared.runtime.artifacts import ArtifactError, ArtifactStore
    from shared.runtime.batchscore import BatchError, Progress, score_file, total_rows
    from shared.runtime.modelfile import UntrustedArtifact
    from shared.runtime.served import load

    if on_bad not in ("report", "fail"):
        err.print("--on-bad is report or fail", markup=False)
        raise typer.Exit(2)
    if not source.is_file():
        err.print(f"no file at {source}", markup=False)
        raise typer.Exit(2)
    version_or_exit(ref, "score")
    found = run(lambda mb: mb.version(ref))
    from shared.contract.events import ArtifactRef

    artifacts = [ArtifactRef.model_validate(a) for a in found.artifacts]
    name = job or f"{found.model}-v{found.version}-{_digest(source)[:12]}"
    settings = cli_settings()
    try:
        with tempfile.TemporaryDirectory(prefix="modelbus-score-") as folder:
            loaded = load(ArtifactStore(settings), found.model, found.version, artifacts, Path(folder))
    except (ArtifactError, UntrustedArtifact, OSError) as exc:
        err.print(f"{found.model}@{found.version} cannot be loaded: {exc}", markup=False)
        raise typer.Exit(1) from None
    say(f"{found.model}@{found.version} ({loaded.runtime}) scoring {source} into {out}, job {name}")
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=None
    ) as bar:
        task = bar.add_task("rows", total=total_rows(source))

        def shown(progress: Progress) -> None:
            bar.update(task, completed=progress.rows, description=f"rows ({progress.bad} refused)")

        try:
            scored = score_file(
                loaded,
                source,
                out,
                job=name,
                chunk_rows=chunk_rows,
                keep=keep or [],
                on_bad=_on_bad(on_bad),
                progress=shown,
            )
        except BatchError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(1) from None
    resumed = f", {scored.resumed_chunks} of them resumed" if scored.resumed_chunks else ""
    parts = "1 part" if scored.chunks == 1 else f"{scored.chunks} parts"
    say(
        f"{scored.rows} rows in {parts}{resumed}: {scored.scored} scored, {scored.bad} refused, "
        f"{scored.seconds:.1f} s ({scored.rows / max(scored.seconds, 1e-9):,.0f} rows/s); sha256 {scored.sha256[:12]}"
    )
    for bad in scored.bad_rows[:10]:
        err.print(f"  row {bad.row}: {bad.reason}", markup=False)
    if scored.bad > 10:
        err.print(f"  (and {scored.bad - 10} more: each part's metadata and _SUCCESS.json list them)", markup=False)


def _on_bad(text: str) -> Literal["report", "fail"]:
    return "fail" if text == "fail" else "report"
