"""One training run, in a worker process: files in, files and a summary out.

The service process downloads the data (checking its digest), hands this function local paths,
and uploads what it writes; so the fit never blocks the event loop that keeps the Kafka
consumer alive, and a crash here loses nothing but the run, which is started again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from services.trainer import domain
from shared.contract.events import (
    CandidateResult,
    ContractViolation,
    FeatureSchema,
    FeatureStoreLineage,
    GateResult,
    ReferenceProfile,
)
from shared.contract.spec import Candidate, ModelSpec
from shared.runtime.derive import compute
from shared.runtime.features import prepare
from shared.runtime.gates import latency_gates, sanity_gates, timing
from shared.runtime.metrics import evaluate
from shared.runtime.modelfile import load_predictor
from shared.runtime.onnxexport import export_onnx
from shared.runtime.profile import calibration, reference_profile

log = logging.getLogger("modelbus.trainer.fit")
CHECK_CALLS = 300  # one-row calls a candidate's latency check takes (the evaluator's judgement takes 1,000)


@dataclass(frozen=True)
class Job:
    """What one run needs: the spec, where the data is, where to write, where the search's fits run
    (a Dask scheduler's address, or `n_jobs` processes here; 0: one per core)."""

    run_id: str
    spec: ModelSpec
    data_path: str
    data_format: str
    data_sha256: str
    out_dir: str
    code_version: str
    dask_scheduler: str | None = None
    n_jobs: int = 0
    feast_repo: str | None = None  # the Feast repo, for a spec that names Feast features
    model_threads: int = 1  # native threads a candidate's latency is measured with (as serving runs it)


@dataclass
class Outcome:
    """What one run produced: a model and its files, or the stage that failed and why (typed records,
    carried back from the worker process as they are)."""

    run_id: str
    ok: bool
    stage: str = ""
    reason: str = ""
    violations: list[ContractViolation] = field(default_factory=list)
    estimator: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    candidates: list[CandidateResult] = field(default_factory=list)
    feature_schema: list[FeatureSchema] = field(default_factory=list)
    profile: ReferenceProfile | None = None
    files: dict[str, str] = field(default_factory=dict)
    onnx: str = ""
    training_seconds: float = 0.0
    features_from: FeatureStoreLineage | None = None


def warm_up() -> None:
    """Import what a fit needs, so the first run does not pay for it."""
    import onnxruntime  # noqa: F401
    import skl2onnx  # noqa: F401
    import sklearn.ensemble
    import sklearn.linear_model  # noqa: F401
    import skops.io  # noqa: F401


def _load(job: Job) -> pd.DataFrame:
    if job.data_format == "parquet":
        return pd.read_parquet(job.data_path)
    return pd.read_csv(job.data_path)


def _with_feast(job: Job, frame: pd.DataFrame) -> tuple[pd.DataFrame, FeatureStoreLineage]:
    """The dataset's entity rows with the spec's Feast features joined point-in-time, and their lineage."""
    from shared.runtime import feast

    spec = job.spec
    assert spec.feast is not None
    store = feast.open_store(Path(job.feast_repo or ".modelbus/feast"))
    refs = spec.feast_refs()
    began = time.perf_counter()
    joined = feast.historical(store, frame, spec)
    found = feast.lineage(store, refs)
    log.info(
        "run %s: %d Feast features of %s joined point-in-time onto %d rows in %.2f s",
        job.run_id,
        len(refs),
        ", ".join(found.views),
        len(joined),
        time.perf_counter() - began,
    )
    lineage = FeatureStoreLineage(
        entity=spec.feast.entity,
        event_timestamp=spec.feast.event_timestamp,
        on_missing=spec.feast.on_missing,
        features=refs,
        views=found.views,
        registry_sha256=found.registry_sha256,
        sources=found.sources,
    )
    return joined, lineage


def train(job: Job) -> Outcome:
    """Validate, split, fit every candidate, keep the best, profile, serialize; never raises for bad data."""
    started = time.perf_counter()
    spec = job.spec
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        frame = _load(job)
    except Exception as exc:
        return Outcome(job.run_id, ok=False, stage="load", reason=f"cannot read {job.data_format}: {exc}")
    features_from = None
    if spec.feast is not None:
        try:
            frame, features_from = _with_feast(job, frame)
        except Exception as exc:
            return Outcome(job.run_id, ok=False, stage="load", reason=f"Feast features: {exc}")
    violations = domain.check_contract(frame, spec)
    if violations:
        return Outcome(
            job.run_id,
            ok=False,
            stage="validate",
            reason=f"{len(violations)} data-contract rule(s) broken",
            violations=violations,
        )
    parts = domain.split(frame, spec)
    x_train, y_train = prepare(parts.train, spec.features), parts.train[spec.target]
    x_val, y_val = prepare(parts.validation, spec.features), parts.validation[spec.target]
    log.info(
        "run %s: %d rows (train %d, validation %d, test %d)",
        job.run_id,
        len(frame),
        len(x_train),
        len(x_val),
        len(parts.test),
    )
    fitted_models: list[Any] = []
    tried: list[CandidateResult] = []
    try:
        with parallelism(job, x_train, y_train) as (n_jobs, where):
            log.info("run %s: cross-validation fits on %s", job.run_id, where)
            for index, candidate in enumerate(spec.candidates, 1):
                began = time.perf_counter()
                log.info("run %s: candidate %d/%d %s", job.run_id, index, len(spec.candidates), candidate.estimator)
                fitted = _search(job, spec, candidate, x_train, y_train, n_jobs)
                model, params = fitted.pipeline, fitted.params
                measured = evaluate(spec.task, model, x_val, y_val)
                score = measured.get(spec.selection_metric, float("nan"))
                checks = check_candidate(job, model, x_val, out / "candidates" / str(index))
                refused = domain.refusal(checks)
                log.info(
                    "run %s: %s %s=%.4f in %.1f s%s",
                    job.run_id,
                    candidate.estimator.rsplit(".", 1)[1],
                    spec.selection_metric,
                    score,
                    time.perf_counter() - began,
                    f"; cannot be chosen, it {refused}" if refused else "",
                )
                fitted_models.append(model)
                tried.append(
                    CandidateResult(
                        estimator=candidate.estimator,
                        params=params,
                        score=score,
                        cv_score=fitted.cv_score,
                        metrics=measured,
                        checks=checks,
                        refused=refused,
                    )
                )
    except Exception as exc:
        log.exception("run %s: fit failed", job.run_id)
        return Outcome(job.run_id, ok=False, stage="fit", reason=f"{type(exc).__name__}: {exc}")
    chosen = domain.choose(spec, tried)
    if chosen is None:
        shutil.rmtree(out / "candidates", ignore_errors=True)
        reason = domain.none_passes(tried)
        log.warning("run %s: %s", job.run_id, reason)
        return Outcome(job.run_id, ok=False, stage="select", reason=reason, candidates=tried)
    model, params, estimator = fitted_models[chosen], tried[chosen].params, tried[chosen].estimator
    metrics = evaluate(spec.task, model, x_val, y_val)
    profile = reference_profile(
        spec.model_inputs(), with_derived(spec, parts.train), model.predict(x_val), task=spec.task, seed=spec.split.seed
    )
    if spec.task == "classification":
        calibrated = calibration(model, prepare(parts.test, spec.features), parts.test[spec.target])
        profile = profile.model_copy(update={"calibration": calibrated})
    files = _write_artifacts(job, spec, model, parts.test, out)
    winner = out / "candidates" / str(chosen + 1)
    onnx_note = (winner / "onnx.txt").read_text()
    if onnx_note == "ok":
        (winner / "model.onnx").replace(out / "model.onnx")
        files["model.onnx"] = str(out / "model.onnx")
    shutil.rmtree(out / "candidates", ignore_errors=True)
    seconds = time.perf_counter() - started
    schema = [
        FeatureSchema(name=f.name, kind=schema_kind(f.type), dtype=str(frame[f.name].dtype)) for f in spec.features
    ]
    manifest = {
        "run_id": job.run_id,
        "model": spec.model,
        "estimator": estimator,
        "params": params,
        "metrics": metrics,
        "selection_metric": spec.selection_metric,
        "candidates": [c.model_dump() for c in tried],
        "feature_schema": [s.model_dump() for s in schema],
        "derived": [d.model_dump(mode="json") for d in spec.derived],
        "target": spec.target,
        "task": spec.task,
        "classes": model.classes_.tolist() if spec.task == "classification" else None,
        "data_sha256": job.data_sha256,
        "rows": {"train": len(parts.train), "validation": len(parts.validation), "test": len(parts.test)},
        "code_version": job.code_version,
        "training_seconds": seconds,
        "search_ran_on": where,
        "onnx": onnx_note,
        "frameworks": _versions(),
        "features_from": features_from.model_dump(mode="json") if features_from else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    files["manifest.json"] = str(out / "manifest.json")
    log.info("run %s: %s wins, %s in %.1f s (onnx: %s)", job.run_id, estimator, _short(metrics), seconds, onnx_note)
    return Outcome(
        job.run_id,
        ok=True,
        estimator=estimator,
        params=params,
        metrics=metrics,
        candidates=tried,
        feature_schema=schema,
        profile=profile,
        files=files,
        onnx=onnx_note,
        training_seconds=seconds,
        features_from=features_from,
    )


def check_candidate(job: Job, model: Any, x_val: pd.DataFrame, folder: Path) -> list[GateResult]:
    """The spec's gates a candidate can be held to before it is chosen: its predictions' sanity on
    the validation rows, and the latency of its served form (its ONNX graph, exported into
    `folder`, when it has one) with the native threads serving gives it, measured again once if a
    latency gate fails, as the evaluator measures."""
    spec = job.spec
    folder.mkdir(parents=True, exist_ok=True)
    note = (
        export_onnx(model, spec.features, spec.task, x_val, folder / "model.onnx")
        if not spec.derived
        else "not exported: derived features are computed by modelbus' DeriveFeatures step, which has no ONNX "
        "converter; served through skops"
    )
    (folder / "onnx.txt").write_text(note)
    served = model
    if note == "ok":
        served = load_predictor(
            folder,
            features=[f.name for f in spec.features],
            numeric=[f.type != "categorical" for f in spec.features],
            task=spec.task,
        )
    with threadpool_limits(limits=job.model_threads or None):
        measured = timing(spec, served, None, x_val, row_calls=CHECK_CALLS)
    return [*sanity_gates(spec, model, x_val), *latency_gates(spec, measured)]


@contextlib.contextmanager
def parallelism(job: Job, x: pd.DataFrame, y: pd.Series) -> Iterator[tuple[int, str]]:
    """Where a search's cross-validation fits run, as (n_jobs, a description): on the Dask cluster
    at `job.dask_scheduler` through joblib's Dask backend, the training rows scattered to its
    workers once for the whole run (not once per fit); else `job.n_jobs` processes here."""
    if not job.dask_scheduler:
        n_jobs = job.n_jobs or os.cpu_count() or 1
        yield n_jobs, f"this process, n_jobs={n_jobs}"
        return
    client = dask_client(job.dask_scheduler)
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    with joblib.parallel_config(backend="dask", client=client, scatter=[x, y]):
        yield -1, f"Dask at {job.dask_scheduler} ({workers} workers)"


_CLIENTS: dict[str, Any] = {}
SEARCH_ATTEMPTS = 3  # a search whose Dask worker died is run again (the training rows stay scattered)


def _search(
    job: Job, spec: ModelSpec, candidate: Candidate, x: pd.DataFrame, y: pd.Series, n_jobs: int
) -> domain.Fitted:
    """Fit one candidate; on Dask, a search that lost a worker's fits (the worker died, taking the
    per-call data joblib put on it) is run again on the workers left: being seeded, it gives the
    same result."""
    for attempt in range(1, SEARCH_ATTEMPTS + 1):
        try:
            return domain.fit_candidate(spec, candidate, x, y, n_jobs=n_jobs)
        except Exception as exc:  # distributed's FutureCancelledError is a concurrent.futures.CancelledError
            if not job.dask_scheduler or not _lost_on_dask(exc) or attempt == SEARCH_ATTEMPTS:
                raise
            log.warning("run %s: a Dask worker was lost (%s: %s); searching again", job.run_id, type(exc).__name__, exc)
    raise AssertionError("unreachable")


def _lost_on_dask(exc: BaseException) -> bool:
    return isinstance(exc, concurrent.futures.CancelledError) or type(exc).__name__ == "KilledWorker"


def dask_client(address: str) -> Any:
    """This fit process's client of the Dask scheduler at `address` (made once, kept)."""
    if address not in _CLIENTS:
        from distributed import Client

        try:
            _CLIENTS[address] = Client(address, timeout=10, set_as_default=False)  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise ConnectionError(f"the Dask scheduler at {address} does not answer: {exc}") from None
    return _CLIENTS[address]


def schema_kind(kind: str) -> Literal["numeric", "categorical", "datetime"]:
    """How serving checks a feature: numbers, datetimes, or anything else as a category."""
    return "numeric" if kind == "numeric" else "datetime" if kind == "datetime" else "categorical"


def with_derived(spec: ModelSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with the spec's derived features appended (what the reference profile covers)."""
    if not spec.derived:
        return rows
    derived = compute(prepare(rows, spec.features), [d.model_dump(mode="json") for d in spec.derived])
    return pd.concat([rows, derived], axis=1)


def _short(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def _write_artifacts(job: Job, spec: ModelSpec, model: Any, test: pd.DataFrame, out: Path) -> dict[str, str]:
    import skops.io as sio

    sio.dump(model, out / "model.skops")
    test.to_parquet(out / "test-split.parquet", index=False)
    return {"model.skops": str(out / "model.skops"), "test-split.parquet": str(out / "test-split.parquet")}


def _versions() -> dict[str, str]:
    import sklearn
    import skops

    found = {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    for library in ("onnx", "skl2onnx", "onnxmltools", "xgboost", "lightgbm"):
        try:
            found[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found
