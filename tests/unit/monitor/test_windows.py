"""Predictions logged as columns, and their way into a window's arrays."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from services.monitor import canary, store, windows
from shared.contract.events import Prediction, PredictionsLogged
from shared.contract.spec import Rollout

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def answers() -> list[Prediction]:
    return [
        Prediction(
            request_id="r-1",
            model_version=1,
            role="stable",
            features={"age": 33.0, "plan": "pro"},
            prediction=1,
            probabilities={"0": 0.3, "1": 0.7},
            latency_ms=2.0,
            served_at=NOW,
            sticky_key="c-1",
        ),
        Prediction(
            request_id="r-2",
            model_version=2,
            role="canary",
            features={"age": None, "plan": "basic"},
            prediction=0,
            probabilities={"0": 0.9, "1": 0.1},
            latency_ms=1.0,
            served_at=NOW + timedelta(seconds=1),
        ),
        Prediction(
            request_id="r-3",
            model_version=1,
            role="stable",
            features={"age": 51, "plan": None},
            prediction=1,
            probabilities={"0": 0.4, "1": 0.6},
            latency_ms=3.0,
            served_at=NOW + timedelta(seconds=2),
        ),
    ]


def test_a_batch_of_records_goes_to_columns_and_back_unchanged() -> None:
    event = PredictionsLogged.from_records("churn", "b-1", answers())
    assert event.rows == 3
    assert event.features == {"age": [33.0, None, 51], "plan": ["pro", "basic", None]}
    assert event.sticky_key == ["c-1", None, None]
    again = PredictionsLogged.model_validate_json(event.model_dump_json())
    assert again.records() == answers()


def test_columns_of_uneven_length_are_refused_naming_each_one() -> None:
    event = PredictionsLogged.from_records("churn", "b-1", answers()).model_dump(mode="json")
    event["features"]["plan"] = ["pro"]
    event["latency_ms"] = [1.0, 2.0]
    with pytest.raises(ValidationError) as refused:
        PredictionsLogged.model_validate(event)
    message = str(refused.value)
    assert "one value per request_id (3)" in message
    assert "features.plan has 1" in message and "latency_ms has 2" in message


def test_a_batch_becomes_arrays_with_missing_values_and_confidence() -> None:
    columns = windows.columns_of(PredictionsLogged.from_records("churn", "b-1", answers()))
    assert columns["age"].dtype == np.float64
    assert columns["age"][0] == 33.0 and math.isnan(columns["age"][1]) and columns["age"][2] == 51.0
    assert windows.categories(columns, "plan").tolist() == ["pro", "basic", ""]
    assert columns[windows.CONFIDENCE].tolist() == [0.7, 0.9, 0.6]
    assert windows.categories(columns, windows.ROLE).tolist() == ["stable", "canary", "stable"]
    assert windows.span(columns) == (NOW, NOW + timedelta(seconds=2))


def test_a_number_column_with_a_stray_string_stays_numeric() -> None:
    rows = answers()
    rows[1] = rows[1].model_copy(update={"features": {"age": "unknown", "plan": "basic"}})
    columns = windows.columns_of(PredictionsLogged.from_records("churn", "b-1", rows))
    assert columns["age"].dtype == np.float64 and math.isnan(columns["age"][1])


def test_taking_rows_keeps_only_the_strings_they_use() -> None:
    columns = windows.columns_of(PredictionsLogged.from_records("churn", "b-1", answers()))
    first_version = windows.take(columns, np.array([0, 2]))
    assert windows.rows_of(first_version) == 2
    assert sorted(first_version["plan" + windows.VOCABULARY].tolist()) == ["", "pro"]  # not "basic"
    assert windows.categories(first_version, "plan").tolist() == ["pro", ""]
    joined = windows.concatenate([first_version, windows.take(columns, slice(1, 2))])
    assert windows.categories(joined, "plan").tolist() == ["pro", "", "basic"]


def test_a_chunk_is_kept_and_read_back_exactly() -> None:
    columns = windows.columns_of(PredictionsLogged.from_records("churn", "b-1", answers()))
    columns["empty"] = np.array([], dtype=np.float64)
    back = store.unpack(store.pack(columns))
    assert back.keys() == columns.keys()
    for name, values in columns.items():
        assert back[name].dtype == values.dtype
        np.testing.assert_array_equal(back[name], values)


def test_a_chunk_refuses_python_objects() -> None:
    with pytest.raises(ValueError, match="column 'x'"):
        store.pack({"x": np.array([{"a": 1}], dtype=object)})


@pytest.mark.parametrize(
    ("canary_ms", "stable_ms", "passes"),
    [
        (4.8, 1.5, True),  # three times slower, but by 3.3 ms: scheduling noise, not a regression
        (14.0, 8.0, False),  # 1.75 times and 6 ms slower: a regression
        (11.0, 8.0, True),  # 1.4 times: within the ratio
    ],
)
def test_canary_latency_fails_only_beyond_both_the_ratio_and_the_slack(
    canary_ms: float, stable_ms: float, passes: bool
) -> None:
    policy = Rollout(max_latency_ratio=1.5, latency_slack_ms=5.0)
    canary_ = canary.Summary(rows=500, latency_p99_ms=canary_ms, prediction_shares={"0": 1.0})
    stable = canary.Summary(rows=500, latency_p99_ms=stable_ms, prediction_shares={"0": 1.0})
    compared = canary.compare(canary_, stable, policy, task="classification", labelled=None)
    [latency] = [c for c in compared if c.metric == "latency_p99_ms"]
    assert latency.passed is passes


def test_the_latency_p99_counts_a_request_once_however_many_rows_it_carried() -> None:
    """15 requests of 20 rows, one of them slow (the first call of a new version on a busy
    machine): the rows of one request are one observation, so that request alone cannot put the
    p99's interval above the stable's."""
    rng = np.random.default_rng(5)
    taken = [*rng.normal(1.0, 0.05, 14), 8.468]
    rows = [
        Prediction(
            request_id=f"r-{request}-{row}",
            model_version=2,
            role="canary",
            features={"age": 30.0 + row, "plan": "pro"},
            prediction=row % 2,
            probabilities={"0": 0.4, "1": 0.6},
            latency_ms=float(ms),
            served_at=NOW + timedelta(seconds=request),
        )
        for request, ms in enumerate(taken)
        for row in range(20)
    ]
    found = windows.summarize(windows.columns_of(PredictionsLogged.from_records("churn", "b-1", rows)))
    assert found.rows == 300
    assert found.latency_p99_bounds is not None
    low, high = found.latency_p99_bounds
    assert high == 8.468 and low < 1.5, found.latency_p99_bounds  # rows as samples: both ends at 8.468
    assert canary.quantile_bounds(np.repeat(taken, 20))[0] == 8.468, "what rows as samples gave"
