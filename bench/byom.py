"""The gradient-boosting families and model imports, measured (run through bench/training.py:
`--families`, `--imports`; see its docstring). Needs the local stack (`modelbus stack up`)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench.common import free_port, fresh_platform, publish, say, table, vegeta
from bench.serving import register
from services.trainer import domain, fit
from shared.contract.spec import Candidate, Evaluation
from shared.ops.example_data import write_churn
from shared.runtime.features import prepare
from shared.runtime.modelfile import load_model
from shared.runtime.onnxmodel import OnnxModel
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.support.venvs import mlflow_python

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-byom-token"  # noqa: S105 - the operator token of the throwaway registry the benchmark starts
FAMILIES = (
    ("XGBoost", "xgboost.XGBClassifier", {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1}),
    ("LightGBM", "lightgbm.LGBMClassifier", {"n_estimators": 200, "num_leaves": 63, "learning_rate": 0.1}),
    ("HistGradientBoosting", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 200}),
)


def _processes(settings: Settings, env: dict[str, str], names: list[tuple[str, str]], logs: Path) -> list[Any]:
    full = {**os.environ, "MODELBUS_TOPIC_PREFIX": settings.topic_prefix, "MODELBUS_LOG_LEVEL": "WARNING",
            "MODELBUS_OTLP_ENDPOINT": "", **env}  # fmt: skip
    return [
        subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full, stderr=(logs / f"{name}.log").open("w"))
        for name, module in names
    ]


def _wait(url: str, ready: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200 and ready(answer):
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready within {timeout:.0f} s")


def _parity(outcome: fit.Outcome, features: list[Any]) -> float | None:
    if "model.onnx" not in outcome.files:
        return None
    pipeline = load_model(Path(outcome.files["model.skops"]))
    rows = prepare(pd.read_parquet(outcome.files["test-split.parquet"]), features)
    graph = OnnxModel.open(
        Path(outcome.files["model.onnx"]),
        features=[f.name for f in features],
        numeric=[f.type == "numeric" for f in features],
        task="classification",
        classes=pipeline.classes_.tolist(),
    )
    return float(np.max(np.abs(graph.predict_proba(rows) - pipeline.predict_proba(rows))))


def bench_families(*, rows: int, seconds: float) -> dict[str, Any]:
    """Fit seconds, ONNX parity and serving p50 (c=1) of the three boosting families on one dataset."""
    suffix, settings, folder = fresh_platform("families")
    data = write_churn(folder / "churn.csv", rows=rows, seed=5)
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    frame = pd.read_csv(data)
    parts = domain.split(frame, example)
    x_train, y_train = prepare(parts.train, example.features), parts.train[example.target]
    results: dict[str, Any] = {}
    trained = {}
    for label, estimator, params in FAMILIES:
        candidate = Candidate(estimator=estimator, params=params)
        spec = example.model_copy(
            update={
                "model": f"bench-{label.lower()}-{suffix}",
                "dataset": f"bench-{label.lower()}-{suffix}",
                "candidates": [candidate],
                "gates": [],
                "evaluation": Evaluation(),
            }
        )
        say(f"[bench] {label}: fitting on {len(x_train):,} rows …")
        began = time.perf_counter()
        domain.fit_candidate(spec, candidate, x_train, y_train)
        fit_seconds = time.perf_counter() - began
        outcome = fit.train(fit.Job(label, spec, str(data), "csv", "0" * 64, str(folder / label), "bench"))
        if not outcome.ok:
            raise SystemExit(f"{label} failed: {outcome.reason}")
        parity = _parity(outcome, list(spec.features))
        results[label] = {
            "estimator": estimator,
            "params": params,
            "fit_s": fit_seconds,
            "run_s": outcome.training_seconds,
            "roc_auc": outcome.metrics.get("roc_auc"),
            "onnx": outcome.onnx,
            "onnx_max_abs_diff": parity,
        }
        say(f"[bench]   fit {fit_seconds:.2f} s (run {outcome.training_seconds:.1f} s), ONNX: {outcome.onnx[:90]}")
        trained[label] = (spec, outcome)
    row = frame[[f.name for f in example.features]].dropna().iloc[0].to_dict()
    row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    for spec, outcome in trained.values():
        asyncio.run(register(settings, spec, outcome))
    port = free_port()
    models = ",".join(spec.model for spec, _ in trained.values())
    env = {"MODELBUS_SERVING_PORT": str(port), "MODELBUS_SERVING_MODELS": models}
    processes = _processes(
        settings, env, [("deployer", "services.deployer"), ("serving", "services.deployer.serving")], folder
    )
    try:
        wanted = {spec.model for spec, _ in trained.values()}
        _wait(f"http://127.0.0.1:{port}/readyz", lambda a: wanted <= set(a.json()["models"]), "serving")
        for label, (spec, _) in trained.items():
            url = f"http://127.0.0.1:{port}/v1/models/{spec.model}:predict"
            version = httpx.get(f"http://127.0.0.1:{port}/v1/models/{spec.model}").json()["versions"][0]
            vegeta(url, concurrency=1, seconds=2, body=json.dumps({"instance": row}), folder=folder)  # warm-up
            load = vegeta(url, concurrency=1, seconds=seconds, body=json.dumps({"instance": row}), folder=folder)
            results[label] |= {"serving_runtime": version["runtime"], "serving_p50_ms": load["p50_ms"],
                               "serving_p99_ms": load["p99_ms"], "serving_errors": load["error_share"]}  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    lines = [
        [label, round(r["fit_s"], 2), round(r["run_s"], 1), round(r["roc_auc"], 4),
         f"{r['onnx_max_abs_diff']:.1e}" if r["onnx_max_abs_diff"] is not None else "no ONNX",
         r["serving_runtime"], round(r["serving_p50_ms"], 2)]
        for label, r in results.items()
    ]  # fmt: skip
    missing = "; ".join(f"{label}: {r['onnx']}" for label, r in results.items() if r["onnx_max_abs_diff"] is None)
    shown = table(
        f"Gradient-boosting families on {len(x_train):,} training rows",
        ["family", "fit s", "whole run s", "roc_auc", "ONNX max abs diff", "served as", "p50 ms (c=1)"],
        lines,
        f"served p50: vegeta, one row per request, {seconds:g} s per model."
        + (f" No ONNX: {missing}" if missing else ""),
    )
    document = {"parameters": {"rows": rows, "train_rows": len(x_train), "seconds": seconds}, "results": results}
    publish(RESULTS / "training-families.json", "training-families", "Training: the gradient-boosting families",
            [shown], document)  # fmt: skip
    return document


def bench_imports(*, repeat: int) -> dict[str, Any]:
    """The import of a 100-tree forest from skops, ONNX and an MLflow model, through the HTTP route."""
    suffix, settings, folder = fresh_platform("imports")
    from shared.ops.example_data import churn_frame

    churn = churn_frame(6000, seed=9)
    churn.iloc[:5000].to_csv(folder / "train.csv", index=False)
    churn.iloc[5000:].to_csv(folder / "test.csv", index=False)
    say("[bench] training a 100-tree forest in the notebook script (MLflow virtualenv) …")
    made = subprocess.run(
        [str(mlflow_python()), str(ROOT / "tests/support/notebook.py"), str(folder / "train.csv"), str(folder / "out"),
         "--trees", "100"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    files = {k: Path(v) for k, v in json.loads(made.stdout.strip().splitlines()[-1]).items()}
    import shutil

    files["mlflow"] = Path(
        shutil.make_archive(str(folder / "mlflow-model"), "zip", files["mlflow"].parent, "mlflow-model")
    )
    port = free_port()
    env = {"MODELBUS_REGISTRY_PORT": str(port), "MODELBUS_API_TOKENS": f"{TOKEN}=admin:bench"}
    processes = _processes(settings, env, [("registry", "services.registry")], folder)
    model = f"bench-import-{suffix}"
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        _wait(f"{base}/readyz", lambda a: True, "the registry")
        spec = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        httpx.post(f"{base}/v1/specs", json={"spec_yaml": spec}, headers=headers, timeout=30).raise_for_status()
        for label in ("skops", "onnx", "mlflow"):
            walls, checks = [], []
            for _ in range(repeat):
                upload = {
                    "model": (files[label].name, files[label].read_bytes()),
                    "reference": ("train.csv", (folder / "train.csv").read_bytes()),
                    "test": ("test.csv", (folder / "test.csv").read_bytes()),
                }
                began = time.perf_counter()
                answer = httpx.post(f"{base}/v1/models/{model}/import", files=upload, headers=headers, timeout=300)
                walls.append(time.perf_counter() - began)
                if answer.status_code != 201:
                    raise SystemExit(f"import of {label} refused: {answer.status_code} {answer.text[:500]}")
                checks.append(answer.json()["seconds"])
            results[label] = {
                "bytes": files[label].stat().st_size,
                "wall_s_median": statistics.median(walls),
                "check_s_median": statistics.median(checks),
                "served_as": answer.json()["served_as"],
                "walls": walls,
            }
            say(f"[bench]   {label}: {statistics.median(walls):.2f} s per import ({files[label].stat().st_size:,} B)")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    lines = [
        [label, f"{r['bytes'] / 1024:,.0f} KB", round(r["wall_s_median"], 2), round(r["check_s_median"], 2),
         r["served_as"]]
        for label, r in results.items()
    ]  # fmt: skip
    shown = table(
        "Importing a 100-tree forest",
        ["import (100-tree forest)", "file", "request s", "checks s", "served as"],
        lines,
        f"Median of {repeat}; reference 5,000 rows, test 1,000 rows; the request includes the upload and storing.",
    )
    document = {"parameters": {"repeat": repeat, "trees": 100, "reference_rows": 5000, "test_rows": 1000},
                "results": results}  # fmt: skip
    publish(RESULTS / "training-imports.json", "training-imports", "Training: importing models", [shown], document)
    return document
