"""Judging a version: its artifacts read safely, every gate measured on the stored test split.

A model's bytes are read only after their SHA-256 matches the registry's record, and loaded with
skops, which runs no code and loads only the types and functions on its exact allowlists, or (a version imported
as ONNX only) through ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from services.evaluator import domain
from shared.contract.events import ArtifactRef, ModelRegistered
from shared.contract.spec import ModelSpec
from shared.runtime.artifacts import ArtifactError, ArtifactIntegrityError, ArtifactStore
from shared.runtime.features import prepare
from shared.runtime.modelfile import UntrustedArtifact, load_predictor
from shared.runtime.onnxmodel import OnnxModelError

log = logging.getLogger("modelbus.evaluator")
ROW_SAMPLES = 200
BATCH_ROWS = 1000
BATCH_SAMPLES = 20


class Judging(Protocol):
    """What the handlers ask of a judge."""

    async def verdict(
        self, spec: ModelSpec, event: ModelRegistered, champion: list[ArtifactRef] | None
    ) -> domain.Verdict:
        """Every gate for the version, or a rejection saying why it could not be judged."""


class EvaluatorRefusal(ValueError):
    """A version the evaluator cannot judge (an artifact is missing)."""


def measure_latency(model: Any, x: pd.DataFrame) -> domain.Latency:
    """p99 of one-row predictions and of 1,000-row batch predictions, in milliseconds."""
    rows: list[float] = []
    for i in range(ROW_SAMPLES):
        one = x.iloc[[i % len(x)]]
        began = time.perf_counter()
        model.predict(one)
        rows.append((time.perf_counter() - began) * 1000)
    batch = x.sample(n=BATCH_ROWS, replace=len(x) < BATCH_ROWS, random_state=0)
    batches: list[float] = []
    for _ in range(BATCH_SAMPLES):
        began = time.perf_counter()
        model.predict(batch)
        batches.append((time.perf_counter() - began) * 1000)
    return domain.Latency(float(np.percentile(rows, 99)), float(np.percentile(batches, 99)))


def _artifact(artifacts: list[ArtifactRef], name: str) -> ArtifactRef:
    for artifact in artifacts:
        if artifact.name == name:
            return artifact
    raise EvaluatorRefusal(f"no {name} among the version's artifacts")


@dataclass
class Judge:
    """Reads artifacts safely and judges a version."""

    artifacts: ArtifactStore

    async def fetch(self, artifact: ArtifactRef, folder: Path) -> Path:
        """Download an artifact, checking its digest."""
        return await asyncio.to_thread(
            self.artifacts.get_file, artifact.uri, folder / artifact.name, sha256=artifact.sha256
        )

    async def open(
        self, spec: ModelSpec, artifacts: list[ArtifactRef], folder: Path, *, prefer: str = "model.skops"
    ) -> Any:
        """A version's model, from its skops pipeline or (an imported graph, or `prefer`) its ONNX file."""
        names = {a.name for a in artifacts}
        name = prefer if prefer in names else next(n for n in ("model.skops", "model.onnx") if n in names)
        await self.fetch(_artifact(artifacts, name), folder)
        return await asyncio.to_thread(
            load_predictor,
            folder,
            features=[f.name for f in spec.features],
            numeric=[f.type == "numeric" for f in spec.features],
            task=spec.task,
        )

    async def served(self, spec: ModelSpec, artifacts: list[ArtifactRef], folder: Path, model: Any) -> Any:
        """What serving runs for this version: its ONNX graph when it has one (checked against the
        pipeline when it was exported), else the pipeline itself. Its latency is the one that counts."""
        if "model.onnx" not in {a.name for a in artifacts} or not (folder / "model.skops").exists():
            return model
        (folder / "served").mkdir()
        return await self.open(spec, artifacts, folder / "served", prefer="model.onnx")

    async def verdict(
        self, spec: ModelSpec, event: ModelRegistered, champion: list[ArtifactRef] | None
    ) -> domain.Verdict:
        """Every gate for the version, or a rejection saying why it could not be judged."""
        with tempfile.TemporaryDirectory(prefix="modelbus-eval-") as name:
            folder = Path(name)
            try:
                model = await self.open(spec, event.artifacts, folder)
                test_file = await self.fetch(_artifact(event.artifacts, "test-split.parquet"), folder)
            except ArtifactIntegrityError as exc:
                return domain.rejected_for(f"checksum: {exc}")
            except (UntrustedArtifact, OnnxModelError) as exc:
                return domain.rejected_for(str(exc), "artifact_types")
            champion_model = None
            if champion is not None:
                try:
                    (folder / "champion").mkdir()
                    champion_model = await self.open(spec, champion, folder / "champion")
                except (ArtifactError, UntrustedArtifact, EvaluatorRefusal, OnnxModelError) as exc:
                    log.warning("champion of %s unreadable (%s); judging without it", event.model, exc)
            test = pd.read_parquet(test_file)
            try:
                served = await self.served(spec, event.artifacts, folder, model)
            except (ArtifactError, OnnxModelError) as exc:
                log.warning(
                    "%s@%d: its ONNX graph unreadable (%s); timing the pipeline", event.model, event.version, exc
                )
                served = model
            latency = await asyncio.to_thread(measure_latency, served, prepare(test, spec.features))
            return await asyncio.to_thread(domain.judge, spec, model, test, latency, champion=champion_model)
