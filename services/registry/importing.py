"""Importing a model trained elsewhere: its schema settled, smoke-tested on reference rows,
profiled, and written out as the files of a version, with the ModelTrained that registers it.

Runs in a worker thread of the registry's API, on local files; the caller stores the files and
stages the event. Nothing here runs code from the upload: skops loads with the type allowlist,
ONNX through ONNX Runtime, and pickles never get this far (`services.registry.sources`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.registry.sources import ImportRefused, Kind, Source, copy_model, open_source
from shared.contract.events import ArtifactRef, FeatureSchema, ModelTrained, ReferenceProfile
from shared.contract.spec import Feature, ModelSpec
from shared.runtime import served
from shared.runtime.artifacts import sha256_file
from shared.runtime.features import MISSING, prepare
from shared.runtime.metrics import evaluate
from shared.runtime.modelfile import UntrustedArtifact, load_model
from shared.runtime.onnxexport import export_onnx
from shared.runtime.onnxmodel import OnnxModel, OnnxModelError, inputs_of, session_of
from shared.runtime.profile import calibration, reference_profile

PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Upload:
    """What an operator sent: the model and, optionally, reference and test rows."""

    model: Path
    model_name: str
    reference: Path | None = None
    reference_name: str = ""
    test: Path | None = None
    test_name: str = ""
    target: str | None = None
    reason: str = ""
    actor: str = ""


@dataclass(frozen=True)
class Prepared:
    """An import ready to store: the version's files, and what its ModelTrained says."""

    run_id: str
    files: dict[str, Path]
    estimator: str
    params: dict[str, Any]
    metrics: dict[str, float]
    feature_schema: list[FeatureSchema]
    profile: ReferenceProfile
    data_sha256: str
    dataset_version: str
    evaluated_on: str
    seconds: float
    source: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """What the sandbox's child answers (services.registry.isolated)."""
        return {
            **{k: getattr(self, k) for k in ("run_id", "estimator", "params", "metrics", "data_sha256")},
            **{k: getattr(self, k) for k in ("dataset_version", "evaluated_on", "seconds")},
            "source": json.loads(json.dumps(self.source, default=str)),
            "files": {name: str(path) for name, path in self.files.items()},
            "feature_schema": [s.model_dump(mode="json") for s in self.feature_schema],
            "profile": self.profile.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, found: dict[str, Any], *, within: Path) -> Prepared:
        """A child's answer, checked: every value of its type, every file inside `within`."""
        files = {str(name): Path(path).resolve() for name, path in found["files"].items()}
        outside = [name for name, path in files.items() if not path.is_relative_to(within.resolve())]
        if outside:
            raise ImportRefused(f"the import's check named files outside its folder: {', '.join(outside)}")
        return cls(
            run_id=str(found["run_id"]),
            files=files,
            estimator=str(found["estimator"]),
            params=dict(found["params"]),
            metrics={str(k): float(v) for k, v in found["metrics"].items()},
            feature_schema=[FeatureSchema.model_validate(s) for s in found["feature_schema"]],
            profile=ReferenceProfile.model_validate(found["profile"]),
            data_sha256=str(found["data_sha256"]),
            dataset_version=str(found["dataset_version"]),
            evaluated_on=str(found["evaluated_on"]),
            seconds=float(found["seconds"]),
            source=dict(found["source"]),
        )

    def trained(self, spec: ModelSpec, revision: int, artifacts: list[ArtifactRef], code: str) -> ModelTrained:
        """The event that registers the import as the model's next version."""
        return ModelTrained(
            model=spec.model,
            run_id=self.run_id,
            task=spec.task,
            target=spec.target,
            dataset=spec.dataset,
            dataset_version=self.dataset_version,
            data_sha256=self.data_sha256,
            spec_revision=revision,
            estimator=self.estimator,
            params=self.params,
            metrics=self.metrics,
            candidates=[],
            artifacts=artifacts,
            feature_schema=self.feature_schema,
            reference_profile=self.profile,
            code_version=code,
            training_seconds=self.seconds,
            trigger="imported",
        )


MAX_ROWS = 1_000_000  # reference or test rows an import reads
MAX_COLUMNS = 2_000


