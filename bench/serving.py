"""Serving benchmark: modelbus serving (`/v1` and V2) against MLServer, BentoML and `mlflow models
serve`, same models, same machine, same run; and many models in one serving process.

    .venv/bin/python -m bench.serving [--seconds 20] [--concurrency 1,8,32] [--no-mlflow] [--no-peers]
                                      [--many 1000 --live 50] [--no-feast | --feast-only]

Needs the local stack (`modelbus stack up`). Three models, each trained here by the trainer's own
code (`services.trainer.fit`): the example churn pipeline, a 100-tree random forest and a logistic
regression on 20 numeric features. Each is registered and approved through events (fresh topic
prefix), so the deployer (a process) promotes it and serving (a process) loads it the way it
always does. Then, per model:
  - the in-process floor: one row through the loaded version's predict, no HTTP;
  - modelbus serving: single-row requests with vegeta (closed loop) for `--seconds` at each concurrency;
  - MLflow: the same fitted pipeline saved with `mlflow.sklearn.save_model` in the benchmark's own
    virtualenv and served by `mlflow models serve` (one worker), same requests, same load generator.
  - modelbus V2: the same rows as one tensor per feature to `/v2/models/{name}/infer`;
  - MLServer (`mlserver-sklearn`, V2, pandas content type) and BentoML (a service around the same
    fitted pipeline), each in its own virtualenv (bench/peers.py), with default workers and with 2;
    MLflow with 1 and 2 workers. The peers serve the random forest and the logistic regression.
  - `--many N --live K` (bench/many_models.py): N logistic regressions in one serving process.
  - Feast (bench/feast_serving.py): a model with 10 features looked up in Feast per request, called
    by key and with the same values inline; `--feast-only` runs just that.
Prints the tables (with ratios) and writes JSON (default bench/results/serving.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench import feast_serving, many_models, peers
from bench.common import (
    fit_model,
    free_port,
    fresh_platform,
    publish,
    rss_bytes,
    say,
    serving_platform,
    table,
    vegeta,
    wait_http,
)
from services.trainer import fit
from shared.contract.events import ArtifactRef, ModelEvaluated, ModelRegistered, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.ops.example_data import write_churn
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.served import check_rows, load
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.support.venvs import mlflow_python

ROOT = Path(__file__).resolve().parents[1]

NUMERIC_SPEC = """
api_version: modelbus/v1
model: {model}
dataset: {model}
task: classification
target: label
features: [{features}]
contract: {{min_rows: 100}}
candidates:
  - estimator: {estimator}
    params: {params}
selection_metric: roc_auc
"""
SAVE_FOR_MLFLOW = """
import sys, skops.io as sio, mlflow.sklearn
source, target = sys.argv[1], sys.argv[2]
trusted = sio.get_untrusted_types(file=source)
model = sio.load(source, trusted=trusted)
# MLflow's own format (skops) re-checks the types on save; the same allowlist plus numpy.dtype.
mlflow.sklearn.save_model(model, target, skops_trusted_types=[*trusted, "numpy.dtype"])
"""


def numeric_data(path: Path, rows: int = 5000) -> Path:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(20)])
    frame["label"] = y
    frame.to_csv(path, index=False)
    return path


def specs(suffix: str) -> dict[str, ModelSpec]:
    """The three benchmark models' specs."""
    features = ", ".join(f"{{name: f{i:02d}, type: numeric}}" for i in range(20))
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    return {
        "example": example.model_copy(
            update={"model": f"bench-example-{suffix}", "dataset": f"bench-example-{suffix}"}
        ),
        "random-forest-100": load_spec(
            NUMERIC_SPEC.format(
                model=f"bench-rf-{suffix}",
                features=features,
                estimator="sklearn.ensemble.RandomForestClassifier",
                params="{n_estimators: 100, random_state: 0}",
            )
        ),
        "logistic-regression": load_spec(
            NUMERIC_SPEC.format(
                model=f"bench-lr-{suffix}",
                features=features,
                estimator="sklearn.linear_model.LogisticRegression",
                params="{max_iter: 1000}",
            )
        ),
    }


