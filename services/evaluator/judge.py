"""Judging a version: its artifacts read safely, every gate measured on the stored test split.

A model's bytes are read only after their SHA-256 matches the registry's record, and opened only in
a child process of the sandbox (shared.runtime.sandbox: no secrets, resource limits): with skops,
which loads only the types and functions on its exact allowlists, or (a version imported as ONNX
only) through ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from services.evaluator import domain
from shared.contract.events import ArtifactRef, GateResult, ModelRegistered
from shared.contract.spec import ModelSpec
from shared.runtime import sandbox, threads
from shared.runtime.artifacts import ArtifactError, ArtifactIntegrityError, ArtifactStore
from shared.runtime.features import prepare
from shared.runtime.gates import timing
from shared.runtime.modelfile import UntrustedArtifact, load_predictor
from shared.runtime.onnxmodel import OnnxModelError

log = logging.getLogger("modelbus.evaluator")


class Judging(Protocol):
    """What the handlers ask of a judge."""

    async def verdict(
        self, spec: ModelSpec, event: ModelRegistered, champion: list[ArtifactRef] | None
    ) -> domain.Verdict:
        """Every gate for the version, or a rejection saying why it could not be judged."""


class EvaluatorRefusal(ValueError):
    """A version the evaluator cannot judge (an artifact is missing)."""


def _artifact(artifacts: list[ArtifactRef], name: str) -> ArtifactRef:
    for artifact in artifacts:
        if artifact.name == name:
            return artifact
    raise EvaluatorRefusal(f"no {name} among the version's artifacts")


def _open(spec: ModelSpec, folder: Path) -> Any:
    """The model in `folder`: its skops pipeline, else its ONNX graph."""
    return load_predictor(
        folder,
        features=[f.name for f in spec.features],
        numeric=[f.type == "numeric" for f in spec.features],
        task=spec.task,
    )


def judge_files(spec: ModelSpec, folder: Path, *, model_threads: int = 1) -> domain.Verdict:
    """Every gate for the files a Judge fetched into `folder` (candidate/, its served graph in
    served/, the champion's model in champion/ and its served graph in champion-served/): what runs
    in the sandbox's child process, its native pools as serving sizes them."""
    threads.narrow(model_threads)
    try:
        model = _open(spec, folder / "candidate")
    except (UntrustedArtifact, OnnxModelError) as exc:
        return domain.rejected_for(str(exc), "artifact_types")
    champion_model = None
    if (folder / "champion").is_dir():
        try:
            champion_model = _open(spec, folder / "champion")
        except (UntrustedArtifact, OnnxModelError, OSError) as exc:
            log.warning("the champion is unreadable (%s); judging without it", exc)
    served = _served(spec, folder / "served", model)
    champion_served = _served(spec, folder / "champion-served", champion_model) if champion_model else None
    test = pd.read_parquet(folder / "candidate" / "test-split.parquet")
    measured = timing(spec, served, champion_served, prepare(test, spec.features))
    return domain.judge(spec, model, test, measured, champion=champion_model)


def _served(spec: ModelSpec, folder: Path, model: Any) -> Any:
    """What serving runs: the ONNX graph in `folder` when there is one, else `model`."""
    if not folder.is_dir():
        return model
    try:
        return _open(spec, folder)
    except (OnnxModelError, OSError) as exc:
        log.warning("an ONNX graph is unreadable (%s); timing the pipeline", exc)
        return model


@dataclass
class Judge:
    """Fetches a version's artifacts (each checked against its digest) and has a child process of
    the sandbox open and judge them: a model file runs in no long-lived process before it passed."""

    artifacts: ArtifactStore
    model_threads: int = 1
    warm: sandbox.Warm = field(default_factory=lambda: sandbox.Warm("services.evaluator.isolated"))

    async def close(self) -> None:
        """Stop the warm sandbox."""
        await self.warm.close()

    async def fetch(self, artifact: ArtifactRef, folder: Path) -> Path:
        """Download an artifact into `folder` (made if missing), checking its digest."""
        return await asyncio.to_thread(
            self.artifacts.get_file, artifact.uri, folder / artifact.name, sha256=artifact.sha256
        )

    async def fetch_model(self, artifacts: list[ArtifactRef], folder: Path, *, prefer: str = "model.skops") -> None:
        """A version's model file: its skops pipeline or (an imported graph, or `prefer`) its ONNX file."""
        names = {a.name for a in artifacts}
        name = prefer if prefer in names else next((n for n in ("model.skops", "model.onnx") if n in names), None)
        if name is None:
            raise EvaluatorRefusal("no model.skops or model.onnx among the version's artifacts")
        await self.fetch(_artifact(artifacts, name), folder)

    async def verdict(
        self, spec: ModelSpec, event: ModelRegistered, champion: list[ArtifactRef] | None
    ) -> domain.Verdict:
        """Every gate for the version, or a rejection saying why it could not be judged."""
        with tempfile.TemporaryDirectory(prefix="modelbus-eval-") as name:
            folder = Path(name)
            try:
                await self.fetch_model(event.artifacts, folder / "candidate")
                await self.fetch(_artifact(event.artifacts, "test-split.parquet"), folder / "candidate")
            except ArtifactIntegrityError as exc:
                return domain.rejected_for(f"checksum: {exc}")
            # What serving runs: the ONNX graph beside a pipeline (checked against it when it was
            # exported); its latency is the one that counts.
            if "model.onnx" in {a.name for a in event.artifacts} and (folder / "candidate" / "model.skops").exists():
                try:
                    await self.fetch(_artifact(event.artifacts, "model.onnx"), folder / "served")
                except ArtifactError as exc:
                    log.warning("%s@%d: its ONNX graph unreadable (%s)", event.model, event.version, exc)
            if champion is not None:
                try:
                    await self.fetch_model(champion, folder / "champion")
                    if "model.onnx" in {a.name for a in champion} and (folder / "champion" / "model.skops").exists():
                        await self.fetch(_artifact(champion, "model.onnx"), folder / "champion-served")
                except (ArtifactError, EvaluatorRefusal) as exc:
                    log.warning("champion of %s unreadable (%s); judging without it", event.model, exc)
            request = {"spec": spec.model_dump(mode="json"), "folder": str(folder), "threads": self.model_threads}
            try:
                answer = await self.warm.run(request, cwd=folder)
            except sandbox.SandboxError as exc:
                return domain.rejected_for(f"the model could not be judged in the sandbox: {exc}", "artifact_types")
            return domain.Verdict(
                gates=[GateResult.model_validate(g) for g in answer["gates"]],
                metrics={str(k): float(v) for k, v in answer["metrics"].items()},
                champion_metrics={str(k): float(v) for k, v in answer["champion_metrics"].items()},
                decision=str(answer["decision"]),
                test_rows=int(answer["test_rows"]),
            )
