"""A data scientist's notebook, as a script: train a scikit-learn pipeline on a CSV outside
modelbus, then save it the ways people do: with MLflow (skops serialization, with a signature and
an input example), as ONNX through skl2onnx, as a bare skops file, and (to be refused) as a joblib
pickle. Runs in any environment with scikit-learn, skops and skl2onnx; the MLflow model is written
only where MLflow is installed (the benchmark's MLflow virtualenv).

    python tests/support/notebook.py DATA.csv OUT_DIR [--target churned] [--trees 50]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]
CATEGORICAL = ["plan", "region"]


def train(frame: pd.DataFrame, target: str, trees: int, seed: int) -> Pipeline:
    """The notebook's pipeline: impute, one-hot, a random forest."""
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", SimpleImputer(strategy="median"), NUMERIC),
                        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
                    ]
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=trees, max_depth=8, random_state=seed)),
        ]
    )
    x = frame[NUMERIC + CATEGORICAL].copy()
    x[CATEGORICAL] = x[CATEGORICAL].astype(str)
    return pipeline.fit(x, frame[target])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--target", default="churned")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.data)
    model = train(frame, args.target, args.trees, args.seed)
    x = frame[NUMERIC + CATEGORICAL].copy()
    x[CATEGORICAL] = x[CATEGORICAL].astype(str)
    written = {}

    sio.dump(model, args.out / "model.skops")
    written["skops"] = str(args.out / "model.skops")

    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [(n, FloatTensorType([None, 1])) for n in NUMERIC] + [(n, StringTensorType([None, 1])) for n in CATEGORICAL]
    graph = to_onnx(model, initial_types=types, target_opset=17)
    (args.out / "model.onnx").write_bytes(graph.SerializeToString())
    written["onnx"] = str(args.out / "model.onnx")

    import pickle

    with (args.out / "model.joblib").open("wb") as handle:
        pickle.dump(model, handle, protocol=4)  # what joblib.dump writes: a pickle stream
    written["pickle"] = str(args.out / "model.joblib")

    try:
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature
    except ImportError:
        pass
    else:
        folder = args.out / "mlflow-model"
        sample = x.astype({n: np.float64 for n in NUMERIC})
        mlflow.sklearn.save_model(
            model,
            str(folder),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=sio.get_untrusted_types(file=args.out / "model.skops"),  # we made it ourselves
            signature=infer_signature(sample, model.predict(sample)),
            input_example=sample.head(3),
            metadata={"notebook": "churn-forest"},
        )
        written["mlflow"] = str(folder)
    print(json.dumps(written))


if __name__ == "__main__":
    main()