def train_all(folder: Path, suffix: str) -> dict[str, tuple[ModelSpec, fit.Outcome, dict[str, Any]]]:
    """Train each model with the trainer's code; (spec, outcome, one request row) per model."""
    churn = write_churn(folder / "churn.csv", rows=5000)
    numeric = numeric_data(folder / "numeric.csv")
    trained = {}
    for name, spec in specs(suffix).items():
        data = churn if name == "example" else numeric
        outcome = fit_model(name, spec, data, folder)
        say(f"[bench]   {outcome.estimator} in {outcome.training_seconds:.1f} s, ONNX: {outcome.onnx}")
        frame = pd.read_csv(data)
        row = frame[[f.name for f in spec.features]].dropna().iloc[0].to_dict()
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        trained[name] = (spec, outcome, row)
    return trained


async def register(settings: Settings, spec: ModelSpec, outcome: fit.Outcome) -> list[ArtifactRef]:
    """Upload the artifacts, then publish the spec, the registration and an approval."""
    store = ArtifactStore(settings)
    refs = []
    for name in ("model.onnx", "model.skops", "manifest.json"):
        if name in outcome.files:
            stored = await asyncio.to_thread(store.put_file, f"bench/{spec.model}/v1/{name}", Path(outcome.files[name]))
            refs.append(ArtifactRef(name=name, uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes))
    bus = Bus(settings.model_copy(update={"service_name": "bench"}))
    await bus.start()
    try:
        await bus.publish(
            ModelSpecApplied(
                model=spec.model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="bench"
            )
        )
        await bus.publish(
            ModelRegistered(
                model=spec.model,
                version=1,
                run_id=outcome.run_id,
                dataset_version="v1",
                task=spec.task,
                artifacts=refs,
                metrics=outcome.metrics,
            )
        )
        await bus.publish(
            ModelEvaluated(
                model=spec.model,
                version=1,
                champion_version=None,
                passed=True,
                decision="approved",
                gates=[],
                metrics=outcome.metrics,
                test_rows=0,
            )
        )
    finally:
        await bus.stop()
    return refs


def floor(
    spec: ModelSpec,
    outcome: fit.Outcome,
    refs: list[ArtifactRef],
    row: dict[str, Any],
    settings: Settings,
    folder: Path,
) -> dict[str, Any]:
    """In-process predict of one row: the loaded version as serving runs it, and the scikit-learn pipeline."""
    loaded = load(ArtifactStore(settings), spec.model, 1, refs, folder / "floor" / spec.model)
    checked = check_rows(loaded.features, [row])

    def timed(call: Any, repeat: int = 3000) -> list[float]:
        for _ in range(200):
            call()
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            call()
            samples.append((time.perf_counter() - began) * 1000)
        return sorted(samples)

    # Memory per loaded version: the resident-set growth of loading it five more times, over five
    # (the first load of the process also pays for ONNX Runtime itself).
    before = _own_rss()
    kept = [
        load(ArtifactStore(settings), spec.model, 1, refs, folder / "floor" / f"{spec.model}-{i}") for i in range(5)
    ]
    per_version = max(0, _own_rss() - before) / len(kept)
    del kept
    served = timed(lambda: loaded.predict(checked))
    checked_too = timed(lambda: loaded.predict(check_rows(loaded.features, [row])))
    from shared.runtime.modelfile import load_model

    pipeline = load_model(Path(outcome.files["model.skops"]))
    frame = pd.DataFrame([row])
    sklearn = timed(lambda: pipeline.predict_proba(frame), repeat=300)
    return {
        "runtime": loaded.runtime,
        "memory_per_version_bytes": per_version,
        "predict_p50_ms": statistics.median(served),
        "predict_p99_ms": served[int(len(served) * 0.99)],
        "check_and_predict_p50_ms": statistics.median(checked_too),
        "sklearn_predict_proba_p50_ms": statistics.median(sklearn),
    }