def _parquet_bounds(path: Path, filename: str, what: str, max_bytes: int) -> None:
    """Refuse a Parquet file whose footer declares more rows, columns or unpacked bytes than an
    import reads, before any page is decompressed (a few hundred KB can declare 50 million rows)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    for count, limit, unit in (
        (meta.num_rows, MAX_ROWS, "rows"),
        (meta.num_columns, MAX_COLUMNS, "columns"),
        (unpacked, max_bytes, "bytes unpacked"),
    ):
        if count > limit:
            raise ImportRefused(f"the {what} data {filename} has {count:,} {unit}; the limit is {limit:,}")


def read_rows(path: Path, filename: str, what: str, *, max_bytes: int) -> pd.DataFrame:
    """A CSV or Parquet file of rows, at most MAX_ROWS rows and MAX_COLUMNS columns (checked before
    they are read); ImportRefused naming the file if it cannot be read or is too large."""
    try:
        with path.open("rb") as handle:
            parquet = handle.read(4) == b"PAR1"
        if parquet:
            _parquet_bounds(path, filename, what, max_bytes)
            frame = pd.read_parquet(path)
        else:
            columns = len(pd.read_csv(path, nrows=0, compression=None).columns)
            if columns > MAX_COLUMNS:
                raise ImportRefused(f"the {what} data {filename} has {columns:,} columns; the limit is {MAX_COLUMNS:,}")
            frame = pd.read_csv(path, nrows=MAX_ROWS + 1, compression=None)
            if len(frame) > MAX_ROWS:
                raise ImportRefused(
                    f"the {what} data {filename} has more than {MAX_ROWS:,} rows; the limit is {MAX_ROWS:,}"
                )
    except ImportRefused:
        raise
    except Exception as exc:
        raise ImportRefused(f"the {what} data {filename} is neither Parquet nor CSV that reads: {exc}") from None
    if frame.empty:
        raise ImportRefused(f"the {what} data {filename} has no rows")
    return frame


# ---------------------------------------------------------------- the schema


def _differ(left: str, right: str, a: list[str], b: list[str]) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    parts = [f"only in {left}: {', '.join(only_a)}" if only_a else "", f"only in {right}: {', '.join(only_b)}"]
    return f"{left} and {right} disagree: " + "; ".join(p for p in parts if p and not p.endswith(": "))


def settle_schema(
    spec: ModelSpec,
    source: Source,
    onnx_inputs: list[tuple[str, Kind]] | None,
    reference: pd.DataFrame | None,
    fitted_names: list[str] | None,
) -> list[Feature]:
    """The version's features, in the model's order: from the MLflow signature, the ONNX inputs or
    the reference rows, in that order; refused with the difference if the sources, or the spec,
    disagree."""
    spec_kinds = {f.name: f.type for f in spec.features}
    named: list[tuple[str, list[tuple[str, Kind | None]]]] = []
    if source.signature is not None:
        named.append(("the MLflow signature", list(source.signature)))
    if onnx_inputs is not None:
        named.append(("the ONNX inputs", list(onnx_inputs)))
    if fitted_names is not None:
        named.append(("the model's fitted feature names", [(n, None) for n in fitted_names]))
    if not named and reference is None:
        raise ImportRefused(
            "the model declares no inputs (no MLflow signature, no named ONNX inputs) and no reference data was "
            "given: send --reference rows so modelbus knows the model's inputs"
        )
    order = [n for n, _ in named[0][1]] if named else [f.name for f in spec.features]
    for what, columns in named[1:]:
        names = [n for n, _ in columns]
        if set(names) != set(order):
            raise ImportRefused(_differ(named[0][0], what, order, names))
    for what, columns in named:
        names = [n for n, _ in columns]
        if set(names) != set(spec_kinds):
            raise ImportRefused(_differ(what, "the spec's features", names, list(spec_kinds)))
        for name, kind in columns:
            wanted = spec_kinds[name]
            if kind is None or kind == wanted or {kind, wanted} == {"categorical", "boolean"}:
                continue
            raise ImportRefused(f"feature {name!r} is {kind} in {what} but {wanted} in the spec")
    if reference is not None:
        missing = [n for n in order if n not in reference.columns]
        if missing:
            raise ImportRefused(f"the reference data lacks feature(s) {', '.join(missing)} that the model takes")
    by_name = {f.name: f for f in spec.features}
    return [by_name[n] for n in order]


def _onnx_columns(path: Path, spec: ModelSpec) -> list[tuple[str, Kind]] | None:
    try:
        ports = inputs_of(session_of(path))
    except OnnxModelError as exc:
        raise ImportRefused(str(exc)) from None
    if len(ports) == 1 and ports[0].numeric and ports[0].name not in {f.name for f in spec.features}:
        return None  # one matrix input (skl2onnx names it X): it names no columns
    return [(p.name, "numeric" if p.numeric else "categorical") for p in ports]


# ---------------------------------------------------------------- loading and the smoke test


def _estimators(value: Any, seen: set[int]) -> list[Any]:
    """Every estimator inside a fitted model: pipeline steps, column transformers, ensembles."""
    if isinstance(value, str | bytes | int | float) or value is None or id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return [e for item in value.ravel() for e in _estimators(item, seen)] if value.dtype == object else []
    if isinstance(value, list | tuple):
        return [e for item in value for e in _estimators(item, seen)]
    if not hasattr(value, "get_params"):
        return []
    found = [value]
    for name in ("steps", "transformers_", "estimators_", "estimator_", "base_estimator_", "final_estimator_"):
        found += _estimators(getattr(value, name, None), seen)
    return found


def check_trees(model: Any) -> None:
    """Refuse fitted trees whose node arrays point outside themselves: scikit-learn indexes them
    without bounds checks, so a crafted skops file could crash or read beyond its memory."""
    for estimator in _estimators(model, set()):
        tree = getattr(estimator, "tree_", None)
        if tree is None:
            continue
        nodes, width = int(tree.node_count), int(getattr(estimator, "n_features_in_", tree.n_features))
        left, right, feature = (np.asarray(a) for a in (tree.children_left, tree.children_right, tree.feature))
        if not (len(left) == len(right) == len(feature) == nodes):
            raise ImportRefused(f"a fitted tree of {type(estimator).__name__} has inconsistent node arrays")
        for name, array, low, high in (
            ("child", left, -1, nodes),
            ("child", right, -1, nodes),
            ("feature", feature, -2, width),
        ):
            if array.size and (array.min() < low or array.max() >= high):
                raise ImportRefused(
                    f"a fitted tree of {type(estimator).__name__} names a {name} index outside [{low}, {high}): "
                    "the file is corrupt or crafted"
                )


def _load(source: Source, spec: ModelSpec, features: list[Feature], max_bytes: int) -> Any:
    if source.flavor == "skops":
        try:
            model = load_model(source.model_file, max_bytes)
        except UntrustedArtifact as exc:
            raise ImportRefused(
                f"{exc}; modelbus loads skops files naming scikit-learn, NumPy, SciPy, XGBoost and LightGBM types only"
            ) from None
        except Exception as exc:
            raise ImportRefused(f"the skops file does not load: {type(exc).__name__}: {str(exc)[:300]}") from None
        check_trees(model)
        return model
    try:
        onnx = OnnxModel.open(
            source.model_file,
            features=[f.name for f in features],
            numeric=[f.type == "numeric" for f in features],
            task=spec.task,
        )
    except OnnxModelError as exc:
        raise ImportRefused(str(exc)) from None
    if spec.task == "classification" and not onnx.has_probabilities:
        raise ImportRefused(
            "the spec declares classification, but the ONNX graph has a single output and no class probabilities "
            "(it looks like a regressor)"
        )
    if spec.task == "regression" and len(onnx.session.get_outputs()) > 1:
        raise ImportRefused(
            "the spec declares regression, but the ONNX graph gives labels and probabilities (a classifier)"
        )
    return onnx


def smoke_test(spec: ModelSpec, model: Any, x: pd.DataFrame, labels: pd.Series | None) -> np.ndarray[Any, Any]:
    """Predict on the reference rows and check the outputs fit the task; the predictions."""
    rows = len(x)
    is_classifier = getattr(model, "classes_", None) is not None
    if spec.task == "classification" and not is_classifier and not isinstance(model, OnnxModel):
        raise ImportRefused(
            f"the spec declares classification, but the model ({type(model).__name__}) has no classes "
            "(it looks like a regressor)"
        )
    if spec.task == "regression" and is_classifier and not isinstance(model, OnnxModel):
        shown = ", ".join(map(str, list(model.classes_)[:5]))
        raise ImportRefused(f"the spec declares regression, but the model is a classifier (classes {shown})")
    try:
        predicted = np.asarray(model.predict(x))
    except Exception as exc:
        raise ImportRefused(f"the model fails on the reference rows: {type(exc).__name__}: {str(exc)[:300]}") from None
    if predicted.shape[0] != rows:
        raise ImportRefused(f"the model gave {predicted.shape[0]} predictions for {rows} reference rows")
    if spec.task == "regression":
        values = predicted.astype(float, copy=False) if predicted.dtype.kind in "fiub" else None
        if values is None or not np.all(np.isfinite(values)):
            raise ImportRefused("the model's predictions on the reference rows are not all finite numbers")
        return predicted
    if getattr(model, "classes_", None) is None:
        raise ImportRefused("the classifier's graph names no class labels (no classifier or ZipMap node)")
    classes = [str(c) for c in model.classes_]
    try:
        probabilities = np.asarray(model.predict_proba(x), dtype=float)
    except Exception as exc:
        raise ImportRefused(f"the classifier gives no class probabilities: {type(exc).__name__}: {exc}") from None
    if probabilities.shape != (rows, len(classes)):
        raise ImportRefused(f"class probabilities have shape {probabilities.shape}, not ({rows}, {len(classes)})")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < -1e-6 or probabilities.max() > 1 + 1e-6:
        raise ImportRefused("class probabilities on the reference rows are not all within [0, 1]")
    worst = float(np.max(np.abs(probabilities.sum(axis=1) - 1)))
    if worst > PROBABILITY_TOLERANCE:
        raise ImportRefused(f"class probabilities do not sum to 1 (off by up to {worst:.3g})")
    unknown = sorted(set(map(str, predicted)) - set(classes))
    if unknown:
        raise ImportRefused(f"the model predicts labels outside its classes: {', '.join(unknown[:5])}")
    if labels is not None:
        unseen = sorted(set(map(str, labels.dropna())) - set(classes))
        if unseen:
            raise ImportRefused(
                f"the target {spec.target!r} has labels the model does not know: {', '.join(unseen[:5])} "
                f"(its classes: {', '.join(classes[:10])})"
            )
    return predicted


def _describe(model: Any, source: Source) -> tuple[str, dict[str, Any]]:
    if isinstance(model, OnnxModel):
        import onnx

        graph = onnx.load(str(source.model_file), load_external_data=False)
        producer = graph.producer_name or "unknown"
        opset = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0)
        return f"onnx.{producer}", {"producer_version": graph.producer_version, "opset": opset}
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    public = [part for part in type(final).__module__.split(".") if not part.startswith("_")]
    estimator = ".".join([*public, type(final).__qualname__])
    params = {
        k: v for k, v in final.get_params(deep=False).items() if v is None or isinstance(v, str | int | float | bool)
    }
    return estimator, params


# ---------------------------------------------------------------- the whole import


def prepare_import(upload: Upload, spec: ModelSpec, *, run_id: str, work: Path, max_bytes: int) -> Prepared:
    """Open, check, smoke-test and profile an upload into a version's files; ImportRefused says why not."""
    began = time.perf_counter()
    source = open_source(upload.model, upload.model_name, work, max_bytes=max_bytes)
    if upload.reference is None and upload.test is None:
        if source.format == "mlflow" and source.signature is None:
            raise ImportRefused(
                "the MLflow model has no signature and no reference data was given: modelbus cannot know its "
                "inputs nor smoke-test it; send --reference rows (or save the model with a signature)"
            )
        raise ImportRefused("no rows to smoke-test and profile the model on: send --reference (and --test) data")
    reference = (
        read_rows(upload.reference, upload.reference_name, "reference", max_bytes=max_bytes)
        if upload.reference
        else None
    )
    test = read_rows(upload.test, upload.test_name, "test", max_bytes=max_bytes) if upload.test else None
    target = upload.target or spec.target
    if target != spec.target:
        raise ImportRefused(f"--target {target!r} is not the spec's target {spec.target!r}")
    onnx_inputs = _onnx_columns(source.model_file, spec) if source.flavor == "onnx" else None
    fitted = None
    if source.flavor == "skops":
        model = _load(source, spec, list(spec.features), max_bytes)
        names = getattr(model, "feature_names_in_", None)
        fitted = [str(n) for n in names] if names is not None else None
    features = settle_schema(spec, source, onnx_inputs, reference, fitted)
    if source.flavor == "onnx":
        model = _load(source, spec, features, max_bytes)
    rows = reference if reference is not None else test
    evaluation = test if test is not None else reference
    assert rows is not None and evaluation is not None
    if test is not None:  # the reference rows were checked with the schema
        lacking = [f.name for f in features if f.name not in test.columns]
        if lacking:
            raise ImportRefused(f"the test data lacks feature(s) {', '.join(lacking)} that the model takes")
    if target not in evaluation.columns:
        where = "test" if test is not None else "reference (no --test data given)"
        raise ImportRefused(f"the {where} rows have no target column {target!r} to evaluate the model on")
    x = prepare(rows, features)
    predicted = smoke_test(spec, model, x, rows[target] if target in rows.columns else None)
    x_eval, y_eval = x, evaluation[target]
    if evaluation is not rows:
        x_eval = prepare(evaluation, features)
        smoke_test(spec, model, x_eval, y_eval)
    metrics = evaluate(spec.task, model, x_eval, y_eval)
    profile = reference_profile(features, rows, predicted, task=spec.task, seed=spec.split.seed)
    if spec.task == "classification":
        profile = profile.model_copy(update={"calibration": calibration(model, x_eval, y_eval)})
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    model_file = copy_model(source, out)
    files = {model_file.name: model_file}
    onnx_note = "ok (imported as ONNX)"
    if source.flavor == "skops":
        onnx_note = export_onnx(model, features, spec.task, x, out / "model.onnx")
        if onnx_note == "ok":
            files["model.onnx"] = out / "model.onnx"
    evaluation.to_parquet(out / "test-split.parquet", index=False)
    estimator, params = _describe(model, source)
    data_digest = sha256_file(upload.reference or upload.test)  # type: ignore[arg-type]
    evaluated_on = "test" if test is not None else "reference (no --test data given)"
    schema = [
        FeatureSchema(
            name=f.name, kind="numeric" if f.type == "numeric" else "categorical", dtype=str(rows[f.name].dtype)
        )
        for f in features
    ]
    origin = {
        "format": source.format,
        "flavor": source.flavor,
        "filename": upload.model_name,
        "sha256": sha256_file(upload.model) if upload.model.is_file() else sha256_file(model_file),
        "imported_by": upload.actor,
        "reason": upload.reason,
        "reference": {"filename": upload.reference_name, "rows": len(rows), "sha256": data_digest},
        "test": {"filename": upload.test_name, "rows": len(test)} if test is not None else None,
        "evaluated_on": evaluated_on,
        "schema_from": _schema_origin(source, onnx_inputs),
        **({"mlflow": source.mlflow} if source.mlflow else {}),
    }
    classes = (
        [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
        if spec.task == "classification"
        else None
    )
    manifest = {
        "run_id": run_id,
        "model": spec.model,
        "estimator": estimator,
        "params": params,
        "metrics": metrics,
        "selection_metric": spec.selection_metric,
        "candidates": [],
        "feature_schema": [s.model_dump() for s in schema],
        "target": target,
        "task": spec.task,
        "classes": classes,
        "data_sha256": data_digest,
        "rows": {"reference": len(rows), "test": len(evaluation)},
        "trigger": "imported",
        "imported_from": origin,
        "onnx": onnx_note,
    }
    schema = check_served(out, manifest, rows, predicted, spec.task)
    manifest["feature_schema"] = [s.model_dump() for s in schema]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return Prepared(
        run_id=run_id,
        files={**files, "test-split.parquet": out / "test-split.parquet", "manifest.json": out / "manifest.json"},
        estimator=estimator,
        params=params,
        metrics=metrics,
        feature_schema=schema,
        profile=profile,
        data_sha256=data_digest,
        dataset_version=f"imported-{data_digest[:12]}",
        evaluated_on=evaluated_on,
        seconds=time.perf_counter() - began,
        source=origin,
    )


SERVED_ROWS = 1000  # of the uploader's rows, predicted again as serving runs the version


def _answers(loaded: served.Loaded, row: served.Row) -> bool:
    """Whether the served form answers a row with finite numbers (a graph without imputation
    answers a missing value with NaN rather than an error)."""
    try:
        labels, probabilities = loaded.predict([row])
    except Exception:  # the model's own error
        return False
    values = probabilities[0] if probabilities is not None else labels if loaded.task == "regression" else []
    return all(math.isfinite(float(v)) for v in values)


def _missing(value: Any) -> bool:
    return value == MISSING or (isinstance(value, float) and math.isnan(value))


def check_served(
    out: Path, manifest: dict[str, Any], rows: pd.DataFrame, predicted: np.ndarray[Any, Any], task: str
) -> list[FeatureSchema]:
    """Open the version's files exactly as serving will (shared.runtime.served: its ONNX graph
    when it has one, else the skops file; the same warm-up) and predict the uploader's rows as
    serving receives them (JSON values, checked against the schema): what is accepted serves.
    Returns the feature schema with each feature's nullability as the served form answers it (a
    model without imputation takes no missing value, and serving will ask for one); ImportRefused
    naming why serving could not run it."""
    schema = [FeatureSchema.model_validate(f) for f in manifest["feature_schema"]]
    shown = rows.head(SERVED_ROWS)
    records = json.loads(shown[[s.name for s in schema]].to_json(orient="records", date_format="iso"))
    try:
        checked = served.check_rows(served.features_of([s.model_dump() for s in schema]), records, where="reference")
    except served.InputError as exc:
        raise ImportRefused(f"serving would refuse the reference rows: {exc}") from None
    # Serving warms the version up on a complete row of the uploader's (its model may take no
    # missing value), and so do the probes below.
    complete = next((row for row in checked if not any(_missing(v) for v in row)), checked[0])
    manifest["warm_up"] = complete

    def opened(nullable: list[bool]) -> served.Loaded:
        kept = [s.model_copy(update={"nullable": n}) for s, n in zip(schema, nullable, strict=True)]
        (out / "manifest.json").write_text(
            json.dumps({**manifest, "feature_schema": [s.model_dump() for s in kept]}, default=str)
        )
        try:
            return served.open_version(manifest["model"], 0, out)
        except Exception as exc:
            raise ImportRefused(
                f"serving could not load the model as imported: {type(exc).__name__}: {str(exc)[:300]}"
            ) from None

    without_missing = opened([False] * len(schema))
    nullable = []
    for index, feature in enumerate(without_missing.features):
        probe = list(complete)
        probe[index] = MISSING if feature.kind == "categorical" else math.nan
        nullable.append(_answers(without_missing, probe))
    loaded = opened(nullable)
    try:
        labels, _ = loaded.predict(checked)
    except Exception as exc:
        raise ImportRefused(
            f"serving could not predict the reference rows: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    expected = predicted[: len(checked)]
    if task == "classification":
        agree = [str(a) for a in labels] == [str(b) for b in expected]
    else:
        agree = bool(np.allclose(np.asarray(labels, dtype=float), expected.astype(float), rtol=1e-3, atol=1e-3))
    if not agree:
        raise ImportRefused(
            f"served as {loaded.runtime}, the model answers the reference rows differently from the uploaded model"
        )
    return [s.model_copy(update={"nullable": n}) for s, n in zip(schema, nullable, strict=True)]


def _schema_origin(source: Source, onnx_inputs: list[tuple[str, Kind]] | None) -> str:
    if source.signature is not None:
        return "MLflow signature"
    if onnx_inputs is not None:
        return "ONNX inputs"
    return "reference data"
