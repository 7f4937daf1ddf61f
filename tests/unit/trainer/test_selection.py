"""Choosing a run's winner among the candidates that can pass the spec's gates: a candidate that
would be rejected (predictions that break the spec's sanity gates, a served form over the latency
budget) is not chosen however good its score, the run records why, and a run where none can pass
says so instead of registering a version doomed to rejection."""

from __future__ import annotations

import json
from pathlib import Path

from services.trainer import domain, fit
from shared.contract.events import CandidateResult, GateResult
from shared.contract.spec import Candidate
from shared.ops.example_data import write_churn
from tests.unit.trainer.test_fit import SPEC, job

# Regularised this hard, logistic regression ranks customers as well as ever but predicts "stays"
# for everyone: every prediction in one class, over the spec's max_class_rate of 0.95.
CONSTANT = Candidate(estimator="sklearn.linear_model.LogisticRegression", params={"C": 1e-7, "max_iter": 500})
FOREST = Candidate(
    estimator="sklearn.ensemble.RandomForestClassifier", params={"n_estimators": 30, "max_depth": 6, "random_state": 0}
)


def _result(name: str, score: float, refused: str | None = None) -> CandidateResult:
    return CandidateResult(estimator=f"sklearn.x.{name}", params={}, score=score, refused=refused)


def test_the_best_score_among_candidates_that_can_pass_wins() -> None:
    tried = [
        _result("A", 0.91, refused="fails latency_p99_row: 181 (needs <= 50)"),
        _result("B", 0.84),
        _result("C", 0.80),
    ]
    assert domain.choose(SPEC, tried) == 1  # selection metric roc_auc: higher is better


def test_a_lower_is_better_metric_picks_the_lowest_passing_score() -> None:
    spec = SPEC.model_copy(update={"task": "regression", "selection_metric": "rmse"})
    tried = [
        _result("A", 1.0, refused="fails finite_predictions: 0.9 (needs >= 1)"),
        _result("B", 3.0),
        _result("C", 2.0),
    ]
    assert domain.choose(spec, tried) == 2


def test_no_candidate_that_can_pass_means_no_winner_and_the_reason_names_each() -> None:
    tried = [_result("A", 0.9, refused="fails max_class_rate: 1 (needs <= 0.95)"), _result("B", float("nan"))]
    assert domain.choose(SPEC, tried) is None
    reason = domain.none_passes(tried)
    assert reason.startswith("no candidate can pass the spec's gates")
    assert "A fails max_class_rate: 1 (needs <= 0.95)" in reason and "B has no validation score" in reason


def test_refusal_lists_every_failed_gate_with_its_numbers() -> None:
    checks = [
        GateResult(
            name="finite_predictions", metric="finite_share", value=1.0, threshold=1.0, comparator=">=", passed=True
        ),
        GateResult(
            name="latency_p99_row", metric="latency_p99_ms", value=181.2, threshold=50, comparator="<=", passed=False
        ),
        GateResult(
            name="latency_p99_batch_1000",
            metric="latency_p99_ms",
            value=None,
            threshold=2000,
            comparator="<=",
            passed=False,
        ),
    ]
    assert domain.refusal(checks) == (
        "fails latency_p99_row: 181.2 (needs <= 50); fails latency_p99_batch_1000: unmeasured (needs <= 2000)"
    )
    assert domain.refusal(checks[:1]) is None


def test_a_candidate_that_would_fail_a_gate_is_skipped_with_its_reason_in_the_run(tmp_path: Path) -> None:
    spec = SPEC.model_copy(
        update={"candidates": [CONSTANT, FOREST], "evaluation": SPEC.evaluation.model_copy(update={"fairness": None})}
    )
    outcome = fit.train(job(tmp_path, spec, write_churn(tmp_path / "churn.csv", rows=2000)))
    assert outcome.ok, outcome.reason
    constant, forest = outcome.candidates
    assert constant.refused is not None and "fails max_class_rate: 1" in constant.refused, constant
    assert forest.refused is None and outcome.estimator == FOREST.estimator
    assert {c.name for c in forest.checks} >= {"latency_p99_row", "latency_p99_batch_1000", "max_class_rate"}
    row = next(c for c in forest.checks if c.name == "latency_p99_row")
    assert row.value is not None and row.value > 0 and row.load is not None and row.measurements
    manifest = json.loads(Path(outcome.files["manifest.json"]).read_text())
    assert manifest["candidates"][0]["refused"] == constant.refused, "the run's manifest records why"
    assert not (Path(outcome.files["manifest.json"]).parent / "candidates").exists(), "no candidate's files left behind"


def test_a_run_where_no_candidate_can_pass_fails_at_select_instead_of_registering(tmp_path: Path) -> None:
    spec = SPEC.model_copy(
        update={"candidates": [CONSTANT], "evaluation": SPEC.evaluation.model_copy(update={"fairness": None})}
    )
    outcome = fit.train(job(tmp_path, spec, write_churn(tmp_path / "churn.csv", rows=2000)))
    assert not outcome.ok and outcome.stage == "select", outcome
    assert outcome.reason == (
        "no candidate can pass the spec's gates: LogisticRegression fails min_class_rate: 0 (needs >= 0.05); "
        "fails max_class_rate: 1 (needs <= 0.95)"
    )
    assert not outcome.files