def _own_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def load_runs(
    url: str, body: str, concurrency: list[int], seconds: float, label: str, folder: Path
) -> dict[int, dict[str, float]]:
    vegeta(url, concurrency=8, seconds=2, body=body, folder=folder)  # warm-up
    runs = {}
    for c in concurrency:
        result = vegeta(url, concurrency=c, seconds=seconds, body=body, folder=folder)
        say(
            f"[bench]   {label} c={c}: {result['ops_per_s']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
            f"p99 {result['p99_ms']:.2f} ms, errors {result['error_share']:.1%}"
        )
        runs[c] = result
    return runs


def load_runs_alternating(
    paths: dict[str, tuple[str, str]], concurrency: list[int], seconds: float, label: str, folder: Path
) -> dict[str, dict[int, dict[str, float]]]:
    """Closed-loop runs of several paths of one server, taking turns at each concurrency."""
    for url, body in paths.values():
        vegeta(url, concurrency=8, seconds=2, body=body, folder=folder)  # warm-up
    runs: dict[str, dict[int, dict[str, float]]] = {path: {} for path in paths}
    for c in concurrency:
        for path, (url, body) in paths.items():
            result = vegeta(url, concurrency=c, seconds=seconds, body=body, folder=folder)
            say(
                f"[bench]   {label} {path} c={c}: {result['ops_per_s']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                f"p99 {result['p99_ms']:.2f} ms, errors {result['error_share']:.1%}"
            )
            runs[path][c] = result
    return runs


