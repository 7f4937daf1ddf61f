"""XGBoost and LightGBM in the trainer: they compete with scikit-learn on the selection metric,
export to ONNX through onnxmltools under the parity check, and load back through skops with
named trusted types; their parameters are checked when the spec is applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.trainer import fit
from shared.contract.spec import ModelSpec
from shared.contract.specparse import SpecError
from shared.ops.example_data import write_churn
from shared.runtime.features import prepare
from shared.runtime.modelfile import load_model
from shared.runtime.onnxmodel import OnnxModel
from shared.runtime.specfile import load_spec
from tests.unit.trainer.test_fit import job

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "schemas/examples/gradient-boosting.yaml").read_text()
SPEC = load_spec(TEXT)


def one_candidate(estimator: str, task: str, params: dict[str, int]) -> ModelSpec:
    """The example spec with one candidate; for regression, monthly charges become the target."""
    regression = task == "regression"
    return SPEC.model_copy(
        update={
            "task": task,
            "target": "monthly_charges" if regression else SPEC.target,
            "features": [f for f in SPEC.features if not (regression and f.name == "monthly_charges")],
            "selection_metric": "rmse" if regression else SPEC.selection_metric,
            "gates": [],
            "contract": SPEC.contract.model_copy(update={"min_class_count": 1}),
            "candidates": [
                SPEC.candidates[1].model_copy(update={"estimator": estimator, "params": params, "search": {}})
            ],
        }
    )


def assert_the_graph_agrees(outcome: fit.Outcome, spec: ModelSpec, rows: pd.DataFrame, *, relative: float) -> None:
    """The run's ONNX graph gives the pipeline's answers on `rows`: a regressor's values within
    `relative` of the largest, a classifier's probabilities within 1e-4 and the same labels."""
    pipeline = load_model(Path(outcome.files["model.skops"]))  # refuses any type it does not name
    regression = spec.task == "regression"
    graph = OnnxModel.open(
        Path(outcome.files["model.onnx"]),
        features=[f.name for f in spec.features],
        numeric=[f.type == "numeric" for f in spec.features],
        task=spec.task,
        classes=pipeline.classes_.tolist() if not regression else None,
    )
    if regression:
        difference = np.max(np.abs(graph.predict(rows) - pipeline.predict(rows)))
        assert difference < relative * np.abs(pipeline.predict(rows)).max(), difference
    else:
        assert np.max(np.abs(graph.predict_proba(rows) - pipeline.predict_proba(rows))) < 1e-4
        assert np.array_equal(graph.predict(rows), pipeline.predict(rows))


def test_three_families_compete_on_the_selection_metric_and_the_best_wins(tmp_path: Path) -> None:
    spec = SPEC.model_copy(update={"search": SPEC.search.model_copy(update={"iterations": 2, "cv": 2})})
    outcome = fit.train(job(tmp_path, spec, write_churn(tmp_path / "churn.csv", rows=3000)))
    assert outcome.ok, outcome.reason
    scores = {c.estimator: c.score for c in outcome.candidates}
    assert set(scores) == {
        "sklearn.linear_model.LogisticRegression",
        "xgboost.XGBClassifier",
        "lightgbm.LGBMClassifier",
    }
    assert outcome.estimator == max(scores, key=lambda name: scores[name])
    assert all(0.5 < s <= 1 for s in scores.values()), scores


@pytest.mark.parametrize(
    ("estimator", "task", "params"),
    [
        ("xgboost.XGBClassifier", "classification", {"n_estimators": 60, "max_depth": 4}),
        ("lightgbm.LGBMClassifier", "classification", {"n_estimators": 60, "num_leaves": 15}),
        ("xgboost.XGBRegressor", "regression", {"n_estimators": 60, "max_depth": 4}),
        ("lightgbm.LGBMRegressor", "regression", {"n_estimators": 60, "num_leaves": 15}),
    ],
)
def test_a_boosted_model_exports_to_onnx_that_agrees_and_loads_back_through_skops(
    estimator: str, task: str, params: dict[str, int], tmp_path: Path
) -> None:
    spec = one_candidate(estimator, task, params)
    outcome = fit.train(job(tmp_path, spec, write_churn(tmp_path / "churn.csv", rows=2000)))
    assert outcome.ok, outcome.reason
    assert outcome.onnx == "ok" and "model.onnx" in outcome.files
    rows = prepare(pd.read_parquet(outcome.files["test-split.parquet"]), spec.features)
    assert_the_graph_agrees(outcome, spec, rows, relative=1e-3)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_hist_gradient_boosting_exports_to_onnx_that_agrees_on_10000_rows_with_missing_values(
    task: str, tmp_path: Path
) -> None:
    regression = task == "regression"
    estimator = f"sklearn.ensemble.HistGradientBoosting{'Regressor' if regression else 'Classifier'}"
    spec = one_candidate(estimator, task, {"max_iter": 80})
    outcome = fit.train(job(tmp_path, spec, write_churn(tmp_path / "churn.csv", rows=3000)))
    assert outcome.ok, outcome.reason
    assert outcome.onnx == "ok" and "model.onnx" in outcome.files, outcome.onnx
    rows = prepare(pd.read_csv(write_churn(tmp_path / "other.csv", rows=10_000, seed=11)), spec.features)
    numeric = [f.name for f in spec.features if f.type == "numeric"]
    holes = np.random.default_rng(3).random((len(rows), len(numeric))) < 0.05
    rows[numeric] = rows[numeric].mask(holes)  # the converter's missing-value branches are taken too
    assert_the_graph_agrees(outcome, spec, rows, relative=1e-4)


def test_an_unknown_booster_parameter_is_refused_with_its_yaml_path() -> None:
    with pytest.raises(SpecError) as refused:
        load_spec(TEXT.replace("num_leaves:", "num_leafs:"))
    assert any(
        i.path == "candidates[2].search.num_leafs" and "not a parameter of lightgbm.LGBMClassifier" in i.message
        for i in refused.value.issues
    ), refused.value.issues
