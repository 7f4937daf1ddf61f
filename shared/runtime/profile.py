"""What a version's reference rows look like (for drift) and how its scores are calibrated (for
label-free estimation): shared by the trainer, which profiles its training split, and by the
registry, which profiles the reference rows of an imported model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from shared.contract.events import Calibration, CategoricalProfile, NumericProfile, ReferenceProfile
from shared.contract.spec import Feature
from shared.runtime.features import prepare

PROFILE_BINS = 10
PROFILE_SAMPLE = 1000


def numeric_profile(values: pd.Series, *, seed: int) -> NumericProfile:
    """Quantile bins and a seeded sample of a numeric column."""
    clean = values.dropna().to_numpy(dtype=float)
    nulls = float(values.isna().mean()) if len(values) else 0.0
    if clean.size == 0:
        return NumericProfile(
            count=0, null_fraction=nulls, mean=0, std=0, min=0, max=0, bin_edges=[0.0, 0.0], bin_fractions=[0.0]
        )
    edges = np.unique(np.quantile(clean, np.linspace(0, 1, PROFILE_BINS + 1)))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0]])
        fractions = np.array([1.0])
    else:
        counts, _ = np.histogram(clean, bins=edges)
        fractions = counts / counts.sum()
    rng = np.random.default_rng(seed)
    sample = rng.choice(clean, size=min(PROFILE_SAMPLE, clean.size), replace=False)
    return NumericProfile(
        count=int(clean.size),
        null_fraction=nulls,
        mean=float(clean.mean()),
        std=float(clean.std()),
        min=float(clean.min()),
        max=float(clean.max()),
        bin_edges=[float(e) for e in edges],
        bin_fractions=[float(f) for f in fractions],
        sample=[float(v) for v in sample],
    )


def categorical_profile(values: pd.Series) -> CategoricalProfile:
    """Category frequencies of a column."""
    clean = values.dropna().astype(str)
    frequencies = clean.value_counts(normalize=True)
    return CategoricalProfile(
        count=int(clean.size),
        null_fraction=float(values.isna().mean()) if len(values) else 0.0,
        frequencies={str(k): float(v) for k, v in frequencies.items()},
    )


def reference_profile(
    features: Sequence[Feature],
    rows: pd.DataFrame,
    predictions: np.ndarray[Any, Any],
    *,
    task: Literal["classification", "regression"],
    seed: int,
) -> ReferenceProfile:
    """What the reference rows and the model's predictions look like, for the monitor's drift tests."""
    x = prepare(rows, features)
    profiles: dict[str, NumericProfile | CategoricalProfile] = {
        f.name: numeric_profile(x[f.name], seed=seed)
        if f.type == "numeric"
        else categorical_profile(rows[f.name])  # raw values: nulls stay nulls in the profile
        for f in features
    }
    series = pd.Series(predictions)
    prediction = (
        categorical_profile(series.astype(str))
        if task == "classification"
        else numeric_profile(series.astype(float), seed=seed)
    )
    return ReferenceProfile(rows=len(rows), features=profiles, prediction=prediction)


def calibration(model: Any, x_test: pd.DataFrame, y_test: pd.Series) -> Calibration | None:
    """The version's score calibration on its held-out test split, for label-free estimation:
    isotonic maps from the top-class probability to P(right) and, for a binary classifier, from the
    positive class's probability (the last class name in sorted order, as the monitor reads it) to
    P(positive). None for a regressor, a model without probabilities, or fewer than 20 test rows."""
    if not hasattr(model, "predict_proba") or len(x_test) < 20:
        return None
    probabilities = np.asarray(model.predict_proba(x_test), dtype=np.float64)
    names = [str(c) for c in model.classes_]
    truth = y_test.astype(str).to_numpy()
    predicted = np.asarray(names)[probabilities.argmax(axis=1)]
    confidence = probabilities.max(axis=1)
    right = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, predicted == truth)
    found = Calibration(
        rows=len(x_test),
        confidence_knots=right.X_thresholds_.tolist(),
        confidence_correct=right.y_thresholds_.tolist(),
    )
    if len(names) != 2:
        return found
    positive = max(names)
    score = probabilities[:, names.index(positive)]
    is_positive = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, truth == positive)
    return found.model_copy(
        update={
            "positive_class": positive,
            "score_knots": is_positive.X_thresholds_.tolist(),
            "score_positive": is_positive.y_thresholds_.tolist(),
        }
    )
