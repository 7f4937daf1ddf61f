"""Opening model files safely: skops with a type allowlist, ONNX through ONNX Runtime, never pickle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

# The types a model file may name: scikit-learn and its numerical stack, and, named one by one,
# the estimators and boosters of the two gradient-boosting libraries of the estimator allowlist
# (their boosters restore from the library's own model format, never from a pickle) and
# modelbus' own derived-feature step (plain data: the spec's operations).
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
TRUSTED_TYPES = frozenset(
    {
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "shared.runtime.derive.DeriveFeatures",
    }
)


class UntrustedArtifact(ValueError):
    """A model file that names types outside the trusted libraries; it is not loaded."""


def load_model(path: Path) -> Any:
    """Load a skops file, refusing any type outside the trusted libraries."""
    import skops.io as sio

    types = sio.get_untrusted_types(file=path)
    foreign = [t for t in types if not t.startswith(TRUSTED_PREFIXES) and t not in TRUSTED_TYPES]
    if foreign:
        raise UntrustedArtifact(f"the model names types outside the trusted libraries: {', '.join(foreign[:5])}")
    return sio.load(path, trusted=types)


def load_predictor(
    folder: Path,
    *,
    features: Sequence[str],
    numeric: Sequence[bool],
    task: Literal["classification", "regression"],
    classes: list[Any] | None = None,
) -> Any:
    """A version's model from the files in `folder`: the skops pipeline when there is one, else its
    ONNX graph behind the same predict / predict_proba / classes_."""
    if (folder / "model.skops").exists():
        return load_model(folder / "model.skops")
    from shared.runtime.onnxmodel import OnnxModel

    return OnnxModel.open(folder / "model.onnx", features=features, numeric=numeric, task=task, classes=classes)
