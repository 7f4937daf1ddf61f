"""Models in and out of the registry.

Import: an operator uploads a model trained elsewhere (multipart: the model file or MLflow archive,
reference rows, test rows); the registry checks it whole and emits the ModelTrained (trigger
`imported`) that makes it the model's next version. Every outcome, the refusals included, is
audited. Export: any version, as an MLflow model folder in a zip (`services.registry.export`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse
from opentelemetry import trace
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from services.registry import commands, domain, store
from services.registry.cache import AliasCache
from services.registry.export import write_mlflow_model
from services.registry.importing import Prepared, Upload
from services.registry.sources import ImportRefused
from shared.contract.events import ArtifactRef
from shared.contract.refs import parse_ref
from shared.contract.spec import ModelSpec
from shared.runtime import sandbox
from shared.runtime.artifacts import ArtifactError, ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.commands import SqlCommands
from shared.runtime.httpapi import Principal, Viewer
from shared.runtime.settings import Settings
from shared.runtime.telemetry import code_version

log = logging.getLogger(__name__)
FIELDS = ("model", "reference", "test")
MULTIPART: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": {
                            "type": "string",
                            "format": "binary",
                            "description": "A skops file, an ONNX file, or an MLflow model as .zip or .tar.gz.",
                        },
                        "reference": {
                            "type": "string",
                            "format": "binary",
                            "description": "Reference rows (CSV or Parquet): schema, smoke test, drift profile.",
                        },
                        "test": {
                            "type": "string",
                            "format": "binary",
                            "description": "Labelled test rows for evaluation; without them, the reference rows.",
                        },
                        "target": {"type": "string", "description": "Target column; the spec's by default."},
                        "reason": {"type": "string", "description": "Why; kept in the audit log."},
                    },
                }
            }
        },
    }
}


class Imported(BaseModel):
    """An accepted import: its run, and the event that registers it as the model's next version."""

    model: str
    run_id: str = Field(description="Run id of the import; the version registered from it carries it.")
    event_id: str = Field(description="ce_id of the ModelTrained emitted.")
    format: str = Field(description="skops, onnx or mlflow.")
    served_as: str = Field(description="What serving runs: onnx (imported, or exported from a pipeline) or skops.")
    estimator: str = Field(description="The model's estimator (or ONNX producer).")
    features: list[str] = Field(description="Input columns, in the model's order.")
    schema_from: str = Field(description="Where the schema came from.")
    metrics: dict[str, float] = Field(description="Metrics on the evaluation rows.")
    evaluated_on: str = Field(description="test, or reference when no test rows were sent.")
    artifacts: list[ArtifactRef] = Field(description="Stored files with their digests.")
    seconds: float = Field(description="Time the checks took.")


def _filename(upload: UploadFile, field: str) -> str:
    name = Path((upload.filename or field).replace("\\", "/")).name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or field


