"""Thread pools sized for the work: a gradient-boosting and a forest model, served through skops,
with the libraries' default native pools (a thread per core) and with one thread per call
(`MODELBUS_MODEL_THREADS=1`, the default), on a machine kept busy by a CPU burner, in one run.

    .venv/bin/python -m bench.threads [--seconds 15] [--concurrency 1,32] [--burn 2]

Needs the local stack (`modelbus stack up`). Two models trained here by the trainer's own code on
20 numeric features: a HistGradientBoostingClassifier (200 iterations) and a 100-tree random
forest; each is registered with its skops pipeline only, so serving runs scikit-learn. Then:
  - serving: single-row `/v1` requests with vegeta (closed loop) for `--seconds` at each
    concurrency, serving started once with the default pools and once with one thread, the two
    settings taking turns per model and concurrency so both meet the same machine;
  - the evaluator: the one-row p99 the evaluator reported before (200 calls, no warm-up, default
    pools) and what it measures now (`shared.runtime.latency`: 50 warm-up calls, 1,000 calls, one
    thread), on the same pipeline under the same load; and the served ONNX graph's.
`--burn N` keeps N processes spinning for the whole run (0: an idle machine).
Prints the tables and writes JSON (default bench/results/threads.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bench.common import fit_model, free_port, fresh_platform, publish, say, serving_platform, table, vegeta
from bench.serving import numeric_data, register
from services.trainer import fit
from shared.contract.spec import ModelSpec
from shared.runtime import latency
from shared.runtime.features import prepare
from shared.runtime.modelfile import load_model, load_predictor
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.support.burner import burning

ROOT = Path(__file__).resolve().parents[1]
SPEC = """
model: {model}
dataset: {model}
task: classification
target: label
features: [{features}]
candidates:
  - {{estimator: {estimator}, params: {params}}}
