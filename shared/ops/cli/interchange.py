"""`modelbus models import` and `models export`: models trained elsewhere in, any version out as an
MLflow model."""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.ops.cli.app import Reason, call_api, version_or_exit
from shared.ops.cli.registry import models_app
from shared.ops.cli.render import err, metrics_line, say

ROLLOUT_GRACE_SECONDS = 30.0
SETTLED = ("approved", "held-for-review", "rejected", "canary", "shadow", "serving", "retired", "rolled-back")


def _zip_folder(folder: Path, into: Path) -> Path:
    """An MLflow model folder as a zip under its own name; symlinks are refused, as the server would."""
    target = into / f"{folder.name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                err.print(f"{path} is a symlink; an MLflow model folder is uploaded as plain files", markup=False)
                raise typer.Exit(2)
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return target


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _wait_for_version(model: str, run_id: str, timeout: float) -> None:
    """Follow the import until its version is registered and evaluated (or the time is up)."""
    deadline = time.monotonic() + timeout
    shown: tuple[int, str] | None = None
    while time.monotonic() < deadline:
        versions = call_api("GET", f"/v1/models/{model}/versions", params={"limit": 20})
        found = next((v for v in versions if v["run_id"] == run_id), None)
        if found is not None and (found["version"], found["status"]) != shown:
            shown = (found["version"], found["status"])
            say(f"{model}@{found['version']}  {found['status']}: {found['status_reason']}")
            if found["status"] == "approved":
                # an approved version is usually rolled out moments later: show where it went
                deadline = min(deadline, time.monotonic() + ROLLOUT_GRACE_SECONDS)
            elif found["status"] in SETTLED:
                return
        time.sleep(1)
    if shown is not None and shown[1] == "approved":
        return
    state = "unregistered" if shown is None else shown[1]
    err.print(f"still {state} after {timeout:.0f} s; follow it with `modelbus models show {model}`", markup=False)


@models_app.command("import")
def models_import(
    name: Annotated[str, typer.Argument(help="Model name (its spec must be applied).")],
    model: Annotated[
        Path, typer.Option("--model", "-m", help="A skops file, an ONNX file, or an MLflow model folder/.zip/.tar.gz.")
    ],
    reference: Annotated[
        Path | None, typer.Option(help="Reference rows (CSV or Parquet): smoke test, schema, drift profile.")
    ] = None,
    test: Annotated[
        Path | None, typer.Option(help="Labelled test rows for evaluation (default: the reference).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target column (default: the spec's).")] = None,
    reason: Reason = "",
    wait: Annotated[bool, typer.Option(help="Follow the version through registration, evaluation and rollout.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to follow it.")] = 180.0,
) -> None:
    """Import a model trained elsewhere (operator): it becomes NAME's next version and goes through
    the same evaluation gates, rollout, drift and alerts as a trained one. Pickles are refused."""
    for label, path in (("--model", model), ("--reference", reference), ("--test", test)):
        if path is not None and not path.exists():
            err.print(f"{label}: no file or folder at {path}", markup=False)
            raise typer.Exit(2)
    with ExitStack() as stack:
        upload = model
        if model.is_dir():
            upload = _zip_folder(model, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        files: dict[str, Any] = {"model": (upload.name, stack.enter_context(upload.open("rb")))}
        for field, path in (("reference", reference), ("test", test)):
            if path is not None:
                files[field] = (path.name, stack.enter_context(path.open("rb")))
        data = {"reason": reason, **({"target": target} if target else {})}
        sent = ", ".join(f"{k} {v[0]} ({_size(Path(v[1].name))})" for k, v in files.items())
        say(f"{name}: uploading {sent}; checking the model …")
        result = call_api("POST", f"/v1/models/{name}/import", files=files, data=data, timeout=600)
    say(
        f"{name}: imported {model.name} ({result['format']}, served as {result['served_as']}) "
        f"as run {result['run_id']} in {result['seconds']:.1f} s"
    )
    say(f"  estimator  {result['estimator']}")
    say(f"  features   {', '.join(result['features'])} (from the {result['schema_from']})")
    say(f"  metrics    {metrics_line(result['metrics'])} on the {result['evaluated_on']} rows")
    for artifact in result["artifacts"]:
        say(f"  artifact   {artifact['name']} sha256 {artifact['sha256'][:16]}…")
    if wait:
        _wait_for_version(name, result["run_id"], timeout)


@models_app.command("export")
def models_export(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    directory: Annotated[Path, typer.Argument(help="Folder to write the MLflow model to (must not exist).")],
    format: Annotated[str, typer.Option("--format", help="Only mlflow.")] = "mlflow",
    flavor: Annotated[
        str, typer.Option(help="auto (onnx when the version has ONNX, else sklearn), onnx or sklearn.")
    ] = "auto",
) -> None:
    """Write a version as an MLflow model folder (`mlflow.pyfunc.load_model(DIR)` opens it)."""
    if format != "mlflow":
        err.print(f"--format {format}: only mlflow is supported", markup=False)
        raise typer.Exit(2)
    parsed = version_or_exit(ref, "export")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        err.print(f"{directory} exists and is not empty; MLflow models are written to a new folder", markup=False)
        raise typer.Exit(2)
    response = call_api(
        "GET",
        f"/v1/models/{parsed.model}/versions/{parsed.version or parsed.alias}/export",
        params={"format": format, "flavor": flavor},
        timeout=600,
        raw=True,
    )
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        top = {n.split("/", 1)[0] for n in archive.namelist()}
        directory.mkdir(parents=True, exist_ok=True)
        for info in archive.infolist():
            inner = info.filename.split("/", 1)[1] if len(top) == 1 and "/" in info.filename else info.filename
            if not inner or info.is_dir():
                continue
            target = (directory / inner).resolve()
            if not target.is_relative_to(directory.resolve()):
                err.print(f"the export names {info.filename!r} outside the folder; stopped", markup=False)
                raise typer.Exit(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
    flavors = "onnx" if (directory / "model.onnx").exists() else "sklearn (skops)"
    say(f"{ref}: MLflow model written to {directory} ({flavors} flavor); open it with mlflow.pyfunc.load_model")