def add_interchange_routes(
    api: FastAPI,
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    bus: Bus,
    cache: AliasCache,
    artifacts: ArtifactStore,
) -> None:
    """Add `POST /v1/models/{name}/import` and `GET /v1/models/{name}/versions/{ref}/export`."""
    tracer = trace.get_tracer("modelbus.registry.api")

    run: SqlCommands[commands.Store] = SqlCommands(sessions, store.SqlStore, bus)

    def actor(who: Principal) -> commands.Actor:
        return commands.Actor.of(who)

    async def refuse(
        who: Principal, name: str, reason: str, status: int, message: str, detail: dict[str, Any]
    ) -> NoReturn:
        log.info("import of %s refused (%d): %s", name, status, message)
        facts = {**detail, "error": message, "status": status}
        refused = commands.Record(
            who=actor(who), reason=reason, did="import", about=name, outcome="refused", facts=facts
        )
        await run.run(commands.record, refused)
        raise HTTPException(status, message)

    @api.post(
        "/v1/models/{name}/import",
        tags=["act"],
        status_code=201,
        openapi_extra=MULTIPART,
        responses={403: {"description": "Not an operator."}, 413: {"description": "Over the size limit."}},
    )
    async def import_model(who: Viewer, name: str, request: Request) -> Imported:
        """Import a model trained elsewhere (operator): skops, ONNX or an MLflow model; it becomes the
        model's next version and goes through the same evaluation, rollout and monitoring."""
        workspace = await request.app.state.workspace_of(name)
        if not who.may(workspace, "operator"):
            held = who.role_in(workspace)
            message = f"role {held} in workspace {workspace!r} may not import models; it needs operator"
            await refuse(who, name, "", 403, message, {})
        declared = int(request.headers.get("content-length") or 0)
        limit = settings.import_max_bytes
        if declared > limit:
            message = (
                f"the upload is {declared} bytes, over the import limit of {limit} bytes (MODELBUS_IMPORT_MAX_BYTES)"
            )
            await refuse(who, name, "", 413, message, {"bytes": declared})
        with tracer.start_as_current_span(f"registry import {name}", attributes={"modelbus.actor": who.actor}):
            with tempfile.TemporaryDirectory(prefix="modelbus-import-") as folder:
                return await _import(who, name, request, Path(folder))

    async def _import(who: Principal, name: str, request: Request, folder: Path) -> Imported:
        try:
            form = await request.form(max_files=len(FIELDS), max_fields=8)
        except Exception as exc:  # a malformed multipart body: starlette's parser says why
            await refuse(who, name, "", 400, f"the upload is not a readable multipart form: {exc}", {})
        reason = str(form.get("reason") or "")[:2000]
        target = form.get("target")
        files: dict[str, tuple[Path, str]] = {}
        for field in FIELDS:
            part = form.get(field)
            if part is None:
                continue
            if not isinstance(part, UploadFile):
                await refuse(who, name, reason, 422, f"form field {field!r} must be a file", {})
            filename = _filename(part, field)
            (folder / field).mkdir()
            path = folder / field / filename
            with path.open("wb") as out:
                await asyncio.to_thread(shutil.copyfileobj, part.file, out, 1 << 20)
            files[field] = (path, filename)
        if "model" not in files:
            await refuse(who, name, reason, 422, "the form has no 'model' file", {})
        detail: dict[str, Any] = {field: filename for field, (_, filename) in files.items()}
        async with sessions() as session:
            try:
                revision = await store.SqlStore(session).latest_spec(name)
            except domain.NotFound:
                revision = None
        if revision is None:
            message = (
                f"no spec applied for model {name!r}: apply one first (modelbus apply SPEC); "
                "it declares the task, target, features, gates and rollout"
            )
            await refuse(who, name, reason, 409, message, detail)
        spec = ModelSpec.model_validate(revision.spec)
        run_id = f"import-{uuid.uuid4().hex[:16]}"
        upload = Upload(
            model=files["model"][0],
            model_name=files["model"][1],
            reference=files["reference"][0] if "reference" in files else None,
            reference_name=files["reference"][1] if "reference" in files else "",
            test=files["test"][0] if "test" in files else None,
            test_name=files["test"][1] if "test" in files else "",
            target=str(target) if target else None,
            reason=reason,
            actor=who.actor,
        )
        checking = {
            **{k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(upload).items()},
            "spec": spec.model_dump(mode="json"),
            "run_id": run_id,
            "work": str(folder / "work"),
            "max_bytes": settings.import_max_bytes,
        }
        try:
            # The upload is opened in a child process of the sandbox, never in the registry's own.
            answer = await sandbox.run_child("services.registry.isolated", checking, cwd=folder)
            if "refused" in answer:
                raise ImportRefused(str(answer["refused"]))
            prepared = Prepared.from_json(answer, within=folder)
        except sandbox.SandboxError as exc:
            await refuse(who, name, reason, 422, f"the model could not be checked: {exc}", detail)
        except ImportRefused as exc:
            await refuse(who, name, reason, 422, str(exc), detail)
        try:
            refs = await _store(prepared, name)
        except ArtifactError as exc:
            await refuse(who, name, reason, 503, f"the artifact store refused the files: {exc}", detail)
        trained = prepared.trained(spec, revision.revision, refs, code_version())
        facts = {**detail, "run_id": run_id, "format": prepared.source["format"]}
        registered = commands.RegisterImport(who=actor(who), reason=reason, name=name, trained=trained, facts=facts)
        event_id = await run.run(commands.register_import, registered)
        cache.invalidate(name)
        log.info("%s: imported %s as run %s (%s)", name, upload.model_name, run_id, prepared.estimator)
        return Imported(
            model=name,
            run_id=run_id,
            event_id=event_id,
            format=prepared.source["format"],
            served_as="onnx" if "model.onnx" in prepared.files else "skops",
            estimator=prepared.estimator,
            features=[f.name for f in prepared.feature_schema],
            schema_from=prepared.source["schema_from"],
            metrics=prepared.metrics,
            evaluated_on=prepared.evaluated_on,
            artifacts=refs,
            seconds=prepared.seconds,
        )

    @api.get(
        "/v1/models/{name}/versions/{ref}/export",
        tags=["read"],
        response_class=FileResponse,
        responses={200: {"content": {"application/zip": {}}, "description": "The MLflow model folder, zipped."}},
    )
    async def export_version(
        _: Viewer,
        name: str,
        ref: str,
        format: Annotated[Literal["mlflow"], Query(description="Only mlflow.")] = "mlflow",
        flavor: Annotated[
            Literal["auto", "onnx", "sklearn"], Query(description="auto: onnx when the version has ONNX.")
        ] = "auto",
    ) -> FileResponse:
        """A version as an MLflow model (zipped folder): the onnx flavor when it has ONNX, else sklearn
        with skops (or the flavor asked for); its signature, an input example and the modelbus
        manifest as metadata."""
        try:
            parsed = parse_ref(f"{name}@{ref}")
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        async with sessions() as session:
            versions = store.SqlStore(session)
            version = await versions.get_version(name, await versions.resolve(parsed))
        refs = {a["name"]: a for a in version.artifacts}
        chosen = flavor if flavor != "auto" else "onnx" if "model.onnx" in refs else "sklearn"
        model_file = "model.onnx" if chosen == "onnx" else "model.skops"
        wanted = [model_file, "manifest.json", "test-split.parquet"]
        missing = [w for w in wanted if w not in refs]
        if missing:
            raise HTTPException(
                409, f"{name}@{version.version} lacks {', '.join(missing)}; it cannot be exported as {chosen}"
            )
        folder = Path(tempfile.mkdtemp(prefix="modelbus-export-"))
        try:
            files = {}
            for wanted_name in wanted:
                artifact = refs[wanted_name]
                files[wanted_name] = await asyncio.to_thread(
                    artifacts.get_file, artifact["uri"], folder / "files" / wanted_name, sha256=artifact["sha256"]
                )
            target = folder / f"{name}-{version.version}"
            await asyncio.to_thread(write_mlflow_model, target, version=version.model_dump(mode="json"), files=files)
            archive = await asyncio.to_thread(
                shutil.make_archive, str(folder / target.name), "zip", folder, target.name
            )
        except ArtifactError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(
                503, f"the artifact store could not give {name}@{version.version}'s files: {exc}"
            ) from None
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(
            archive,
            media_type="application/zip",
            filename=f"{target.name}.mlflow.zip",
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    async def _store(prepared: Prepared, name: str) -> list[ArtifactRef]:
        refs = []
        for file_name, path in sorted(prepared.files.items()):
            stored = await asyncio.to_thread(artifacts.put_file, f"{name}/{prepared.run_id}/{file_name}", path)
            refs.append(ArtifactRef(name=file_name, uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes))
        return refs