def bench_mlflow(
    trained: dict[str, tuple[ModelSpec, fit.Outcome, dict[str, Any]]],
    concurrency: list[int],
    seconds: float,
    folder: Path,
    workers: int = 1,
) -> dict[str, Any]:
    python = mlflow_python()
    mlflow = python.parent / "mlflow"
    out: dict[str, Any] = {}
    for name, (_, outcome, row) in trained.items():
        target = folder / f"mlflow-{workers}" / name
        subprocess.run([str(python), "-c", SAVE_FOR_MLFLOW, outcome.files["model.skops"], str(target)], check=True)
        port = free_port()
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"file://{folder / 'mlruns'}",
            "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # it runs `uvicorn` by name
        }
        log = (folder / f"mlflow-{name}-{workers}.log").open("w")
        process = subprocess.Popen(
            [
                str(mlflow),
                "models",
                "serve",
                "-m",
                str(target),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(
                f"http://127.0.0.1:{port}/ping", timeout=120, what=f"mlflow models serve ({name})", process=process
            )
            body = json.dumps({"dataframe_records": [row]})
            check = httpx.post(
                f"http://127.0.0.1:{port}/invocations", content=body, headers={"content-type": "application/json"}
            )
            if check.status_code != 200:
                raise SystemExit(f"MLflow refused the request for {name}: {check.text[:300]}")
            say(f"[bench] MLflow {name}: {check.text[:80]}")
            runs = load_runs(
                f"http://127.0.0.1:{port}/invocations",
                body,
                concurrency,
                seconds,
                f"MLflow x{workers} {name}",
                folder / "load",
            )
            out[name] = {"runs": runs, "rss_bytes": rss_bytes(process.pid)}
        finally:
            process.terminate()
            process.wait(timeout=30)
    return out


PEER_MODELS = ("random-forest-100", "logistic-regression")


def bench_peers(
    trained: dict[str, tuple[ModelSpec, fit.Outcome, dict[str, Any]]],
    concurrency: list[int],
    seconds: float,
    folder: Path,
) -> dict[str, Any]:
    """MLServer and BentoML, default workers and 2, on the random forest and the logistic regression."""
    systems = (
        ("MLServer", peers.mlserver, {"workers": None}),
        ("MLServer, 2 workers", peers.mlserver, {"workers": 2}),
        ("BentoML", peers.bentoml, {"workers": 1}),
        ("BentoML, 2 workers", peers.bentoml, {"workers": 2}),
    )
    out: dict[str, Any] = {}
    for name in PEER_MODELS:
        _, outcome, row = trained[name]
        for system, start, options in systems:
            where = folder / "peers" / f"{system.replace(', ', '-').replace(' ', '-')}-{name}"
            with start(Path(outcome.files["model.skops"]), where, **options) as (url, kind, pid):
                body = peers.v2_body(row, content_type="pd") if kind == "pd" else json.dumps({"rows": [row]})
                check = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
                if check.status_code != 200:
                    raise SystemExit(f"{system} refused the request for {name}: {check.text[:300]}")
                say(f"[bench] {system} {name}: {check.text[:80]}")
                runs = load_runs(url, body, concurrency, seconds, f"{system} {name}", folder / "load")
                out.setdefault(system, {})[name] = {"runs": runs, "rss_bytes": rss_bytes(pid)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--no-peers", action="store_true", help="Skip MLServer and BentoML.")
    parser.add_argument("--many", type=int, default=0, help="Models in the many-models run (0: none).")
    parser.add_argument("--live", type=int, default=50, help="Of those, how many have a rollout.")
    parser.add_argument("--feast-only", action="store_true", help="Only the Feast run (lookup cost).")
    parser.add_argument("--no-feast", action="store_true", help="Skip the Feast run.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    suffix, settings, folder = fresh_platform("serving")
    if args.feast_only:
        found = feast_serving.run(
            settings, register, concurrency=concurrency, seconds=args.seconds, folder=folder, suffix=suffix
        )
        shown = feast_serving.report(found, concurrency)
        out = args.out.with_name("serving-feast.json")
        data = {"feast": found, "parameters": {"seconds": args.seconds}}
        publish(out, "serving-feast", "Serving: features looked up in Feast", [shown], data)
        return
    trained = train_all(folder, suffix)
    refs = {name: asyncio.run(register(settings, spec, outcome)) for name, (spec, outcome, _) in trained.items()}
    floors = {
        name: floor(spec, outcome, refs[name], row, settings, folder) for name, (spec, outcome, row) in trained.items()
    }
    for name, found in floors.items():
        say(
            f"[bench] floor {name} ({found['runtime']}): predict p50 {found['predict_p50_ms'] * 1000:.0f} µs, "
            f"scikit-learn predict_proba p50 {found['sklearn_predict_proba_p50_ms']:.2f} ms"
        )

    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_SERVING_PORT": str(port),
        "MODELBUS_SERVING_MODELS": ",".join(spec.model for spec, _, _ in trained.values()),
        "MODELBUS_LOG_LEVEL": "WARNING",
        "MODELBUS_OTLP_ENDPOINT": "",
    }
    say(f"[bench] starting deployer and serving (prefix {settings.topic_prefix}, logs in {folder})")
    results: dict[str, Any] = {"modelbus": {}, "modelbus_v2": {}, "mlflow": {}, "floor": floors}
    wanted = {spec.model for spec, _, _ in trained.values()}
    with serving_platform(env, folder, lambda models: wanted <= set(models), timeout=120, what="the models") as (
        base,
        processes,
    ):
        for name, (spec, _, row) in trained.items():
            described = httpx.get(f"{base}/v1/models/{spec.model}").json()
            version = described["versions"][0]
            say(f"[bench] modelbus {name}: {version['runtime']}, {version['memory_bytes'] / 2**20:.1f} MiB loaded")
            infer = f"{base}/v2/models/{spec.model}/infer"
            check = httpx.post(infer, content=peers.v2_body(row), headers={"content-type": "application/json"})
            if check.status_code != 200:
                raise SystemExit(f"modelbus V2 refused the request for {name}: {check.text[:300]}")
            # /v1 and V2 take turns at each concurrency, so both meet the same machine
            paths = {
                "v1": (f"{base}/v1/models/{spec.model}:predict", json.dumps({"instance": row})),
                "v2": (infer, peers.v2_body(row)),
            }
            both = load_runs_alternating(paths, concurrency, args.seconds, f"modelbus {name}", folder / "load")
            results["modelbus"][name] = {
                "runs": both["v1"],
                "runtime": version["runtime"],
                "memory_bytes": version["memory_bytes"],
            }
            results["modelbus_v2"][name] = {"runs": both["v2"]}
        results["serving_rss_bytes"] = rss_bytes(processes["serving"].pid)
        metrics = httpx.get(f"{base}/metrics").text
        results["predictions_dropped"] = _metric(metrics, "modelbus_serving_predictions_dropped_total")
        results["predictions_logged"] = _metric(metrics, "modelbus_serving_predictions_logged_total")
    if not args.no_mlflow:
        results["mlflow"] = bench_mlflow(trained, concurrency, args.seconds, folder)
        best = {k: v for k, v in trained.items() if k in PEER_MODELS}
        results["mlflow_2_workers"] = bench_mlflow(best, concurrency, args.seconds, folder, workers=2)
    if not args.no_peers:
        results["peers"] = bench_peers(trained, concurrency, args.seconds, folder)
    if args.many:
        spec, outcome, row = trained["logistic-regression"]
        results["many_models"] = many_models.run(
            settings, spec, outcome, refs["logistic-regression"], row, count=args.many, live=args.live,
            concurrency=concurrency, seconds=args.seconds, folder=folder, suffix=suffix,
        )  # fmt: skip
    if not args.no_feast:
        results["feast"] = feast_serving.run(
            settings, register, concurrency=concurrency, seconds=args.seconds, folder=folder, suffix=suffix
        )
    tables = report(results, concurrency) + report_systems(results, concurrency)
    if "many_models" in results:
        tables.append(many_models.report(results["many_models"]))
    if "feast" in results:
        tables.append(feast_serving.report(results["feast"], concurrency))
    results["parameters"] = {"seconds": args.seconds, "concurrency": concurrency}
    publish(args.out, "serving", "Serving: modelbus against MLflow, MLServer and BentoML", tables, results)


def report_systems(results: dict[str, Any], concurrency: list[int]) -> list[dict[str, Any]]:
    """Every system on the peers' models: req/s, p50/p99, memory, and modelbus' ratio to the best peer."""
    tables = []
    for name in PEER_MODELS:
        rows: list[tuple[str, dict[int, dict[str, float]], float]] = [
            ("modelbus /v1", results["modelbus"][name]["runs"], results["serving_rss_bytes"]),
            ("modelbus V2", results["modelbus_v2"][name]["runs"], results["serving_rss_bytes"]),
        ]
        for system, found in (results.get("peers") or {}).items():
            rows.append((system, found[name]["runs"], found[name]["rss_bytes"]))
        for key, label in (("mlflow", "mlflow models serve"), ("mlflow_2_workers", "mlflow models serve, 2 workers")):
            if name in (results.get(key) or {}):
                rows.append((label, results[key][name]["runs"], results[key][name]["rss_bytes"]))
        columns = ["system"]
        for c in concurrency:
            columns += [f"c={c} req/s", f"c={c} p50/p99 ms"]
        cells = [
            [system]
            + [
                x
                for c in concurrency
                for x in (round(runs[c]["ops_per_s"]), f"{runs[c]['p50_ms']:.2f} / {runs[c]['p99_ms']:.2f}")
            ]
            + [round(rss / 2**20)]
            for system, runs, rss in rows
        ]
        top = max(concurrency)
        notes = []
        peers_best = max((r[top]["ops_per_s"] for s, r, _ in rows if s.startswith(("MLServer", "BentoML"))), default=0)
        if peers_best:
            for system, runs, _ in rows[:2]:
                ratio = runs[top]["ops_per_s"] / peers_best
                notes.append(f"{system} at c={top}: {ratio:.1f}x the faster of MLServer and BentoML")
        v1, v2 = rows[0][1][top]["ops_per_s"], rows[1][1][top]["ops_per_s"]
        notes.append(f"V2 / v1 at c={top}: {v2 / v1:.2f}")
        tables.append(
            table(f"{name}: single-row requests, closed loop", [*columns, "RSS MiB"], cells, "; ".join(notes))
        )
    many = results.get("many_models")
    if many:
        rows_many: list[list[Any]] = [
            [
                f"warm over the live models, c={c}",
                round(run["ops_per_s"]),
                round(run["p50_ms"], 2),
                round(run["p99_ms"], 2),
            ]
            for c, run in many["warm"].items()
        ]
        rows_many.append(
            ["cold load (first request by name)", "-", round(many["cold_p50_ms"]), round(many["cold_p99_ms"])]
        )
        note = (
            f"RSS {many['rss_bytes'] / 2**20:.0f} MiB; resident versions {many['resident_bytes'] / 2**20:.0f} MiB"
            f" of a {many['budget_bytes'] / 2**30:.0f} GiB budget; {many['loads']:.0f} loads,"
            f" {many['evictions']:.0f} evictions"
        )
        title = f"Many models: {many['models']} logistic regressions, {many['live']} live, one serving process"
        tables.append(table(title, ["measure", "req/s", "p50 ms", "p99 ms"], rows_many, note))
    return tables


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return math.nan


def report(results: dict[str, Any], concurrency: list[int]) -> list[dict[str, Any]]:
    rows: list[list[Any]] = []
    for name, ours in results["modelbus"].items():
        theirs = results["mlflow"].get(name, {}).get("runs", {})
        for c in concurrency:
            a, b = ours["runs"][c], theirs.get(c)
            rows.append(
                [name, c, round(a["ops_per_s"]), f"{a['p50_ms']:.2f} / {a['p99_ms']:.2f}"]
                + (
                    [
                        round(b["ops_per_s"]),
                        f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}",
                        f"{a['ops_per_s'] / b['ops_per_s']:.1f}x",
                    ]
                    if b
                    else ["-", "-", "-"]
                )
            )
    columns = ["model", "c", "modelbus req/s", "p50 / p99 ms", "MLflow req/s", "p50 / p99 ms", "ratio"]
    tables = [table("modelbus /v1 against `mlflow models serve`", columns, rows)]
    floors: list[list[Any]] = []
    for name, ours in results["modelbus"].items():
        found = results["floor"][name]
        c1 = ours["runs"].get(1)
        floor_us = found["predict_p50_ms"] * 1000
        c1_us = c1["p50_ms"] * 1000 if c1 else math.nan
        floors.append(
            [
                name,
                ours["runtime"],
                round(floor_us),
                round(c1_us),
                round(c1_us - floor_us),
                round(found["memory_per_version_bytes"] / 2**20, 1),
            ]
        )
    mlflow_rss = "; ".join(
        f"MLflow serving {name}: RSS {theirs['rss_bytes'] / 2**20:.0f} MiB (one model)"
        for name, theirs in results["mlflow"].items()
    )
    note = (
        f"serving process RSS {results['serving_rss_bytes'] / 2**20:.0f} MiB with {len(results['modelbus'])} models"
        f" loaded; predictions logged {results['predictions_logged']:,.0f},"
        f" dropped {results['predictions_dropped']:,.0f}" + (f"; {mlflow_rss}" if mlflow_rss else "")
    )
    columns = ["model", "runtime", "floor p50 µs", "c=1 p50 µs", "overhead µs", "memory MiB"]
    tables.append(table("What serving adds to the model's own predict", columns, floors, note))
    return tables


if __name__ == "__main__":
    main()
