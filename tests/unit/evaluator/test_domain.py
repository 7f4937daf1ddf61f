"""Judging a candidate: gates with their numbers, against the champion on the same rows."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from services.evaluator import domain
from services.trainer import fit
from shared.runtime.modelfile import UntrustedArtifact, load_model
from tests.unit.evaluator.conftest import SPEC

FAST = domain.Latency(row_p99_ms=1.0, batch_p99_ms=10.0)


def test_against_an_equal_champion_nothing_regresses_and_on_random_labels_the_model_is_rejected(
    trained: fit.Outcome,
) -> None:
    model = load_model(Path(trained.files["model.skops"]))
    test = pd.read_parquet(trained.files["test-split.parquet"])
    champion = load_model(Path(trained.files["model.skops"]))  # the same model, loaded again
    verdict_same = domain.judge(SPEC, model, test, FAST, champion=champion)
    gates = {g.name: g for g in verdict_same.gates}
    assert gates["roc_auc_vs_champion_absolute"].value == pytest.approx(0.0)
    assert gates["roc_auc_vs_champion_relative"].passed
    assert gates["importance_stability"].value == pytest.approx(1.0)
    assert verdict_same.decision == "approved" and verdict_same.test_rows == len(test)

    weak = test.copy()
    weak["churned"] = weak["churned"].sample(frac=1.0, random_state=1).to_numpy()  # labels unrelated to features
    worse = domain.judge(SPEC, model, weak, FAST, champion=None)
    assert worse.decision == "rejected"
    assert {g.name for g in worse.gates if not g.passed} >= {"min_roc_auc"}


def test_regression_against_the_champion_is_measured_in_absolute_and_relative_terms() -> None:
    gates = {
        g.name: g
        for g in domain.metric_gates(SPEC, {"accuracy": 0.72, "roc_auc": 0.78}, {"accuracy": 0.73, "roc_auc": 0.80})
    }
    assert gates["roc_auc_vs_champion_absolute"].value == pytest.approx(0.02)
    assert not gates["roc_auc_vs_champion_absolute"].passed  # 0.02 > 0.01 allowed
    assert gates["roc_auc_vs_champion_relative"].value == pytest.approx(0.025)
    assert not gates["roc_auc_vs_champion_relative"].passed  # 2.5 % > 2 % allowed
    assert gates["min_accuracy"].passed and gates["min_roc_auc"].passed


def test_slow_models_fail_the_latency_budget_and_a_human_holds_a_passing_one(trained: fit.Outcome) -> None:
    model = load_model(Path(trained.files["model.skops"]))
    test = pd.read_parquet(trained.files["test-split.parquet"])
    slow = domain.judge(SPEC, model, test, domain.Latency(row_p99_ms=80, batch_p99_ms=10))
    assert slow.decision == "rejected"
    assert [g.name for g in slow.gates if not g.passed] == ["latency_p99_row"]
    held = domain.judge(SPEC.model_copy(update={"require_approval": True}), model, test, FAST)
    assert held.decision == "held-for-review"


def test_a_model_file_naming_foreign_types_is_refused_before_loading(tmp_path: Path) -> None:
    import skops.io as sio

    path = tmp_path / "model.skops"
    sio.dump({"payload": pd.Timestamp("2026-01-01")}, path)
    with pytest.raises(
        UntrustedArtifact, match=re.escape("does not load: the type pandas._libs.tslibs.timestamps.Timestamp")
    ):
        load_model(path)
