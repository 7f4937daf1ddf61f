"""Predict with an MLflow model as an MLflow user does: `mlflow.pyfunc.load_model`, then
`predict` on a DataFrame. Runs in the benchmark's MLflow virtualenv; prints JSON.

    python tests/support/pyfunc_predict.py MODEL_DIR ROWS.parquet

Numeric columns go in as the signature's type (float32 for the onnx flavor), strings as Python
objects (MLflow's ONNX pyfunc hands each column's `.values` to ONNX Runtime, which takes no Arrow
strings).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # skops: the model is our own

import mlflow.pyfunc


def main() -> None:
    model = mlflow.pyfunc.load_model(sys.argv[1])
    rows = pd.read_parquet(sys.argv[2])
    inputs = model.metadata.get_input_schema().input_dict()
    for name, column in inputs.items():
        kind = str(column.type)
        if "float" in kind.lower() and "double" not in kind.lower():
            rows[name] = rows[name].astype(np.float32)
        elif "string" in kind.lower():
            rows[name] = rows[name].astype(object)
    answer = model.predict(rows)
    if isinstance(answer, pd.DataFrame):
        columns = list(answer.columns)  # the graph's outputs: label, then {class: probability} per row
        labels = answer[columns[0]].tolist()
        probabilities = [dict(p) for p in answer[columns[1]]] if len(columns) > 1 else None
    else:
        labels, probabilities = np.asarray(answer).tolist(), None
    flavors = sorted(model.metadata.flavors)
    print(json.dumps({"flavors": flavors, "labels": labels, "probabilities": probabilities}, default=str))


if __name__ == "__main__":
    main()