search: {{iterations: 1, cv: 2}}
selection_metric: accuracy
"""
MODELS = {
    "gradient-boosting": ("sklearn.ensemble.HistGradientBoostingClassifier", "{max_iter: 200, random_state: 0}"),
    "random-forest-100": ("sklearn.ensemble.RandomForestClassifier", "{n_estimators: 100, random_state: 0}"),
}
SETTINGS = {"default pools": "0", "one thread": "1"}


def old_evaluator_p99(model: Any, x: pd.DataFrame) -> float:
    """The one-row p99 as the evaluator measured it before: 200 calls, no warm-up, default pools."""
    taken = []
    for i in range(200):
        began = time.perf_counter()
        model.predict(x.iloc[[i % len(x)]])
        taken.append((time.perf_counter() - began) * 1000)
    return float(np.percentile(taken, 99))


def evaluator(trained: dict[str, tuple[ModelSpec, fit.Outcome]], data: Path) -> dict[str, Any]:
    """Per model: the old way's p99 and the new way's, same pipeline, same load."""
    found: dict[str, Any] = {}
    for name, (spec, outcome) in trained.items():
        pipeline = load_model(Path(outcome.files["model.skops"]))
        x = prepare(pd.read_csv(data), spec.features).iloc[:2000]
        before = old_evaluator_p99(pipeline, x)
        with threadpool_limits(limits=1):
            [after] = latency.measure([pipeline], x)
            graph = None
            if "model.onnx" in outcome.files:
                folder = Path(outcome.files["model.onnx"]).parent / "served"
                folder.mkdir(exist_ok=True)
                (folder / "model.onnx").write_bytes(Path(outcome.files["model.onnx"]).read_bytes())
                served = load_predictor(
                    folder,
                    features=[f.name for f in spec.features],
                    numeric=[True] * len(spec.features),
                    task=spec.task,
                )
                [graph] = latency.measure([served], x)
        found[name] = {
            "before_p99_ms": before,
            "after_p99_ms": after.row_p99_ms,
            "after_p50_ms": after.row_p50_ms,
            "onnx_p99_ms": graph.row_p99_ms if graph else None,
            "load_per_core": after.load,
        }
        say(f"[bench] evaluator {name}: before p99 {before:.2f} ms, now {after.shown()}")
    return found


def serve(
    settings: Settings, trained: dict[str, tuple[ModelSpec, fit.Outcome]], rows: dict[str, dict[str, Any]], args: Any,
    folder: Path,
) -> dict[str, Any]:  # fmt: skip
    """Both settings' serving processes side by side, requests taking turns between them."""
    concurrency = [int(c) for c in args.concurrency.split(",")]
    found: dict[str, Any] = {name: {label: {} for label in SETTINGS} for name in trained}
    wanted = {spec.model for spec, _ in trained.values()}
    bases = {}
    stacks = []
    for label, threads in SETTINGS.items():
        env = {
            **os.environ,
            "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
            "MODELBUS_SERVING_PORT": str(free_port()),
            "MODELBUS_SERVING_MODELS": ",".join(sorted(wanted)),
            "MODELBUS_MODEL_THREADS": threads,
            "MODELBUS_LOG_LEVEL": "WARNING",
            "MODELBUS_OTLP_ENDPOINT": "",
        }
        stack = serving_platform(
            env, folder, lambda models: wanted <= set(models), timeout=120, what="the models", logs=f"t{threads}-"
        )
        bases[label] = stack.__enter__()[0]
        stacks.append(stack)
    try:
        for name, (spec, _) in trained.items():
            body = json.dumps({"instance": rows[name]})
            for c in concurrency:
                for label, base in bases.items():
                    url = f"{base}/v1/models/{spec.model}:predict"
                    run = vegeta(url, concurrency=c, seconds=args.seconds, body=body, folder=folder / "load")
                    found[name][label][str(c)] = run
                    say(
                        f"[bench] serving {name} {label} c={c}: {run['ops_per_s']:.0f}/s, "
                        f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms"
                    )
    finally:
        for stack in stacks:
            stack.__exit__(None, None, None)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--burn", type=int, default=2, help="Processes spinning during the run (0: none).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "threads.json")
    args = parser.parse_args()
    suffix, settings, folder = fresh_platform("threads")
    data = numeric_data(folder / "numeric.csv")
    features = ", ".join(f"{{name: f{i:02d}, type: numeric}}" for i in range(20))
    trained: dict[str, tuple[ModelSpec, fit.Outcome]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, (estimator, params) in MODELS.items():
        spec = load_spec(
            SPEC.format(model=f"bench-{name}-{suffix}", features=features, estimator=estimator, params=params)
        )
        outcome = fit_model(name, spec, data, folder)
        skops_only = {k: v for k, v in outcome.files.items() if k != "model.onnx"}
        asyncio.run(register(settings, spec, fit.Outcome(**{**outcome.__dict__, "files": skops_only})))
        trained[name] = (spec, outcome)
        rows[name] = {k: float(v) for k, v in pd.read_csv(data).iloc[0].items() if k != "label"}
    say(f"[bench] {args.burn} burner(s) on {os.cpu_count()} cores for the run")
    with burning(3600, cores=args.burn) if args.burn else contextlib.nullcontext():
        time.sleep(5 if args.burn else 0)  # the load average climbs
        judged = evaluator(trained, data)
        served = serve(settings, trained, rows, args, folder)
    concurrency = args.concurrency.split(",")
    serving_rows = [
        [name, label, f"c={c}", f"{run['ops_per_s']:.0f}", f"{run['p50_ms']:.2f}", f"{run['p99_ms']:.2f}"]
        for name, by_label in served.items()
        for c in concurrency
        for label, by_c in by_label.items()
        for run in [by_c[c]]
    ]
    judged_rows = [
        [
            name,
            f"{found['before_p99_ms']:.2f}",
            f"{found['after_p50_ms']:.2f} / {found['after_p99_ms']:.2f}",
            f"{found['onnx_p99_ms']:.2f}" if found["onnx_p99_ms"] is not None else "no graph",
            f"{found['load_per_core']:.2f}" if found["load_per_core"] is not None else "",
        ]
        for name, found in judged.items()
    ]
    busy = f"{args.burn} spinning process(es) on {os.cpu_count()} cores" if args.burn else "an idle machine"
    tables = [
        table(
            "Serving through skops: default native pools against one thread per call",
            ["model", "pools", "concurrency", "requests/s", "p50 ms", "p99 ms"],
            serving_rows,
            note=f"Single-row /v1 requests, vegeta closed loop, {args.seconds:g} s each; {busy}.",
        ),
        table(
            "The evaluator's one-row latency of the same pipeline",
            ["model", "before: p99 ms", "now: p50 / p99 ms", "now, ONNX graph: p99 ms", "load per core"],
            judged_rows,
            note="Before: 200 calls, no warm-up, default pools. Now: 50 warm-up calls, 1,000 calls, one thread.",
        ),
    ]
    data_out = {"serving": served, "evaluator": judged, "parameters": vars(args) | {"out": str(args.out)}}
    publish(args.out, "threads", "Thread pools sized for the work", tables, data_out)


if __name__ == "__main__":
    main()
