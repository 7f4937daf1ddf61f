"""A simulated world with a hidden truth, for the loop's scenarios and the estimation benchmark.

Four numeric features, independent and normal; the target is drawn from a logistic truth
P(label = 1 | x) = sigmoid(x · weights + bias). The world moves in the two ways that matter:
  - **covariate drift** (`moved`): the features' means shift, the truth stays; a well-specified
    model stays right, so a retrain is not needed for accuracy, and a label-free estimate must see
    that;
  - **concept drift** (`changed`): the truth's weights change, the features do not; only labels
    (or data from the new world) can tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from shared.contract.spec import (
    Candidate,
    ColumnRule,
    Contract,
    Evaluation,
    Feature,
    Gate,
    ModelSpec,
    Monitoring,
    Rollout,
    Search,
)

FEATURES = ["x1", "x2", "x3", "x4"]
TARGET = "label"
KEY = "customer_id"


@dataclass(frozen=True)
class World:
    """The truth, and where the features are."""

    weights: tuple[float, ...] = (1.8, -1.4, 0.9, 0.0)
    bias: float = -0.2
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    scales: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def moved(self, **shift: float) -> World:
        """Covariate drift: feature means shifted by `shift` (e.g. x1=1.0), the same truth."""
        means = tuple(m + shift.get(name, 0.0) for name, m in zip(FEATURES, self.means, strict=True))
        return replace(self, means=means)

    def changed(self, weights: tuple[float, ...], bias: float | None = None) -> World:
        """Concept drift: a new truth over the same features."""
        return replace(self, weights=weights, bias=self.bias if bias is None else bias)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(label = 1 | x), the hidden truth."""
        found: np.ndarray = 1.0 / (1.0 + np.exp(-(x @ np.array(self.weights) + self.bias)))
        return found

    def frame(self, rows: int, *, seed: int) -> pd.DataFrame:
        """`rows` rows of the world: a customer id (the sticky key), the features, the drawn label."""
        rng = np.random.default_rng(seed)
        x = rng.normal(np.array(self.means), np.array(self.scales), size=(rows, len(FEATURES)))
        label = (rng.random(rows) < self.probability(x)).astype(int)
        frame = pd.DataFrame(x.round(5), columns=FEATURES)
        frame.insert(0, KEY, [f"c-{seed}-{i}" for i in range(rows)])
        frame[TARGET] = label
        return frame


def noise(rows: int, *, seed: int, positive_rate: float = 0.01) -> pd.DataFrame:
    """A dataset with no signal and hardly any positives: a model fitted on it predicts one class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))).round(5), columns=FEATURES)
    frame.insert(0, KEY, [f"n-{seed}-{i}" for i in range(rows)])
    frame[TARGET] = (rng.random(rows) < positive_rate).astype(int)
    return frame


@dataclass(frozen=True)
class Pace:
    """The timings a scenario's spec runs at (short, so a scenario takes a minute or two)."""

    window_rows: int = 300
    window_seconds: float = 20.0
    cooldown_seconds: float = 600.0
    bake_seconds: float = 2.0
    min_samples: int = 100
    steps: tuple[float, ...] = (50.0, 100.0)
    retrain_on: tuple[str, ...] = ("drift", "performance")
    extra: dict[str, object] = field(default_factory=dict)  # more Monitoring fields


def world_spec(model: str, pace: Pace) -> ModelSpec:
    """A spec for the world: one logistic regression, no search, an accuracy gate, the pace's
    windows, rollout and cooldown."""
    numeric = ColumnRule(dtype="numeric")
    return ModelSpec(
        model=model,
        dataset=model,
        task="classification",
        target=TARGET,
        features=[Feature(name=name, type="numeric") for name in FEATURES],
        contract=Contract(
            min_rows=200,
            columns={**{name: numeric for name in FEATURES}, TARGET: ColumnRule(dtype="integer", min=0, max=1)},
        ),
        candidates=[Candidate(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 500})],
        search=Search(iterations=1, cv=3),
        selection_metric="accuracy",
        gates=[Gate(metric="accuracy", min=0.6)],
        evaluation=Evaluation(max_latency_ms_row=5000.0, max_latency_ms_batch=60000.0),
        rollout=Rollout(
            steps=list(pace.steps),
            bake_seconds=pace.bake_seconds,
            min_samples=pace.min_samples,
            sticky_key=KEY,
        ),
        monitoring=Monitoring.model_validate(
            {
                "window_rows": pace.window_rows,
                "window_seconds": pace.window_seconds,
                "retrain_on": list(pace.retrain_on),
                "retrain_cooldown_seconds": pace.cooldown_seconds,
                "drift": {"drifted_share": 0.3},
                "performance": {"metric": "accuracy", "max_drop": 0.05, "min_labels": 200},
                **pace.extra,
            }
        ),
    )


def interactions(rows: int, *, seed: int) -> pd.DataFrame:
    """A regression world a linear model cannot fit: the target rests on a product, a sine and a
    square of the features (r2 about 0.1 for a linear fit, above 0.8 for gradient boosting)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame.insert(0, KEY, [f"b-{seed}-{i}" for i in range(rows)])
    frame["value"] = 3 * np.sin(x[:, 0] * x[:, 1]) + x[:, 2] ** 2 - 1 + 0.3 * rng.normal(size=rows)
    return frame


def boosting_spec(model: str) -> ModelSpec:
    """A spec offering a linear model and gradient boosting for `interactions`, with the default
    latency budget (one row 50 ms, 1,000 rows 2,000 ms) and an r2 gate only boosting can pass."""
    numeric = ColumnRule(dtype="numeric")
    return ModelSpec(
        model=model,
        dataset=model,
        task="regression",
        target="value",
        features=[Feature(name=name, type="numeric") for name in FEATURES],
        contract=Contract(min_rows=200, columns={**{name: numeric for name in FEATURES}, "value": numeric}),
        candidates=[
            Candidate(estimator="sklearn.linear_model.Ridge", params={"alpha": 1.0}),
            Candidate(
                estimator="sklearn.ensemble.HistGradientBoostingRegressor",
                params={"max_iter": 200, "learning_rate": 0.1, "random_state": 0},
            ),
        ],
        search=Search(iterations=1, cv=3),
        selection_metric="r2",
        gates=[Gate(metric="r2", min=0.6)],
        rollout=Rollout(steps=[100], bake_seconds=1, min_samples=10, sticky_key=KEY),
        monitoring=Monitoring.model_validate({"window_rows": 300, "window_seconds": 20, "retrain_on": []}),
    )
