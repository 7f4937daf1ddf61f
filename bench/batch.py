"""Batch scoring: rows per second from a Parquet file in to a Parquet file out, modelbus' engine
(`modelbus score`, shared.runtime.batchscore) against `mlflow models predict`, same models, same
rows, same run.

    .venv/bin/python -m bench.batch [--rows 10000000] [--mlflow-rows 1000000] [--chunk-rows 100000]

Two models trained here by the trainer's own code on 20 numeric features: a logistic regression
and a 100-tree random forest. The input is `--rows` rows of 20 features in Parquet (written in
chunks). modelbus scores it in-process as `modelbus score` does: the version loaded as serving
loads it (its ONNX graph), chunks read with pyarrow, the schema checked per column, one call per
chunk, Parquet parts out with a request id per row and the probabilities. MLflow: the same fitted
pipeline saved with `mlflow.sklearn.save_model` in its own virtualenv and scored with `mlflow
models predict --env-manager local` on `--mlflow-rows` of the same rows as CSV (its command takes
CSV or JSON, not Parquet), predictions written as JSON. Prints a table and writes JSON (default
bench/results/batch.json).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import fit_model, publish, say, table
from bench.serving import NUMERIC_SPEC, SAVE_FOR_MLFLOW, numeric_data
from shared.runtime.batchscore import score_file
from shared.runtime.served import open_version
from shared.runtime.specfile import load_spec
from tests.support.venvs import mlflow_python

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "logistic-regression": ("sklearn.linear_model.LogisticRegression", "{max_iter: 1000}"),
    "random-forest-100": ("sklearn.ensemble.RandomForestClassifier", "{n_estimators: 100, random_state: 0}"),
}
NAMES = [f"f{i:02d}" for i in range(20)]


def write_rows(path: Path, rows: int, *, seed: int = 1, chunk: int = 1_000_000) -> Path:
    """`rows` rows of the 20 features, as Parquet written a million rows at a time."""
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, pa.schema([(n, pa.float64()) for n in NAMES])) as writer:
        for start in range(0, rows, chunk):
            block = rng.normal(size=(min(chunk, rows - start), len(NAMES)))
            writer.write_table(pa.table({n: block[:, j] for j, n in enumerate(NAMES)}))
    return path


def mlflow_predict(skops: str, rows: pd.DataFrame, folder: Path) -> dict[str, Any]:
    """`mlflow models predict` on the rows as CSV: seconds, rows/s and the predictions it wrote."""
    python = mlflow_python()
    target = folder / "mlflow-model"
    subprocess.run([str(python), "-c", SAVE_FOR_MLFLOW, skops, str(target)], check=True)
    source, out = folder / "mlflow-in.csv", folder / "mlflow-out.json"
    rows.to_csv(source, index=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{folder / 'mlruns'}"}
    began = time.perf_counter()
    subprocess.run(
        [str(python.parent / "mlflow"), "models", "predict", "-m", str(target), "-i", str(source), "-t", "csv",
         "-o", str(out), "--env-manager", "local"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    return {"rows": len(rows), "seconds": seconds, "rows_per_s": len(rows) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--mlflow-rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="modelbus-bench-batch-"))
    data = numeric_data(folder / "train.csv")
    say(f"[bench] writing {args.rows:,} rows of 20 features to Parquet …")
    source = write_rows(folder / "rows.parquet", args.rows)
    sample = pq.ParquetFile(source).read_row_group(0).to_pandas().iloc[: args.mlflow_rows]
    features = ", ".join(f"{{name: {n}, type: numeric}}" for n in NAMES)
    results: dict[str, Any] = {}
    for name, (estimator, params) in MODELS.items():
        spec = load_spec(
            NUMERIC_SPEC.format(model=f"batch-{name}", features=features, estimator=estimator, params=params)
        )
        outcome = fit_model(name, spec, data, folder)
        loaded = open_version(spec.model, 1, Path(outcome.files["manifest.json"]).parent)
        began = time.perf_counter()
        scored = score_file(loaded, source, folder / f"out-{name}", job=name, chunk_rows=args.chunk_rows)
        seconds = time.perf_counter() - began
        mine = {"rows": scored.rows, "seconds": seconds, "rows_per_s": scored.rows / seconds, "runtime": loaded.runtime}
        say(f"[bench] modelbus {name} ({loaded.runtime}): {mine['rows_per_s']:,.0f} rows/s over {scored.rows:,} rows")
        theirs = mlflow_predict(outcome.files["model.skops"], sample, folder / f"mlflow-{name}")
        say(f"[bench] mlflow models predict {name}: {theirs['rows_per_s']:,.0f} rows/s over {theirs['rows']:,} rows")
        results[name] = {"modelbus": mine, "mlflow_models_predict": theirs}
    shown = [
        [
            name,
            f"{found['modelbus']['rows']:,}",
            f"{found['modelbus']['rows_per_s']:,.0f}",
            f"{found['mlflow_models_predict']['rows']:,}",
            f"{found['mlflow_models_predict']['rows_per_s']:,.0f}",
            f"{found['modelbus']['rows_per_s'] / found['mlflow_models_predict']['rows_per_s']:.1f}x",
        ]
        for name, found in results.items()
    ]
    tables = [
        table(
            "Batch scoring, Parquet in, Parquet out",
            ["model", "modelbus rows", "modelbus rows/s", "mlflow rows", "mlflow models predict rows/s", "ratio"],
            shown,
            note=f"modelbus: {args.chunk_rows:,}-row chunks, ONNX graph, request ids and probabilities written. "
            "mlflow models predict: CSV in (its input formats are CSV and JSON), JSON out, --env-manager local.",
        )
    ]
    results["parameters"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    publish(args.out, "batch", "Batch scoring", tables, results)


if __name__ == "__main__":
    main()
