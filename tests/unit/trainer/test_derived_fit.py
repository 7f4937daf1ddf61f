"""Training with derived features: the pipeline computes them from the raw columns, so the stored
model (loaded back through skops) predicts from raw rows as the fitted one does; the profile
covers raw and derived features; ONNX falls back to skops with the reason; bad datetimes break
the contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.trainer import domain, fit
from shared.contract.spec import ModelSpec
from shared.ops.example_data import purchases_frame
from shared.runtime.features import prepare
from shared.runtime.modelfile import load_model
from shared.runtime.served import Feature, InputError, Loaded, check_rows
from shared.runtime.specfile import load_spec
from tests.unit.trainer.test_fit import job

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec((ROOT / "schemas/examples/derived-features.yaml").read_text())


def quick() -> ModelSpec:
    return SPEC.model_copy(update={"search": SPEC.search.model_copy(update={"iterations": 2, "cv": 2})})


def test_a_pipeline_with_derived_features_predicts_from_raw_rows_after_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "purchases.csv"
    purchases_frame(3000, seed=5).to_csv(path, index=False)
    outcome = fit.train(job(tmp_path, quick(), path))
    assert outcome.ok, outcome.reason
    assert outcome.onnx.startswith("not exported: derived features are computed by modelbus' DeriveFeatures step")
    assert "model.onnx" not in outcome.files
    derived = {d.name for d in SPEC.derived}
    assert derived <= set(outcome.profile.features), "drift is watched on the derived features"
    assert {"total_spend", "plan"} <= set(outcome.profile.features)
    assert not {"registered_at", "event_time"} & set(outcome.profile.features), "a raw timestamp always drifts"
    assert [s.kind for s in outcome.feature_schema if s.name == "registered_at"] == ["datetime"]
    stored = load_model(Path(outcome.files["model.skops"]))  # DeriveFeatures is a named trusted type
    assert stored.steps[0][0] == "derive"
    raw = purchases_frame(1000, seed=77).drop(columns=["churned"])
    expected = stored.predict_proba(prepare(raw, SPEC.features))
    features = tuple(Feature(s.name, s.kind) for s in outcome.feature_schema)  # type: ignore[arg-type]
    served = Loaded(
        model="purchases", version=1, task="classification", features=features, classes=[0, 1],
        runtime="skops", session=stored, memory_bytes=0, derived=[d.model_dump() for d in SPEC.derived],
    )  # fmt: skip
    requests = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in raw.to_dict("records")]
    _, probabilities = served.predict(check_rows(features, requests))
    assert np.max(np.abs(np.asarray(probabilities) - expected)) < 1e-12, "serving computes what training did"
    logged = served.derived_values(check_rows(features, requests[:3]))
    assert set(logged[0]) == {d.name for d in SPEC.derived}


def test_the_derived_features_change_what_the_model_learns() -> None:
    frame = purchases_frame(3000, seed=5)
    x, y = prepare(frame, SPEC.features), frame["churned"]
    candidate = SPEC.candidates[1]
    with_them = domain.fit_candidate(SPEC, candidate, x, y).pipeline
    without = domain.fit_candidate(SPEC.model_copy(update={"derived": []}), candidate, x, y).pipeline
    test = purchases_frame(2000, seed=6)
    from sklearn.metrics import roc_auc_score

    rows = prepare(test, SPEC.features)
    better = roc_auc_score(test["churned"], with_them.predict_proba(rows)[:, 1])
    worse = roc_auc_score(test["churned"], without.predict_proba(rows)[:, 1])
    assert better > worse + 0.01, (better, worse)


def test_unreadable_datetimes_break_the_contract() -> None:
    frame = purchases_frame(300, seed=1)
    frame.loc[:4, "registered_at"] = "last tuesday"
    [broken] = [v for v in domain.check_contract(frame, SPEC) if v.rule == "datetime"]
    assert (broken.column, broken.observed) == ("registered_at", "5 unreadable")


def test_serving_reads_datetimes_as_iso_text_or_epoch_seconds_and_names_a_bad_one() -> None:
    features = (Feature("at", "datetime"), Feature("n", "numeric"))
    [[a, _], [b, _], [c, _], [d, _]] = check_rows(
        features,
        [
            {"at": "2026-06-01T00:00:00Z", "n": 1},
            {"at": "2026-06-01T02:00:00+02:00", "n": 1},
            {"at": 1780272000, "n": 1},
            {"at": None, "n": 1},
        ],
    )
    assert a == b == c == pd.Timestamp("2026-06-01", tz="UTC").timestamp() and math.isnan(d)
    with pytest.raises(InputError) as refused:
        check_rows(features, [{"at": "soon", "n": 1}])
    assert refused.value.errors == ["instances[0].at: expected an ISO 8601 datetime or epoch seconds, got 'soon'"]
