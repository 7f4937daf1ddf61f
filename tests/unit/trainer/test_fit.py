"""Training on the example data: the contract, the choice of candidate, determinism, artifacts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from services.trainer import domain, fit
from shared.contract.spec import ModelSpec
from shared.ops.example_data import churn_frame, write_churn
from shared.runtime import onnxexport
from shared.runtime.features import prepare
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())


def quick(spec: ModelSpec) -> ModelSpec:
    """The example spec with a small search, so unit tests stay quick."""
    return spec.model_copy(update={"search": spec.search.model_copy(update={"iterations": 2, "cv": 2})})


def job(tmp_path: Path, spec: ModelSpec, data: Path, run: str = "r1") -> fit.Job:
    return fit.Job(
        run_id=run,
        spec=spec,
        data_path=str(data),
        data_format=data.suffix.lstrip("."),
        data_sha256="0" * 64,
        out_dir=str(tmp_path / run),
        code_version="test",
    )


def test_the_example_data_is_the_same_for_the_same_seed_and_differs_when_shifted() -> None:
    assert churn_frame(500, seed=3).equals(churn_frame(500, seed=3))
    assert churn_frame(500, shift=0.5)["support_calls"].mean() > churn_frame(500)["support_calls"].mean()


def test_every_broken_contract_rule_is_listed() -> None:
    frame = churn_frame(300)
    frame.loc[:100, "region"] = None  # 34 % nulls, 10 % allowed
    frame.loc[5, "plan"] = "platinum"
    frame.loc[6, "tenure_months"] = -4
    frame["monthly_charges"] = "cheap"
    frame = frame.drop(columns=["support_calls"])
    found = {(v.column, v.rule): v for v in domain.check_contract(frame, SPEC)}
    assert set(found) == {
        ("support_calls", "required"),
        ("region", "max_null_fraction"),
        ("plan", "domain"),
        ("tenure_months", "min"),
        ("monthly_charges", "dtype"),
    }
    assert found[("plan", "domain")].observed == "platinum"
    assert found[("tenure_months", "min")].observed == "min -4"
    single = churn_frame(300).assign(churned=0).head(150)
    rules = {(v.column, v.rule) for v in domain.check_contract(single, SPEC)}
    assert rules == {(None, "min_rows"), ("churned", "min_class_count")}


def test_a_contract_failure_produces_no_model(tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    churn_frame(300).assign(plan="enterprise").to_csv(data, index=False)
    outcome = fit.train(job(tmp_path, quick(SPEC), data))
    assert not outcome.ok and outcome.stage == "validate"
    assert [(v.column, v.rule) for v in outcome.violations] == [("plan", "domain")]
    assert not (tmp_path / "r1" / "model.skops").exists()


def test_the_better_candidate_wins_and_the_run_is_deterministic(tmp_path: Path) -> None:
    spec = quick(SPEC).model_copy(
        update={
            "candidates": [
                SPEC.candidates[0],
                SPEC.candidates[0].model_copy(
                    update={
                        "estimator": "sklearn.tree.DecisionTreeClassifier",
                        "params": {"max_depth": 1},
                        "search": {},
                    }
                ),
            ]
        }
    )
    data = write_churn(tmp_path / "churn.csv", rows=2000)
    first = fit.train(job(tmp_path, spec, data, "a"))
    again = fit.train(job(tmp_path, spec, data, "b"))
    assert first.ok, first.reason
    scores = {c.estimator: c.score for c in first.candidates}
    assert first.estimator == max(scores, key=lambda name: scores[name])
    assert first.estimator == "sklearn.linear_model.LogisticRegression"
    assert (first.params, first.metrics) == (again.params, again.metrics)
    assert pd.read_parquet(first.files["test-split.parquet"]).equals(pd.read_parquet(again.files["test-split.parquet"]))


def test_artifacts_load_without_running_code_and_predict_like_the_fitted_model(tmp_path: Path) -> None:
    data = write_churn(tmp_path / "churn.parquet", rows=1500)
    outcome = fit.train(job(tmp_path, quick(SPEC), data))
    assert (
        outcome.ok
        and outcome.onnx == "ok"
        and set(outcome.files)
        == {
            "model.skops",
            "model.onnx",
            "test-split.parquet",
            "manifest.json",
        }
    )
    untrusted = sio.get_untrusted_types(file=outcome.files["model.skops"])
    model = sio.load(outcome.files["model.skops"], trusted=untrusted)
    test = pd.read_parquet(outcome.files["test-split.parquet"])
    assert len(test) == 300 and set(test.columns) >= {"churned", "customer_id", "senior"}
    probabilities = model.predict_proba(prepare(test, SPEC.features))
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert outcome.profile is not None
    reference = outcome.profile.model_dump(mode="json")
    profile = reference["features"]
    assert abs(sum(profile["tenure_months"]["bin_fractions"]) - 1) < 1e-9
    assert set(profile["plan"]["frequencies"]) == {"basic", "plus", "pro"}
    assert 0.03 < profile["region"]["null_fraction"] < 0.08
    assert set(reference["prediction"]["frequencies"]) <= {"0", "1"}
    # The calibration of label-free estimates, fitted on the held-out test split.
    calibration = outcome.profile.calibration
    assert calibration is not None and calibration.rows == 300 and calibration.positive_class == "1"
    knots = np.array(calibration.confidence_knots)
    assert knots.min() >= 0.5 and knots.max() <= 1 and np.all(np.diff(calibration.confidence_correct) >= 0)


def test_when_onnx_disagrees_only_the_skops_artifact_is_kept_and_the_reason_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(onnxexport, "ONNX_TOLERANCE", -1.0)  # no difference can be that small
    data = write_churn(tmp_path / "churn.csv", rows=1500)
    with caplog.at_level(logging.WARNING, logger="modelbus.onnx"):
        outcome = fit.train(job(tmp_path, quick(SPEC), data))
    assert outcome.ok and "model.onnx" not in outcome.files
    assert outcome.onnx.startswith("ONNX disagrees with the pipeline on 300 rows")
    assert not (tmp_path / "r1" / "model.onnx").exists()
    assert any("no ONNX artifact" in r.getMessage() for r in caplog.records)


def test_successive_halving_search_is_bounded_and_reproducible(tmp_path: Path) -> None:
    spec = SPEC.model_copy(
        update={
            "search": SPEC.search.model_copy(update={"method": "halving", "iterations": 4, "cv": 2}),
            "candidates": [SPEC.candidates[0]],
        }
    )
    data = write_churn(tmp_path / "churn.csv", rows=1500)
    first, again = fit.train(job(tmp_path, spec, data, "h1")), fit.train(job(tmp_path, spec, data, "h2"))
    assert first.ok and first.params == again.params and 0.01 <= first.params["C"] <= 10
