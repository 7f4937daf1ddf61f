"""Derived features in the spec: each mistake is refused with its YAML path, and each operation
computes what it says, missing values included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from shared.contract.specparse import SpecError
from shared.runtime.derive import compute
from shared.runtime.features import MISSING
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = yaml.safe_load((ROOT / "schemas/examples/derived-features.yaml").read_text())


def refusal(derived: list[dict[str, object]]) -> dict[str, str]:
    text = yaml.safe_dump({**EXAMPLE, "derived": derived})
    with pytest.raises(SpecError) as refused:
        load_spec(text)
    return {issue.path: issue.message for issue in refused.value.issues}


def test_the_example_is_valid_and_feeds_the_estimator_raw_and_derived_features_but_no_raw_datetime() -> None:
    spec = load_spec(yaml.safe_dump(EXAMPLE))
    inputs = [f.name for f in spec.model_inputs()]
    assert "registered_at" not in inputs and "event_time" not in inputs
    assert inputs[-len(spec.derived) :] == [d.name for d in spec.derived]
    assert {"spend_per_transaction", "days_since_registration"} <= set(inputs)


def test_an_unknown_operation_is_refused_at_its_path() -> None:
    issues = refusal([{"name": "x", "op": "sqrt", "of": ["total_spend"]}])
    assert issues["derived[0].op"].startswith("unknown operation 'sqrt'; known: ratio, difference")


def test_unknown_later_and_self_references_are_refused_with_their_paths() -> None:
    issues = refusal(
        [
            {"name": "a", "op": "log1p", "of": ["nope"]},
            {"name": "b", "op": "log1p", "of": ["c"]},
            {"name": "c", "op": "log1p", "of": ["c"]},
            {"name": "d", "op": "log1p", "of": ["churned"]},
        ]
    )
    assert issues["derived[0].of[0]"] == "unknown feature 'nope'"
    assert issues["derived[1].of[0]"].startswith("'c' is derived later")
    assert issues["derived[2].of[0]"] == "'c' refers to itself"
    assert "target cannot feed a feature" in issues["derived[3].of[0]"]


def test_a_cycle_is_refused_naming_it() -> None:
    issues = refusal([{"name": "a", "op": "sum", "of": ["total_spend", "b"]}, {"name": "b", "op": "log1p", "of": "a"}])
    assert issues["derived[0].of[1]"].endswith("a cycle: a → b → a")


def test_wrong_types_and_arities_and_bounds_are_refused() -> None:
    issues = refusal(
        [
            {"name": "a", "op": "ratio", "of": ["total_spend", "plan"]},
            {"name": "b", "op": "month", "of": "total_spend"},
            {"name": "c", "op": "ratio", "of": ["total_spend"]},
            {"name": "d", "op": "days_since", "of": "registered_at", "against": "plan"},
            {"name": "e", "op": "bucketize", "of": "total_spend", "edges": [10, 5]},
            {"name": "f", "op": "clip", "of": "total_spend"},
            {"name": "plan", "op": "log1p", "of": "total_spend"},
        ]
    )
    assert issues["derived[0].of[1]"] == "ratio needs numeric inputs; 'plan' is categorical"
    assert issues["derived[1].of[0]"] == "month needs a datetime feature; 'total_spend' is numeric"
    assert issues["derived[2].of"] == "ratio takes two inputs, not 1"
    assert issues["derived[3].against"] == "'plan' is not a datetime feature (or 'now')"
    assert issues["derived[4].edges"] == "bucketize needs one or more strictly increasing edges"
    assert issues["derived[5]"] == "clip needs min, max or both"
    assert "already a feature" in issues["derived[6].name"]


def test_each_operation_computes_what_it_says() -> None:
    day = 86_400.0
    frame = pd.DataFrame(
        {
            "spend": [100.0, 50.0, np.nan, -3.0],
            "count": [4.0, 0.0, 2.0, 1.0],
            "at": [0.0, 31 * day + 3600 * 5, np.nan, 10 * day],  # 1970-01-01 (Thu), 1970-02-01 05:00 (Sun)
            "seen": [10 * day, 40 * day, 1.0, 10 * day],
            "plan": ["basic", MISSING, "pro", "plus"],
        }
    )
    derived = compute(
        frame,
        [
            {"name": "per", "op": "ratio", "of": ["spend", "count"], "on_zero": "nan"},
            {"name": "per0", "op": "ratio", "of": ["spend", "count"], "on_zero": "zero"},
            {"name": "diff", "op": "difference", "of": ["spend", "count"]},
            {"name": "days", "op": "days_since", "of": ["at"], "against": "seen"},
            {"name": "today", "op": "days_since", "of": ["at"], "against": "now"},
            {"name": "month", "op": "month", "of": ["at"]},
            {"name": "weekday", "op": "weekday", "of": ["at"]},
            {"name": "hour", "op": "hour", "of": ["at"]},
            {"name": "log", "op": "log1p", "of": ["spend"]},
            {"name": "clipped", "op": "clip", "of": ["spend"], "max": 60},
            {"name": "gone", "op": "is_missing", "of": ["plan"]},
            {"name": "gone_spend", "op": "is_missing", "of": ["spend"]},
            {"name": "band", "op": "bucketize", "of": ["per"], "edges": [10, 30]},
        ],
        now=20 * day,
    )
    assert derived["per"].tolist()[:2] == [25.0, pytest.approx(np.nan, nan_ok=True)]
    assert derived["per0"].tolist()[1] == 0.0
    assert derived["diff"].tolist()[0] == 96.0
    assert derived["days"].tolist()[0] == 10.0 and derived["today"].tolist()[0] == 20.0
    assert derived["month"].tolist()[:2] == [1.0, 2.0] and np.isnan(derived["month"][2])
    assert derived["weekday"].tolist()[:2] == [3.0, 6.0]
    assert derived["hour"].tolist()[1] == 5.0
    assert derived["log"][0] == pytest.approx(np.log1p(100)) and np.isnan(derived["log"][3])
    assert derived["clipped"].tolist()[:2] == [60.0, 50.0]
    assert derived["gone"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert derived["gone_spend"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert derived["band"].tolist()[0] == 1.0 and np.isnan(derived["band"][1])


def test_days_since_now_uses_the_clock_at_transform_time() -> None:
    frame = pd.DataFrame({"at": [0.0]})
    [value] = compute(frame, [{"name": "d", "op": "days_since", "of": ["at"], "against": "now"}], now=86_400.0 * 3)[
        "d"
    ].tolist()
    assert value == 3.0
