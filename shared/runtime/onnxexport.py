"""A fitted pipeline as an ONNX graph, kept only when it agrees with the pipeline: the trainer's
export of every winner, and the registry's of an imported skops pipeline."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from shared.contract.spec import Feature

log = logging.getLogger("modelbus.onnx")
ONNX_TOLERANCE = 1e-4


@functools.cache
def register_boosters() -> None:
    """Teach skl2onnx XGBoost's and LightGBM's estimators, with onnxmltools' converters (as
    skl2onnx documents for pipelines that end in them)."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    classifiers = (
        (XGBClassifier, "XGBoostXGBClassifier", convert_xgboost),
        (LGBMClassifier, "LightGbmLGBMClassifier", convert_lightgbm),
    )
    for cls, alias, converter in classifiers:
        update_registered_converter(
            cls, alias, calculate_linear_classifier_output_shapes, converter, options=classifier_options
        )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
        options={"split": None},
    )


@functools.cache
def mend_hist_gradient_boosting() -> None:
    """Let skl2onnx convert HistGradientBoosting* fitted by scikit-learn 1.9.

    skl2onnx 1.20's tree converter writes each node's `nodes_missing_value_tracks_true` as the
    tree's own `missing_go_to_left` value (a numpy uint8) for a branch and as Python's `False` for
    a leaf; ONNX's attribute builder then refuses the mixed list ("AttributeProto.ints: Expected an
    int, got a boolean") and the model could only be served through skops. The flag is a 0/1
    integer in ONNX's TreeEnsemble operators, so the node builder the converter calls is wrapped to
    pass it as one. The graph is checked against the pipeline as every export is (`export_onnx`)."""
    from skl2onnx.common import tree_ensemble

    build = tree_ensemble.add_node

    @functools.wraps(build)
    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return build(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node


def onnx_inputs(features: Sequence[Feature], x: pd.DataFrame) -> dict[str, np.ndarray[Any, Any]]:
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for feature in features:
        column = x[feature.name]
        if feature.type in ("numeric", "datetime"):
            inputs[feature.name] = column.to_numpy(dtype=np.float32).reshape(-1, 1)
        else:
            inputs[feature.name] = column.astype(str).to_numpy(dtype=object).reshape(-1, 1)
    return inputs


def with_feature_inputs(estimator: Any, features: Sequence[Feature], x: pd.DataFrame) -> Any:
    """A plain estimator (fitted on one matrix of the features) behind a step that gathers the
    features into that matrix, so that its graph takes one input per feature as serving feeds it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    gather = ColumnTransformer([("features", "passthrough", [f.name for f in features])]).fit(x)
    return Pipeline([("features", gather), ("model", estimator)])


def export_onnx(
    model: Any,
    features: Sequence[Feature],
    task: Literal["classification", "regression"],
    x_val: pd.DataFrame,
    path: Path,
) -> str:
    """Export a fitted pipeline to ONNX (one `[N, 1]` input per feature) and check it agrees with the
    pipeline on `x_val`; 'ok', or why not (and no file)."""
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx

        if not hasattr(model, "steps"):
            model = with_feature_inputs(model, features, x_val)
        if type(model.steps[-1][1]).__module__.startswith(("xgboost", "lightgbm")):
            register_boosters()
        if type(model.steps[-1][1]).__name__.startswith("HistGradientBoosting"):
            mend_hist_gradient_boosting()
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        types = [
            (f.name, FloatTensorType([None, 1]) if f.type in ("numeric", "datetime") else StringTensorType([None, 1]))
            for f in features
        ]
        options = {id(model.steps[-1][1]): {"zipmap": False}} if task == "classification" else None
        onnx_model = to_onnx(model, initial_types=types, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
        path.write_bytes(onnx_model.SerializeToString())
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ports = [port.name for port in session.get_inputs()]  # in the features' order, as skl2onnx spells them
        outputs = session.run(None, dict(zip(ports, onnx_inputs(features, x_val).values(), strict=True)))
        if task == "classification":
            expected = model.predict_proba(x_val)
            got = np.asarray(outputs[1], dtype=float)
        else:
            expected = model.predict(x_val).reshape(-1, 1)
            got = np.asarray(outputs[0], dtype=float).reshape(-1, 1)
        diff = float(np.max(np.abs(expected - got)))
        if not diff <= ONNX_TOLERANCE:
            path.unlink(missing_ok=True)
            rows = len(x_val)
            reason = f"ONNX disagrees with the pipeline on {rows} rows (max abs diff {diff:.3g} > {ONNX_TOLERANCE:g})"
            log.warning("%s: no ONNX artifact", reason)
            return reason
        return "ok"
    except Exception as exc:
        path.unlink(missing_ok=True)
        reason = f"ONNX export failed: {_why(exc)}"
        log.warning("%s: no ONNX artifact", reason)
        return reason


def _why(exc: BaseException) -> str:
    """The converter's error on one line, with its root cause (converters wrap the real one in a
    message that dumps every node attribute)."""
    first = (str(exc).strip().splitlines() or [""])[0].split(" and attributes=")[0][:160]
    root = exc.__cause__ or exc.__context__
    because = f" (because {type(root).__name__}: {str(root).splitlines()[0][:200]})" if root is not None else ""
    return f"{type(exc).__name__}: {first}{because}"
